#!/usr/bin/env bash
# Every test: install dependencies, build, run ctest (GPU tests only where a GPU exists), then
# fuzz every libFuzzer target for a bounded time (SEPAL_FUZZ_SECONDS each, default 20).
# The fuzz targets build during ctest at the lowest CPU priority (nice 19): many tests spend
# much of their time waiting (Slurm's scheduler, simulated WAN round trips, process start-up),
# and the build takes the cores they leave idle; after ctest, fuzz.sh finishes it at normal
# priority and reports any build failure.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase's wall time, printed as it ends: CI's budget is the sum.
phase_start=$SECONDS
phase_done() { echo "test.sh: $1 took $((SECONDS - phase_start)) s"; phase_start=$SECONDS; }
scripts/install-deps.sh
phase_done "installing dependencies"
scripts/build.sh
phase_done "the build"
exclude=()
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  exclude=(-LE gpu)
fi
mkdir -p build-fuzz
# Its own process group (job control), so that the trap stops ninja and clang with it; not its
# own session (setsid), whose new scheduler autogroup would make nice meaningless.
set -m
nice -n 19 scripts/fuzz.sh --build-only > build-fuzz/background.log 2>&1 &
fuzz_build=$!
set +m
trap 'kill -- -$fuzz_build 2>/dev/null || true' EXIT
# A failure's digest is printed after ctest's summary too: a long log may be cut in the middle,
# where --output-on-failure put the failed tests' output.
(cd build && ctest --output-on-failure -j "$(nproc)" "${exclude[@]}") || {
  status=$?
  phase_done "ctest"
  /usr/bin/env python3 scripts/failed_tests_digest.py build || true
  exit "$status"
}
phase_done "ctest"
# What the background build has not done by now (on a machine kept busy, nice 19 gets almost
# nothing) is done at normal priority: it is stopped, and fuzz.sh's own build takes over where
# it left off (ninja keeps every object it finished; its failures are reported there).
kill -- -"$fuzz_build" 2>/dev/null || true
wait "$fuzz_build" 2>/dev/null || true
trap - EXIT
scripts/fuzz.sh "${SEPAL_FUZZ_SECONDS:-20}"
phase_done "finishing the fuzz build and fuzzing"
