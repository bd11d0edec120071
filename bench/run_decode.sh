#!/usr/bin/env bash
# Decode/prompt speed on the TinyLlama-1.1B shape (f32 and bf16) against the memory roofline,
# measured in the same run; writes bench/results/decode.csv and decode.png.
# Synthetic checkpoints (6.6 GB) go to ${SEPAL_BENCH_MODELS:-/tmp/sepal-bench}.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/bin/decode_bench ] || scripts/build.sh
build/bin/decode_bench --model-dir "${SEPAL_BENCH_MODELS:-/tmp/sepal-bench}" --csv bench/results/decode.csv "$@"
/usr/bin/python3 bench/plot_decode.py bench/results/decode.csv bench/results/decode.png
