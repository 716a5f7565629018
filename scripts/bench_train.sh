#!/usr/bin/env bash
# Training throughput, xner against the transformers Trainer, in one run on this machine:
# the same 1200 German PAN-X sentences, one epoch, the book's settings, e5-small. The Trainer
# runs in its default configuration, with group_by_length, and in its fastest here, bf16=True
# (autocast; oneDNN's bf16 products on AMX) with group_by_length; xner in f32 and with --bf16.
#   bash scripts/bench_train.sh PYTHON [MODEL_DIR] [SENTENCES]
# PYTHON has torch + transformers + datasets + seqeval + accelerate (see ../shared/reference).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:?usage: bench_train.sh PYTHON [MODEL_DIR] [SENTENCES]}
model=${2:-models/e5-small}
n=${3:-1200}
data=${XNER_DATA:-../shared/data/panx}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
ref=../shared/reference/ref_panx.py
common=(--model "$model" --data "$data" --train de --eval de --train-limit "$n" --eval-limit 200 --epochs 1 --threads "$(nproc)")
"$py" "$ref" "${common[@]}" --out "$out/ref.json" >/dev/null 2>&1
"$py" "$ref" "${common[@]}" --group-by-length --out "$out/ref_group.json" >/dev/null 2>&1
"$py" "$ref" "${common[@]}" --bf16 --group-by-length --out "$out/ref_bf16.json" >/dev/null 2>&1
target/release/xner train --model "$model" --data "$data" --max-train-samples "$n" --max-eval-samples 200 \
  --epochs 1 --out "$out/xner" >/dev/null 2>&1
target/release/xner train --model "$model" --data "$data" --max-train-samples "$n" --max-eval-samples 200 \
  --epochs 1 --bf16 --out "$out/xner_bf16" >/dev/null 2>&1
python3 - "$out" "$n" <<'PY'
import json, sys
out, n = sys.argv[1], sys.argv[2]
ref = json.load(open(f"{out}/ref.json"))["train_seconds"]
grp = json.load(open(f"{out}/ref_group.json"))["train_seconds"]
bf = json.load(open(f"{out}/ref_bf16.json"))
# Both include the end-of-epoch evaluation on the 200 validation sentences (the Trainer's
# train_runtime does, with eval_strategy="epoch").
def run(name):
    rows = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl")]
    return sum(r["epoch_seconds"] for r in rows if "epoch_end" in r), [r for r in rows if "epoch_end" in r][-1]
xner, row = run("xner")
xbf, row_bf = run("xner_bf16")
f1 = lambda r: r.get("eval_f1", r.get("f1", float("nan")))
print(f"{n} German sentences, 1 epoch, training time (s):")
print(f"  transformers Trainer, defaults                 {ref:8.1f}")
print(f"  transformers Trainer, group_by_length          {grp:8.1f}")
print(f"  transformers Trainer, bf16 + group_by_length   {bf['train_seconds']:8.1f}")
print(f"  xner (group-by-length, its default)            {xner:8.1f}")
print(f"  xner --bf16                                    {xbf:8.1f}")
print(f"  xner speed-up: {ref / xner:.2f}x the Trainer's defaults, {grp / xner:.2f}x with group_by_length, "
      f"{bf['train_seconds'] / xner:.2f}x its bf16 + group_by_length ({bf['train_seconds'] / xbf:.2f}x with --bf16)")
PY
