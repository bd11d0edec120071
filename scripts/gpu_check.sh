#!/usr/bin/env bash
# What to run where a GPU is lent (the `device` tool; see docs/operations.md): build with CUDA,
# run every test labelled gpu, then the GPU benchmark; logs go to $OUT (or /tmp/sepal-gpu).
# Meant to fit in one call of about 10 minutes on a 16-core GPU machine.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/sepal-gpu}
mkdir -p "$out"
nvidia-smi -L 2>&1 | tee "$out/gpu.txt"
# Only what the gpu tests and the benchmark need is built.
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSEPAL_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  > "$out/configure.log" 2>&1 || { tail -20 "$out/configure.log"; exit 1; }
ninja -C build-gpu sepal backend_ops_test device_blocks_test cuda_int8_test gpu_cli_test gpu_decode_bench \
  > "$out/build.log" 2>&1 || { grep -m20 -A5 "error" "$out/build.log"; exit 1; }
(cd build-gpu && ctest -L gpu --output-on-failure --timeout 300) 2>&1 | tee "$out/ctest-gpu.log"
SEPAL_BUILD_DIR=build-gpu SEPAL_BENCH_TOKENS=64 timeout 240 bench/run_gpu.sh --decode-tokens 64 2>&1 | tee "$out/bench-gpu.log"
