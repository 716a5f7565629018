#!/usr/bin/env bash
# Training throughput, xner against the transformers Trainer, in one run on this machine:
# the same 1200 German PAN-X sentences, one epoch, the book's settings, e5-small.
#   bash scripts/bench_train.sh PYTHON [MODEL_DIR] [SENTENCES]
# PYTHON has torch + transformers + datasets + seqeval + accelerate (see ../shared/reference).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:?usage: bench_train.sh PYTHON [MODEL_DIR] [SENTENCES]}
model=${2:-models/e5-small}
n=${3:-1200}
data=${XNER_DATA:-../shared/data/panx}
out=$(mktemp -d)
ref=../shared/reference/ref_panx.py
common=(--model "$model" --data "$data" --train de --eval de --train-limit "$n" --eval-limit 200 --epochs 1 --threads "$(nproc)")
"$py" "$ref" "${common[@]}" --out "$out/ref.json" >/dev/null 2>&1
"$py" "$ref" "${common[@]}" --group-by-length --out "$out/ref_group.json" >/dev/null 2>&1
target/release/xner train --model "$model" --data "$data" --max-train-samples "$n" --max-eval-samples 200 \
  --epochs 1 --out "$out/xner" >/dev/null 2>&1
python3 - "$out" "$n" <<'PY'
import json, sys
out, n = sys.argv[1], sys.argv[2]
ref = json.load(open(f"{out}/ref.json"))["train_seconds"]
grp = json.load(open(f"{out}/ref_group.json"))["train_seconds"]
rows = [json.loads(l) for l in open(f"{out}/xner/metrics.jsonl")]
# Both include the end-of-epoch evaluation on the 200 validation sentences (the Trainer's
# train_runtime does, with eval_strategy="epoch").
xner = sum(r["epoch_seconds"] for r in rows if "epoch_end" in r)
print(f"{n} German sentences, 1 epoch, training time (s):")
print(f"  transformers Trainer, defaults         {ref:8.1f}")
print(f"  transformers Trainer, group_by_length  {grp:8.1f}")
print(f"  xner (group-by-length, its default)    {xner:8.1f}")
print(f"  xner speed-up: {ref / xner:.2f}x the Trainer's defaults, {grp / xner:.2f}x with group_by_length")
PY
