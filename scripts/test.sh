#!/usr/bin/env bash
# Every test: install dependencies, build, run ctest (GPU tests only where a GPU exists), then
# fuzz every libFuzzer target for a bounded time (SEPAL_FUZZ_SECONDS each, default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
exclude=()
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  exclude=(-LE gpu)
fi
(cd build && ctest --output-on-failure -j "$(nproc)" "${exclude[@]}")
scripts/fuzz.sh "${SEPAL_FUZZ_SECONDS:-20}"
