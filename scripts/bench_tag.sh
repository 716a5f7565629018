#!/usr/bin/env bash
# Tagging a file, xner against transformers' pipeline, in one run on this machine: the first N
# sentences of PAN-X <lang>/test.tsv as plain lines (words joined by spaces) through
# `xner tag --file` and through pipeline("token-classification") at its default batch size (1)
# and at 24. Times exclude loading the model on both sides.
#   bash scripts/bench_tag.sh PYTHON MODEL_DIR [LINES] [LANG]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:?usage: bench_tag.sh PYTHON MODEL_DIR [LINES] [LANG]}
model=${2:?usage: bench_tag.sh PYTHON MODEL_DIR [LINES] [LANG]}
n=${3:-2000}
lang=${4:-de}
data=${XNER_DATA:-../shared/data/panx}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
python3 - "$data/$lang/test.tsv" "$n" >"$out/lines.txt" <<'PY'
import sys
lines, words = [], []
for row in open(sys.argv[1], encoding="utf-8"):
    row = row.rstrip("\n")
    if row:
        words.append(row.split("\t")[0])
    elif words:
        lines.append(" ".join(words)); words = []
if words:
    lines.append(" ".join(words))
print("\n".join(lines[: int(sys.argv[2])]))
PY
for b in 1 24; do
  "$py" scripts/bench_tag.py --model "$model" --file "$out/lines.txt" --batch "$b" --threads "$(nproc)" 2>/dev/null \
    | tail -1 >"$out/torch$b.json"
done
target/release/xner tag --model "$model" --file "$out/lines.txt" --batch-size 24 2>"$out/xner.err" >/dev/null
python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
t1, t24 = (json.load(open(f"{out}/torch{b}.json")) for b in (1, 24))
m = re.search(r"tagged (\d+) lines \((\d+) tokens\) in ([\d.]+) s", open(f"{out}/xner.err").read())
lines, tokens, xs = int(m[1]), int(m[2]), float(m[3])
print(f"{lines} lines, {tokens} subword tokens, tagged (tokenization included, loading not):")
print(f"  transformers pipeline, batch_size=1 (default)  {t1['seconds']:7.2f} s")
print(f"  transformers pipeline, batch_size=24           {t24['seconds']:7.2f} s")
print(f"  xner tag --file, batch 24 (length-sorted)      {xs:7.2f} s")
print(f"  xner speed-up: {t1['seconds'] / xs:.2f}x the pipeline's default, {t24['seconds'] / xs:.2f}x at batch 24")
PY
