#!/usr/bin/env bash
# Builds xner with its `cuda` feature, also where no CUDA toolkit is installed: then CUDA 13.0's
# compiler, headers and runtime come from PyPI (the wheels NVIDIA publishes there) into
# target/cuda-toolkit, once (~90 MB). candle's kernels are compiled for CUDA_COMPUTE_CAP
# (default 90: H100/H200). The binary loads the CUDA libraries when it starts using the GPU
# (vendor/candle-core/PATCHES.md), so nothing of CUDA is needed to link it.
#
#   bash scripts/build_cuda.sh          # ~25 min cold on 2 cores (candle's CUDA kernels: ~10)
#
# Products: target/cuda/release/xner, and in .gpu/ (ignored) for a GPU machine (docs/GPU.md),
# stripped and xz-compressed (61 MB → 8 MB each: the device tool carries 64 MiB at most):
#   .gpu/xner.xz           the CLI (`xner --device cuda …`)
#   .gpu/model_parity.xz   the GPU checks (tests/model_parity.rs's cuda_* tests and the rest)
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
if ! command -v nvcc >/dev/null; then
  toolkit=$(pwd)/target/cuda-toolkit
  cuda=$toolkit/nvidia/cu13
  if [ ! -x "$cuda/bin/nvcc" ]; then
    python3 -m pip download --no-deps --quiet -d "$toolkit/wheels" \
      nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
    for wheel in "$toolkit"/wheels/*.whl; do python3 -m zipfile -e "$wheel" "$toolkit"; done
    chmod +x "$cuda"/bin/* "$cuda"/nvvm/bin/*   # zipfile drops the executable bits
    ln -sf libcudart.so.13 "$cuda/lib/libcudart.so"
  fi
  export PATH=$cuda/bin:$PATH CUDA_PATH=$cuda LIBRARY_PATH=$cuda/lib${LIBRARY_PATH:+:$LIBRARY_PATH}
fi
nvcc --version | tail -n 2
export CARGO_TARGET_DIR=target/cuda
cargo build --release --locked --features cuda
tests=$(cargo test --release --locked --features cuda --test model_parity --no-run --message-format=json \
  | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "model_parity" and m.get("executable"):
        print(m["executable"])')
mkdir -p .gpu
for pair in "target/cuda/release/xner xner" "$tests model_parity"; do
  set -- $pair
  cp "$1" ".gpu/$2" && strip ".gpu/$2" && xz -T0 -f ".gpu/$2"
done
ls -l .gpu
