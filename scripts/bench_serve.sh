#!/usr/bin/env bash
# xner serve against its Python peer (transformers' pipeline behind FastAPI + uvicorn,
# scripts/serve_peer.py), one after the other in one run, on the same model directory and the
# same requests: PAN-X German test sentences, one a request, sent by examples/load.rs (a bounded
# closed-loop client) at concurrency 1, 8 and 64. Then a 10,000-request run of xner at
# concurrency 64 with its resident memory read after the first and the last thousand requests.
# Loopback only; every run is bounded in requests and seconds.
#
#   bash scripts/bench_serve.sh PYTHON MODEL_DIR [REQUESTS_PER_LEVEL] [AGGREGATION]
#
# PYTHON has torch, transformers, fastapi and uvicorn. Prints one JSON line per run and a table.
set -euo pipefail
cd "$(dirname "$0")/.."
py=$1; model=$2; n=${3:-2000}; aggregation=${4:-first}
data=${XNER_DATA:-../shared/data/panx}
cargo build --release --locked --bin xner --example load
xner=target/release/xner; load=target/release/examples/load
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

python3 - "$data/de/test.tsv" > "$tmp/bodies.jsonl" <<'PY'
import json, sys
words = []
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.rstrip("\n")
    if not line:
        if words: print(json.dumps({"text": " ".join(words)}, ensure_ascii=False)); words = []
        continue
    words.append(line.split("\t")[0])
PY

wait_ready() {  # url, seconds
  local deadline=$((SECONDS + $2))
  until curl -sf "$1/health" >/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "not ready: $1" >&2; exit 1; }
    sleep 0.05
  done
}
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

results="$tmp/results.jsonl"
run_levels() {  # name, url
  for c in 1 8 64; do
    local out
    out=$($load "$2/v1/ner" "$tmp/bodies.jsonl" "$c" "$n" 300)
    echo "{\"server\": \"$1\", \"run\": $out}" | tee -a "$results"
  done
}

# xner
t0=$(date +%s.%N)
$xner serve --model "$model" --port 18080 --quiet --aggregation "$aggregation" 2>"$tmp/xner.log" &
xpid=$!; pids+=("$xpid")
wait_ready http://127.0.0.1:18080 60
t1=$(date +%s.%N)
echo "{\"server\": \"xner\", \"ready_seconds\": $(echo "$t1 - $t0" | bc)}" | tee -a "$results"
run_levels xner http://127.0.0.1:18080
$load http://127.0.0.1:18080/v1/ner "$tmp/bodies.jsonl" 64 1000 300 > "$tmp/first.json"
rss_first=$(rss_mb "$xpid")
$load http://127.0.0.1:18080/v1/ner "$tmp/bodies.jsonl" 64 9000 600 > "$tmp/rest.json"
rss_last=$(rss_mb "$xpid")
echo "{\"server\": \"xner\", \"soak\": {\"first_1000\": $(cat "$tmp/first.json"), \"next_9000\": $(cat "$tmp/rest.json"), \"rss_mb_after_1000\": $rss_first, \"rss_mb_after_10000\": $rss_last}}" | tee -a "$results"
kill -TERM "$xpid"; wait "$xpid" || true

# the peer
t0=$(date +%s.%N)
"$py" scripts/serve_peer.py "$model" --port 18090 --aggregation "$aggregation" 2>"$tmp/peer.log" &
ppid=$!; pids+=("$ppid")
wait_ready http://127.0.0.1:18090 300
t1=$(date +%s.%N)
echo "{\"server\": \"peer\", \"ready_seconds\": $(echo "$t1 - $t0" | bc)}" | tee -a "$results"
run_levels peer http://127.0.0.1:18090
kill -TERM "$ppid"; wait "$ppid" || true

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
runs = {(r["server"], r["run"]["concurrency"]): r["run"] for r in rows if "run" in r}
print("\nconcurrency | xner req/s | peer req/s | ratio | xner p50/p95/p99 ms | peer p50/p95/p99 ms | failed (xner/peer)")
for c in (1, 8, 64):
    x, p = runs[("xner", c)], runs[("peer", c)]
    f = lambda r: f'{r["p50_ms"]:.1f} / {r["p95_ms"]:.1f} / {r["p99_ms"]:.1f}'
    print(f'{c} | {x["requests_per_s"]:.1f} | {p["requests_per_s"]:.1f} | {x["requests_per_s"]/p["requests_per_s"]:.2f}x | {f(x)} | {f(p)} | {x["failed"]}/{p["failed"]}')
soak = next(r["soak"] for r in rows if "soak" in r)
print(f'soak: {soak["first_1000"]["ok"] + soak["next_9000"]["ok"]} ok, {soak["first_1000"]["failed"] + soak["next_9000"]["failed"]} failed; '
      f'RSS {soak["rss_mb_after_1000"]} MB after 1,000, {soak["rss_mb_after_10000"]} MB after 10,000')
for r in rows:
    if "ready_seconds" in r: print(f'{r["server"]} ready in {r["ready_seconds"]:.2f} s')
PY
