"""xner's Python binding against the CLI it shares its library with: the same entities, the
same scores, and errors raised as the Python exceptions a user expects."""

import json
import subprocess
import threading
import time

import pytest
import xner

from conftest import read_sentences


def texts_of(sentences) -> list:
    return [" ".join(w for w, _ in s) for s in sentences]


@pytest.fixture(scope="module")
def texts(panx) -> list:
    """PAN-X sentences and the inputs that break naive code: empty, spaces only, emoji,
    combining marks, and a text far over the model's 512-token window."""
    base = texts_of(read_sentences(panx / "de/test.tsv", 150))
    long_text = " ".join(base[:120])
    return base + ["", "   ", "Angela Merkel 🇩🇪 besuchte Zürich", "Cafe\u0301 in Mu\u0308nchen", long_text]


def cli_entities(xner_bin, model, texts, tmp_path, *flags) -> list:
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = subprocess.run(
        [str(xner_bin), "tag", "--model", str(model), "--file", str(lines), "--json", *flags],
        check=True, capture_output=True, text=True,
    ).stdout
    return [json.loads(line)["entities"] for line in out.splitlines()]


def assert_same_entities(ours, theirs):
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert [(e["label"], e["text"], e["start"], e["end"]) for e in a] == [
            (e["label"], e["text"], e["start"], e["end"]) for e in b
        ], f"text {i}"
        for x, y in zip(a, b):
            assert x["score"] == pytest.approx(y["score"], abs=1e-6), f"text {i}"


def test_training_through_the_binding_learns_and_reports(trained):
    result = trained["result"]
    epochs = result["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert epochs[1]["validation_loss"] < epochs[0]["validation_loss"], epochs
    assert epochs[1]["f1"] > 0.3, epochs
    assert result["test"]["sentences"] == 300
    assert (trained["model"] / "model.safetensors").exists()


@pytest.mark.parametrize("precision,aggregation", [("f32", "simple"), ("f32", "first"), ("int8", "max")])
def test_tag_equals_xner_tag_json(trained, xner_bin, texts, tmp_path, precision, aggregation):
    tagger = xner.Tagger(trained["model"], precision=precision, aggregation=aggregation)
    ours = tagger.tag(texts)
    theirs = cli_entities(
        xner_bin, trained["model"], texts, tmp_path, "--precision", precision, "--aggregation", aggregation
    )
    assert_same_entities(ours, theirs)
    assert sum(len(e) for e in ours) > 100, "the model finds entities"
    for text, entities in zip(texts, ours):
        for e in entities:
            assert text[e["start"] : e["end"]] == e["text"]
    assert tagger.precision == precision
    assert tagger.labels == ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]


def test_aggregation_per_call_and_subword_entries(trained, texts):
    tagger = xner.Tagger(trained["model"])
    none = tagger.tag(texts[:5], aggregation="none")
    assert all("index" in e for entities in none for e in entities)
    assert tagger.tag(texts[:5]) == tagger.tag(texts[:5], aggregation="simple")


def test_evaluate_equals_xner_eval_json(trained, corpus_files, xner_bin):
    ours = xner.evaluate(trained["model"], corpus_files["test"], progress=False)
    out = subprocess.run(
        [str(xner_bin), "eval", "--model", str(trained["model"]), "--file", str(corpus_files["test"]), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    theirs = next(iter(json.loads(out).values()))
    for key in ["f1", "strict_f1", "loss", "sentences", "words_scored", "report", "strict_report"]:
        assert ours[key] == theirs[key], key
    assert ours["f1"] == trained["result"]["test"]["f1"]


def test_the_gil_is_released_while_tagging(trained, texts):
    """Another Python thread keeps running while `tag` computes: with the GIL held, its
    ticks would stop for the whole call."""
    tagger = xner.Tagger(trained["model"])
    ticks, done = [], threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.005)

    ticker = threading.Thread(target=tick)
    ticker.start()
    time.sleep(0.05)
    start = time.perf_counter()
    tagger.tag(texts * 3)
    end = time.perf_counter()
    done.set()
    ticker.join()
    during = [t for t in ticks if start <= t <= end]
    gaps = [b - a for a, b in zip(during, during[1:])]
    assert end - start > 0.5, "the call must be long enough to tell"
    assert len(during) > 10 and max(gaps) < (end - start) / 3, (len(during), max(gaps, default=None), end - start)


def test_read_corpus_converts_to_iob2(tmp_path):
    path = tmp_path / "bioes.conll"
    path.write_text("Jeff B-PER\nDean E-PER\nat O\nGoogle S-ORG\n\nParis S-LOC\n", encoding="utf-8")
    assert xner.read_corpus(path) == [
        [("Jeff", "B-PER"), ("Dean", "I-PER"), ("at", "O"), ("Google", "B-ORG")],
        [("Paris", "B-LOC")],
    ]
    jsonl = tmp_path / "ints.jsonl"
    jsonl.write_text('{"tokens": ["Rom", "ist"], "ner_tags": [5, 0]}\n', encoding="utf-8")
    labels = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
    assert xner.read_corpus(jsonl, labels=labels) == [[("Rom", "B-LOC"), ("ist", "O")]]


def test_missing_files_raise_file_not_found(tmp_path, trained):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        xner.Tagger(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="absent.tsv"):
        xner.read_corpus(tmp_path / "absent.tsv")
    with pytest.raises(FileNotFoundError, match="absent.tsv"):
        xner.evaluate(trained["model"], tmp_path / "absent.tsv", progress=False)


def test_bad_input_raises_value_error_with_the_place(tmp_path, trained, corpus_files):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        xner.Tagger(tmp_path / "empty")
    with pytest.raises(ValueError, match="f32, bf16, int8"):
        xner.Tagger(trained["model"], precision="fp16")
    with pytest.raises(ValueError, match="aggregation"):
        xner.Tagger(trained["model"], aggregation="mean")
    tagger = xner.Tagger(trained["model"])
    with pytest.raises(ValueError, match=r"\[text\]"):
        tagger.tag("one text, not a list")
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        tagger.tag(["fine", 42])
    with pytest.raises(ValueError, match="aggregation"):
        tagger.tag(["x"], aggregation="mean")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": ["b"], "ner_tags": [\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.jsonl:2"):
        xner.read_corpus(broken)
    with pytest.raises(ValueError, match="learning_rate"):
        xner.train(trained["model"], corpus_files["train"], corpus_files["validation"], tmp_path / "o", learning_rate=-1)
    with pytest.raises(ValueError, match="stride"):
        xner.Tagger(trained["model"], max_length=64, stride=64)
