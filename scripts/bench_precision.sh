#!/usr/bin/env bash
# Inference at each precision against ONNX Runtime, in one run on this machine: the first N
# sentences of a PAN-X test split (Swiss sample) in the same length-sorted batches of B, through
#   - ONNX Runtime fp32 and dynamic int8 (scripts/bench_ort.py: optimum-style export, BERT
#     fusions, quantize_dynamic per channel), and
#   - xner eval --precision f32 | bf16 | int8,
# each in its own process, alternating, REPEAT rounds (the best of each is reported, so a slow
# minute of the VM hurts no side alone). Seconds exclude loading and tokenizing on both sides;
# peak memory is each process's maximum resident set (loading included).
#   bash scripts/bench_precision.sh PYTHON MODEL_DIR [SENTENCES] [LANG] [BATCH] [REPEAT]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:?usage: bench_precision.sh PYTHON MODEL_DIR [SENTENCES] [LANG] [BATCH] [REPEAT]}
model=${2:?usage: bench_precision.sh PYTHON MODEL_DIR [SENTENCES] [LANG] [BATCH] [REPEAT]}
n=${3:-2000}
lang=${4:-de}
batch=${5:-24}
repeat=${6:-2}
data=${XNER_DATA:-../shared/data/panx}
threads=$(nproc)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
work="${TMPDIR:-/tmp}/xner-ort-$(echo "$model" | md5sum | cut -c1-12)"
# Export, optimize and quantize once (untimed).
"$py" scripts/bench_ort.py --model "$model" --data "$data" --lang "$lang" --limit 50 --batch "$batch" \
  --threads "$threads" --variant int8 --work "$work" >/dev/null 2>&1
for round in $(seq "$repeat"); do
  for v in fp32 int8; do
    "$py" scripts/bench_ort.py --model "$model" --data "$data" --lang "$lang" --limit "$n" --batch "$batch" \
      --threads "$threads" --variant "$v" --work "$work" 2>/dev/null | tail -1 >"$out/ort-$v-$round.json"
  done
  for p in f32 bf16 int8; do
    /usr/bin/time -f "%M" -o "$out/xner-$p-$round.kb" target/release/xner eval --model "$model" --data "$data" \
      --langs "$lang" --split test --max-samples "$n" --batch-size "$batch" --precision "$p" --json \
      2>/dev/null >"$out/xner-$p-$round.json"
  done
done
python3 - "$out" "$lang" "$repeat" "$n" <<'PY'
import json, sys
out, lang, repeat, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rows = {}
for r in range(1, repeat + 1):
    for v in ("fp32", "int8"):
        d = json.load(open(f"{out}/ort-{v}-{r}.json"))
        rows.setdefault(f"onnxruntime {v}", []).append((d["seconds"], d["f1"], d["peak_bytes"], d["tokens"]))
    for p in ("f32", "bf16", "int8"):
        d = json.load(open(f"{out}/xner-{p}-{r}.json"))[lang]
        kb = int(open(f"{out}/xner-{p}-{r}.kb").read().split()[-1])
        rows.setdefault(f"xner {p}", []).append((d["seconds"], d["f1"], kb * 1024, d["tokens"]))
best = {k: min(v) for k, v in rows.items()}
print(f"{n} {lang} test sentences, length-sorted batches; best of {repeat} rounds (seconds of each round listed):")
print(f"  {'':18} {'seconds':>8} {'tokens/s':>9} {'F1':>7} {'peak MB':>8}   rounds")
for k, (s, f1, peak, tokens) in best.items():
    print(f"  {k:18} {s:8.2f} {tokens / s:9.0f} {f1:7.4f} {peak / 1e6:8.0f}   {' '.join(f'{x[0]:.2f}' for x in rows[k])}")
r = lambda a, b: best[b][0] / best[a][0]
print(f"  xner f32 / onnxruntime fp32: {r('xner f32', 'onnxruntime fp32'):.2f}x")
print(f"  xner int8 / onnxruntime int8: {r('xner int8', 'onnxruntime int8'):.2f}x")
print(f"  xner bf16 / xner f32: {r('xner bf16', 'xner f32'):.2f}x")
print(f"  F1 change from f32: bf16 {100 * (best['xner bf16'][1] - best['xner f32'][1]):+.2f} points, "
      f"int8 {100 * (best['xner int8'][1] - best['xner f32'][1]):+.2f}, "
      f"onnxruntime int8 {100 * (best['onnxruntime int8'][1] - best['onnxruntime fp32'][1]):+.2f}")
PY
