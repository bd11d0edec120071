#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer under AddressSanitizer and UndefinedBehaviorSanitizer:
# builds tests/fuzz with clang in build-fuzz/ and runs every target for a bounded time on a copy
# of its seed corpus (tests/fuzz/corpus/TARGET). A crash, leak, sanitizer report or uncaught
# exception fails the script and leaves the input in build-fuzz/crashes/.
#   scripts/fuzz.sh [seconds per target]     # default 20
#   scripts/fuzz.sh --build-only              # configure and build the targets, run nothing
set -euo pipefail
cd "$(dirname "$0")/.."
build_only=0
[ "${1:-}" = --build-only ] && { build_only=1; shift; }
seconds=${1:-20}
case "$seconds" in ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS | --build-only], not '$seconds'" >&2; exit 2 ;; esac
build=build-fuzz
if [ ! -f "$build/build.ninja" ]; then
  mkdir -p "$build"
  CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DSEPAL_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    > "$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
fi
echo "fuzz: building the targets with clang, ASan and UBSan in $build"
# Quiet unless it fails: clang's warnings are the main build's business.
if ! cmake --build "$build" --target fuzzers -j "$(nproc)" > "$build/build.log" 2>&1; then
  tail -40 "$build/build.log"
  echo "fuzz: the build failed (whole log: $build/build.log)"
  exit 1
fi
[ "$build_only" -eq 1 ] && exit 0
mkdir -p "$build/crashes"
# One target per core at a time: each is single-threaded, so the wall time is the targets'
# seconds divided by the cores.
fuzz_one() {  # TARGET: runs it; its exit status is libFuzzer's
  local target=$1 corpus="$build/corpus/$1"
  mkdir -p "$corpus"
  [ -d "tests/fuzz/corpus/$target" ] && cp -n tests/fuzz/corpus/"$target"/* "$corpus"/ 2>/dev/null || true
  "$build/bin/$target" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$build/crashes/$target-" "$corpus" > "$build/$target.log" 2>&1
}
jobs=$(nproc)
declare -A pid_of
for target in $(ls "$build/bin" | grep '^fuzz_'); do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  fuzz_one "$target" &
  pid_of[$target]=$!
done
failed=0
for target in $(ls "$build/bin" | grep '^fuzz_'); do
  log="$build/$target.log"
  if wait "${pid_of[$target]}"; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz: $target: $runs executions in ${seconds} s, no crash"
  else
    echo "fuzz: $target FAILED:"
    grep -E "ERROR|runtime error|uncaught|SUMMARY|Test unit written" "$log" | head -8
    failed=$((failed + 1))
  fi
done
[ "$failed" -eq 0 ]
