#!/usr/bin/env bash
# The prompt GEMMs' FLOP rate against the machine's peak and against the OpenBLAS path, on the
# stories-110m and tinyllama-1.1b shapes: bench/results/gemm.csv and gemm.png.
#   bench/run_gemm.sh [gemm_bench flags]     # e.g. --tokens 512
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/bin/gemm_bench ] || scripts/build.sh
mkdir -p bench/results
build/bin/gemm_bench --csv bench/results/gemm.csv "$@"
/usr/bin/python3 bench/plot_gemm.py bench/results/gemm.csv bench/results/gemm.png
