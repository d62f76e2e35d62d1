#!/usr/bin/env bash
# One call on a GPU host (e.g. an H200 with PyTorch, CMake and ninja, no network): build cmn_model alone
# against the LibTorch inside PyTorch, run the dev parity fixture on CUDA (bench/gpu_check.cc: ids identical to
# the reference, log-probs within 1e-3, trunk and whole passes equal to the CPU's) and print per-stage timings
# for batch 1 and 32. A few minutes in all; exit status 0 only when the build and every check pass.
#
#   bench/gpu_check.sh [FIXTURE_DIR] [BUILD_DIR]
#
# FIXTURE_DIR: ../shared/parity/dev, or a copy holding config.json, expected.pt, inputs.pt and model.pth or the
# encoder-decoder part of it. Where only 64 MiB can travel to the GPU host, make that copy here first:
#   mkdir -p .gpu/dev && cp ../shared/parity/dev/{config.json,expected.pt,inputs.pt} .gpu/dev/ &&
#   build/bench/cmn-gpu-check --trim ../shared/parity/dev/model.pth .gpu/dev/encoder_decoder.pth
set -euo pipefail
cd "$(dirname "$0")/.."
fixture=${1:-../shared/parity/dev}
build=${2:-/tmp/cmn-build-gpu}
python=${PYTHON:-python3}
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"  # nvcc for find_package(CUDAToolkit)

echo "== host"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
cmake --version | head -1
nproc

echo "== configure (CMN_MODEL_ONLY, PyTorch's LibTorch)"
prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
start=$SECONDS
cmake -S . -B "$build" "${generator[@]}" -DCMN_MODEL_ONLY=ON -DCMN_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" >"$build.configure.log" 2>&1 ||
  { tail -40 "$build.configure.log"; exit 1; }
echo "configured in $((SECONDS - start)) s"

echo "== build"
start=$SECONDS
cmake --build "$build" --target cmn_gpu_check cmn_bench -j "$(nproc)" >"$build.build.log" 2>&1 ||
  { grep -E "error|Error" -A3 "$build.build.log" | head -80; exit 1; }
echo "built in $((SECONDS - start)) s"

echo "== parity and timings"
"$build/bench/cmn-gpu-check" --fixture "$fixture" --device "${DEVICE:-cuda}" --repeat 5 --batches 1,32,256
