#!/usr/bin/env bash
# The GPU checks, run from the repository root on a machine with an NVIDIA GPU, its driver and
# the CUDA 13 libraries (cuBLAS, cuRAND, NVRTC), and for the speed comparison a Python with
# torch + transformers: this workplace's device machine (docs/GPU.md). Reads what
# scripts/build_cuda.sh staged in .gpu/ (carry it); writes its logs to $OUT (or .gpu/out).
#
#   bash scripts/gpu_check.sh [STEPS]   # STEPS timed batches per bench (default 20)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.gpu/out}
steps=${1:-20}
mkdir -p "$out"
# pip's CUDA libraries (site-packages/nvidia/…/lib: cudart, cuBLAS, cuRAND, NVRTC), which the
# binaries load, where the loader does not already find them.
libs=$(python3 - <<'PY' 2>/dev/null
import glob, os, nvidia
dirs = {os.path.dirname(f) for root in nvidia.__path__ for name in ("cudart", "cublas", "curand", "nvrtc")
        for f in glob.glob(os.path.join(root, "**", "lib", f"lib{name}.so*"), recursive=True)}
print(":".join(sorted(dirs)))
PY
)
[ -n "$libs" ] && export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
for name in xner model_parity; do
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    ".gpu/$name.xz" ".gpu/$name" && chmod +x ".gpu/$name" || exit 1
done
status=0
{ nvidia-smi -L; python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'; } 2>&1 | tee "$out/machine.txt"
# 1. Correctness: transformers parity and training steps against the fused CPU kernels, on the GPU.
.gpu/model_parity --test-threads 1 2>&1 | tee "$out/checks.txt" || status=1
# 2. Speed against torch on the same GPU, same batches (fp32 both): e5-small's and XLM-R base's
#    shapes with random weights, 24x32 synthetic batches.
for shape in e5-small xlmr-base; do
  .gpu/xner --device cuda bench --model tests/fixtures/parity/xlm-roberta/model --random-shape "$shape" \
    --steps "$steps" --python python3 2>&1 | tee "$out/bench-$shape.txt" || status=1
done
exit $status
