#!/usr/bin/env bash
# Decode and prompt speed at f32, bf16, int8 and int8 with outliers, on the TinyLlama-1.1B,
# stories-110M and a BLOOM of about 1.1B (bloom-1.1b: 2048 wide, 20 blocks, 16 heads) shapes, against the memory roofline measured in the same run (the fastest read of a
# buffer of each row's streamed bytes); writes bench/results/decode-PRESET.csv and .png. A decode
# faster than the roofline fails the run (the probe would be wrong). Synthetic checkpoints (17 GB)
# go to ${SEPAL_BENCH_MODELS:-/tmp/sepal-bench}.
#   bench/run_decode.sh [decode_bench flags]     # e.g. --decode-tokens 64
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/bin/decode_bench ] || scripts/build.sh
mkdir -p bench/results
for preset in ${SEPAL_BENCH_PRESETS:-stories-110m tinyllama-1.1b bloom-1.1b}; do
  build/bin/decode_bench --model-dir "${SEPAL_BENCH_MODELS:-/tmp/sepal-bench}" --preset "$preset" \
    --csv "bench/results/decode-$preset.csv" "$@"
  /usr/bin/python3 bench/plot_decode.py "bench/results/decode-$preset.csv" "bench/results/decode-$preset.png"
done
