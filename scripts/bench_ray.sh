#!/usr/bin/env bash
# Corpus-scale tagging, both ways, in one run on this machine: the first N sentences of PAN-X
# German train as SHARDS JSON Lines shards, tagged
#   - by `xner tag --file` on the shards one by one (one process at a time, all cores), and
#   - by examples/ray_tag.py on a local Ray cluster (a head and a second node on 127.0.0.1,
#     ACTORS actors with one thread each), started and stopped here.
# Prints documents/s of each (the CLI's includes loading the model for each shard, as a
# shard-by-shard job pays it; Ray's includes reading and writing Parquet, not starting Ray).
#   bash scripts/bench_ray.sh PYTHON MODEL_DIR [N] [SHARDS] [ACTORS] [PRECISION]
# PYTHON must have the wheel and Ray: pip install ./python 'ray[data]' pyarrow
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: bench_ray.sh PYTHON MODEL_DIR [N] [SHARDS] [ACTORS] [PRECISION]"
py=${1:?$usage}
model=$(cd "${2:?$usage}" && pwd)
n=${3:-20000}
shards=${4:-8}
actors=${5:-2}
precision=${6:-f32}
data=${XNER_DATA:-../shared/data/panx}
xner=${XNER_BIN:-target/release/xner}
ray="$(dirname "$py")/ray"
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
cleanup() {
  [ -n "${head_pid:-}" ] && kill -TERM -- "-$head_pid" 2>/dev/null || true
  [ -n "${node_pid:-}" ] && kill -TERM -- "-$node_pid" 2>/dev/null || true
  sleep 2
  rm -rf "$work"
}
trap cleanup EXIT

"$py" - "$data/de/train.tsv" "$n" "$shards" "$work" <<'EOF'
import json, sys
path, n, shards, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
texts, words = [], []
for line in open(path, encoding="utf-8"):
    line = line.rstrip("\n")
    if line:
        words.append(line.split("\t")[0])
    elif words:
        texts.append(" ".join(words))
        words = []
        if len(texts) == n:
            break
per = (len(texts) + shards - 1) // shards
for k in range(shards):
    part = texts[k * per:(k + 1) * per]
    with open(f"{work}/part-{k:03}.jsonl", "w", encoding="utf-8") as f:
        for i, t in enumerate(part):
            f.write(json.dumps({"id": k * per + i, "text": t}, ensure_ascii=False) + "\n")
    with open(f"{work}/lines-{k:03}.txt", "w", encoding="utf-8") as f:
        f.write("\n".join(part) + "\n")
EOF

start=$(date +%s.%N)
for lines in "$work"/lines-*.txt; do
  "$xner" tag --model "$model" --file "$lines" --json --aggregation simple --precision "$precision" >/dev/null 2>&1
done
cli=$(echo "$(date +%s.%N) - $start" | bc)

mkdir -p "$work/shards" && mv "$work"/part-*.jsonl "$work/shards/"
export RAY_USAGE_STATS_ENABLED=0
common=(--node-ip-address 127.0.0.1 --num-cpus 2 --disable-usage-stats --block)
setsid "$ray" start --head --port "$port" --include-dashboard=false "${common[@]}" >/dev/null 2>&1 &
head_pid=$!
sleep 8
setsid "$ray" start --address "127.0.0.1:$port" "${common[@]}" >/dev/null 2>&1 &
node_pid=$!
for _ in $(seq 120); do
  [ "$("$ray" status --address "127.0.0.1:$port" 2>/dev/null | sed -n '/Active:/,/Pending:/p' | grep -c node_)" -ge 2 ] && break
  sleep 1
done
line=$("$py" examples/ray_tag.py --address "127.0.0.1:$port" --model "$model" --input "$work/shards" \
  --output "$work/tagged" --actors "$actors" --batch-size 250 --precision "$precision" 2>&1 | grep '^tagged ')
ray_seconds=$(echo "$line" | sed -E 's/.* in ([0-9.]+) s .*/\1/')

printf '%s documents, %s shards, precision %s, %s cores\n' "$n" "$shards" "$precision" "$(nproc)"
printf '%-44s %8s %12s\n' way seconds documents/s
printf '%-44s %8.1f %12.0f\n' "xner tag --file, shard by shard" "$cli" "$(echo "$n / $cli" | bc -l)"
printf '%-44s %8.1f %12.0f\n' "Ray Data, $actors actors (examples/ray_tag.py)" "$ray_seconds" "$(echo "$n / $ray_seconds" | bc -l)"
printf 'Ray / CLI: %.2fx\n' "$(echo "$cli / $ray_seconds" | bc -l)"
