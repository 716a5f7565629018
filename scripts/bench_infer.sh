#!/usr/bin/env bash
# Inference on a file, xner against transformers, in one run on this machine: the first N
# sentences of a PAN-X split (Swiss sample) through `xner eval` and through Trainer.predict as
# ref_panx.py (the book's pipeline) evaluates — same model directory, same sentences, batch 24.
# Both times exclude loading the model and tokenizer; both F1s must agree.
#   bash scripts/bench_infer.sh PYTHON MODEL_DIR [SENTENCES] [LANG]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:?usage: bench_infer.sh PYTHON MODEL_DIR [SENTENCES] [LANG]}
model=${2:?usage: bench_infer.sh PYTHON MODEL_DIR [SENTENCES] [LANG]}
n=${3:-2000}
lang=${4:-de}
data=${XNER_DATA:-../shared/data/panx}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$py" scripts/bench_predict.py --model "$model" --data "$data" --lang "$lang" --split test --limit "$n" \
  --batch 24 --threads "$(nproc)" 2>/dev/null | tail -1 >"$out/torch.json"
start=$(date +%s.%N)
target/release/xner eval --model "$model" --data "$data" --langs "$lang" --split test --max-samples "$n" \
  --batch-size 24 --json 2>/dev/null >"$out/xner.json"
end=$(date +%s.%N)
python3 - "$out" "$lang" "$start" "$end" <<'PY'
import json, sys
out, lang, start, end = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
t = json.load(open(f"{out}/torch.json"))
x = json.load(open(f"{out}/xner.json"))[lang]
print(f"{t['sentences']} {lang} test sentences, {t['tokens']} subword tokens "
      f"(transformers pads them to {t['padded_tokens']}), batch 24:")
print(f"  transformers Trainer.predict  {t['seconds']:7.2f} s  {t['tokens'] / t['seconds']:7.0f} tokens/s  F1 {t['f1']:.4f}")
print(f"  xner eval (length-sorted)     {x['seconds']:7.2f} s  {x['tokens'] / x['seconds']:7.0f} tokens/s  F1 {x['f1']:.4f}"
      f"  ({end - start:.1f} s for the whole command, loading included)")
print(f"  xner speed-up: {t['seconds'] / x['seconds']:.2f}x")
PY
