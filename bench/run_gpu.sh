#!/usr/bin/env bash
# Blocks on a GPU: prompt and decode tokens/s of the TinyLlama-1.1B shape at f32, bf16 and int8
# against the GPU's read bandwidth measured in the same run (gpu_decode_bench), then decode
# tokens/s of `sepal generate --device cuda` in one process against two host processes on the
# same GPU (--hosts 2). Needs a CUDA build and a GPU. Writes bench/results/gpu-decode.csv.
#   bench/run_gpu.sh [gpu_decode_bench flags]     (SEPAL_BUILD_DIR: the CUDA build, default build)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SEPAL_BUILD_DIR:-build}/bin
models=${SEPAL_BENCH_MODELS:-/tmp/sepal-bench}
mkdir -p bench/results "$models"
"$bin/gpu_decode_bench" --model-dir "$models" --csv bench/results/gpu-decode.csv "$@"
source scripts/mpi_env.sh
model="$models/tinyllama-1.1b-bf16"  # written by gpu_decode_bench
tokens=${SEPAL_BENCH_TOKENS:-128}
decode_rate() {
  "$bin/sepal" generate --model "$model" --prompt "Once upon a time" --max-new-tokens "$tokens" --device cuda \
    --dtype bf16 --json "$@" 2>/dev/null | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["decode_tokens_per_s"])'
}
one=$(decode_rate)
two=$(decode_rate --hosts 2 --no-wire-compression)
/usr/bin/python3 - "$one" "$two" <<'PY'
import sys
one, two = float(sys.argv[1]), float(sys.argv[2])
print(f"generate --device cuda, bf16, whole model: one process {one:.1f} tokens/s, "
      f"two GPU hosts {two:.1f} tokens/s ({two / one:.2f} of one process)")
PY
