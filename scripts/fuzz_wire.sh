#!/usr/bin/env bash
# Coverage-guided fuzzing of frame decoding with libFuzzer and AddressSanitizer (clang).
#   scripts/fuzz_wire.sh [seconds]     # default 70
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-70}
out=build/fuzz
mkdir -p "$out/corpus"
clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -I. \
  tests/fuzz/wire_fuzz_target.cc runtime/wire.cc runtime/buffer.cc runtime/status.cc \
  runtime/tensor_payload.cc -o "$out/wire_fuzz"
"$out/wire_fuzz" -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 "$out/corpus" 2>&1 | tail -5
echo "fuzz_wire: ${seconds} s of libFuzzer without a crash"
