#!/usr/bin/env bash
# What to run where a GPU is lent (the `device` tool; docs/operations.md, GPU): every test
# labelled gpu and the GPU benchmark, logs to $OUT (or /tmp/sepal-gpu). Meant for one call of
# about 10 minutes on a 16-core GPU machine.
#   With gpu-pack/pack.tar.xz (scripts/pack_gpu_check.sh, carried): runs the packed programs
#   through the packed loader; the tests that need Open MPI (gpu_hosts) do not run that way.
#   Without: builds build-gpu/ for Hopper here (needs sepal's Debian packages) and runs ctest -L gpu.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/sepal-gpu}
mkdir -p "$out"
nvidia-smi -L 2>&1 | tee "$out/gpu.txt"
if [ -f gpu-pack/pack.tar.xz ]; then
  tar -C /tmp -xJf gpu-pack/pack.tar.xz
  pack=/tmp/pack
  cublas=$(find /usr/local/cuda*/lib* /usr/lib /usr/local/lib -name 'libcublas.so.1*' 2>/dev/null | head -1)
  export SEPAL_CUDA_LIBS=${cublas:+$(dirname "$cublas")}
  export SEPAL_CUDA_PLUGIN=$pack/bin/libsepal_cuda.so SEPAL_MODELS_DIR=$pack/models SEPAL_PROGRAM=$pack/bin/sepal-run
  run() { "$pack/lib/ld-linux-x86-64.so.2" --library-path "$pack/lib:$SEPAL_CUDA_LIBS" "$pack/bin/$1" "${@:2}"; }
  failed=0
  for t in backend_ops_test device_blocks_test device_training_test; do
    SEPAL_TEST_DEVICE=cuda run "$t" --gtest_color=no 2>&1 | tee "$out/$t.log" | tail -3
    [ "${PIPESTATUS[0]}" -eq 0 ] || failed=$((failed + 1))
  done
  for t in cuda_int8_test gpu_cli_test; do
    run "$t" --gtest_color=no 2>&1 | tee "$out/$t.log" | tail -3
    [ "${PIPESTATUS[0]}" -eq 0 ] || failed=$((failed + 1))
  done
  mkdir -p /tmp/sepal-bench
  timeout 240 run gpu_decode_bench --model-dir /tmp/sepal-bench --decode-tokens 64 2>&1 | tee "$out/bench-gpu.log"
  echo "gpu_check (packed): $failed test programs failed" | tee -a "$out/gpu.txt"
  exit "$failed"
fi
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSEPAL_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  > "$out/configure.log" 2>&1 || { tail -20 "$out/configure.log"; exit 1; }
ninja -C build-gpu sepal sepal_cuda backend_ops_test device_blocks_test device_training_test cuda_int8_test gpu_cli_test gpu_decode_bench \
  > "$out/build.log" 2>&1 || { grep -m20 -A5 "error" "$out/build.log"; exit 1; }
(cd build-gpu && ctest -L gpu --output-on-failure --timeout 300) 2>&1 | tee "$out/ctest-gpu.log"
SEPAL_BUILD_DIR=build-gpu SEPAL_BENCH_TOKENS=64 timeout 240 bench/run_gpu.sh --decode-tokens 64 2>&1 | tee "$out/bench-gpu.log"
