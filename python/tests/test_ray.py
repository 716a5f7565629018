"""examples/ray_tag.py on a real local Ray cluster (a head and a worker node on loopback):
20,000 PAN-X sentences in JSON Lines shards over 2 actors, one of them killed mid-run. The
output must equal `xner tag --file` on the same shards, row for row, none lost, none twice."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, read_sentences

ray = pytest.importorskip("ray", reason="Ray cannot be installed here (pip install 'ray[data]')")
pq = pytest.importorskip("pyarrow.parquet")

SENTENCES = 20_000
SHARDS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def nodes_alive(address: str, env: dict) -> int:
    out = subprocess.run([ray_cli(), "status", "--address", address], capture_output=True, text=True, env=env).stdout
    active = out.split("Active:")[-1].split("Pending:")[0] if "Active:" in out else ""
    return len(re.findall(r"node_[0-9a-f]+", active))


@pytest.fixture
def cluster():
    """`ray start --head` and a second node joining it, both on 127.0.0.1. Each runs with
    --block in a process group of its own, which is killed at the end: only this cluster
    stops (`ray stop` would stop every Ray cluster of the user's on the machine)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    # Two logical CPUs a node: one for its actor, one for the reading and writing tasks.
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--disable-usage-stats", "--block"]
    nodes = []
    try:
        for args in (["--head", "--port", str(port), "--include-dashboard=false"], ["--address", address]):
            nodes.append(subprocess.Popen([ray_cli(), "start", *args, *common], env=env, start_new_session=True,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            expected = len(nodes)
            deadline = time.time() + 180
            while nodes_alive(address, env) < expected:
                assert time.time() < deadline, f"Ray node {expected} did not come up"
                assert all(n.poll() is None for n in nodes), "ray start exited"
                time.sleep(1)
        yield address
    finally:
        for node in reversed(nodes):
            try:
                os.killpg(node.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for node in nodes:
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)


def actor_pids() -> list:
    """Processes of Ray Data's map actors (their title names the wrapped class)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if re.search(r"ray::.*MapWorker", line)]


def test_ray_tags_a_sharded_corpus_like_the_cli_and_survives_a_killed_actor(trained, panx, xner_bin, cluster, tmp_path):
    sentences = read_sentences(panx / "de/train.tsv", SENTENCES)
    assert len(sentences) == SENTENCES
    texts = [" ".join(w for w, _ in s) for s in sentences]
    shards = tmp_path / "shards"
    shards.mkdir()
    per_shard = SENTENCES // SHARDS
    for k in range(SHARDS):
        with open(shards / f"part-{k:02}.jsonl", "w", encoding="utf-8") as f:
            for i in range(k * per_shard, (k + 1) * per_shard):
                f.write(json.dumps({"id": i, "text": texts[i]}, ensure_ascii=False) + "\n")

    # The reference: `xner tag --file` on each shard's lines.
    expected = {}
    for k in range(SHARDS):
        lines = tmp_path / f"lines-{k}.txt"
        lines.write_text("\n".join(texts[k * per_shard : (k + 1) * per_shard]) + "\n", encoding="utf-8")
        out = subprocess.run(
            [str(xner_bin), "tag", "--model", str(trained["model"]), "--file", str(lines), "--json",
             "--aggregation", "simple"],
            check=True, capture_output=True, text=True,
        ).stdout
        for line in out.splitlines():
            row = json.loads(line)
            expected[k * per_shard + row["line"] - 1] = row["entities"]
    assert len(expected) == SENTENCES

    output = tmp_path / "tagged"
    job = subprocess.Popen(
        [sys.executable, str(REPO / "examples/ray_tag.py"), "--address", cluster, "--model", str(trained["model"]),
         "--input", str(shards), "--output", str(output), "--actors", "2", "--batch-size", "250"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    killed = {}

    def kill_one_actor_mid_run():
        # Once both actors run and the first output shard is written, SIGKILL one of them.
        deadline = time.time() + 600
        while time.time() < deadline and job.poll() is None:
            pids = actor_pids()
            written = list(output.glob("*.parquet")) if output.exists() else []
            if len(pids) >= 2 and written:
                os.kill(pids[0], signal.SIGKILL)
                killed.update(pid=pids[0], files_written=len(written))
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_one_actor_mid_run)
    killer.start()
    log, _ = job.communicate(timeout=900)
    killer.join()
    assert job.returncode == 0, log
    assert killed, f"no actor was killed mid-run:\n{log}"
    print(f"killed actor {killed['pid']} after {killed['files_written']} output shards")
    assert "tagged 20000 documents" in log, log

    table = pq.read_table(output)
    ids = table.column("id").to_pylist()
    assert len(ids) == SENTENCES and sorted(ids) == list(range(SENTENCES)), "rows lost or written twice"
    got = dict(zip(ids, table.column("entities").to_pylist()))
    texts_out = dict(zip(ids, table.column("text").to_pylist()))
    for i in range(SENTENCES):
        assert texts_out[i] == texts[i]
        ours, theirs = got[i], expected[i]
        assert [(e["label"], e["text"], e["start"], e["end"]) for e in ours] == [
            (e["label"], e["text"], e["start"], e["end"]) for e in theirs
        ], f"row {i}"
        for a, b in zip(ours, theirs):
            assert a["score"] == pytest.approx(b["score"], abs=1e-5), f"row {i}"
