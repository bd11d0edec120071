#!/usr/bin/env bash
# FP8 checkpoints (model/fp8.h), written from a real model (tinystories-656K) by
# tests/tools/fp8_twin.py, independently of sepal, beside their dequantized F32 twin. Block-wise
# (transformers' fp8), blocks of 32 x 48 (partial blocks at the edges, scales in F32 and BF16):
#   - the FP8 folder scores exactly what the twin scores, and within 2% of the original model;
#   - over 2 hosts, the FP8 folder generates what one process does;
#   - sepal quantize turns it into an int8 checkpoint without its quantization_config, which at
#     --dtype int8 scores what --dtype int8 on the FP8 folder scores;
#   - scales that do not cover their weight, and an activation_scheme it cannot honour, are
#     refused in one line.
# compressed-tensors' float-quantized FP8, a scale a row: it scores what its twin scores.
#   run_fp8_test.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$2
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
source "$here/../../scripts/mpi_env.sh"
data=$models/../data/tune-tom/eval-none.jsonl
failed=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAILED: $1"; failed=$((failed + 1)); return 1; fi; }
nll() { "$sepal" perplexity --data "$data" --json "$@" 2> "$dir/err" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["nll"])'; }
/usr/bin/python3 "$here/fp8_twin.py" "$models/tinystories-656K" "$dir/fp8" "$dir/twin" 32 48 || { echo "FAILED: fp8_twin.py"; exit 1; }
original=$(nll --model "$models/tinystories-656K"); fp8=$(nll --model "$dir/fp8"); twin=$(nll --model "$dir/twin")
echo "nll: original $original, FP8 $fp8, its dequantized twin $twin"
check "the FP8 folder scores what its dequantized twin scores" '[ -n "$fp8" ] && [ "$fp8" = "$twin" ]'
check "FP8 costs under 2% of the original's nll" '/usr/bin/python3 -c "import sys; o, f = map(float, sys.argv[1:]); sys.exit(0 if o != f and abs(f / o - 1) < 0.02 else 1)" "$original" "$fp8"'
gen() { "$sepal" generate --prompt "Once upon a time" --max-new-tokens 24 --json "$@" 2> "$dir/err" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])'; }
one=$(gen --model "$dir/fp8"); swarm=$(gen --model "$dir/fp8" --hosts 2)
check "over 2 hosts the FP8 folder generates one process's text" '[ -n "$one" ] && [ "$one" = "$swarm" ]'
"$sepal" quantize --model "$dir/fp8" --out "$dir/int8" 2> "$dir/err" || { echo "FAILED: sepal quantize"; cat "$dir/err"; failed=$((failed + 1)); }
check "the int8 copy has no quantization_config" '! grep -q quantization_config "$dir/int8/config.json"'
a=$(nll --model "$dir/int8" --dtype int8); b=$(nll --model "$dir/fp8" --dtype int8)
check "the int8 checkpoint scores what --dtype int8 on the FP8 folder scores ($a)" '[ -n "$a" ] && [ "$a" = "$b" ]'
refused() {  # WHAT EXPECTED
  local want=$2
  "$sepal" perplexity --model "$dir/bad" --data "$data" > /dev/null 2> "$dir/err"
  check "$1 refused in one line" 'grep -qF "$want" "$dir/err" && [ "$(wc -l < "$dir/err")" -eq 1 ]' || cat "$dir/err"
}
cp -r "$dir/fp8" "$dir/bad"
/usr/bin/python3 -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); c["quantization_config"]["weight_block_size"] = [64, 48]; json.dump(c, open(p, "w"))' "$dir/bad/config.json"
refused "scales that do not cover their weight" "do not cover 'model.layers.0."
/usr/bin/python3 -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); c["quantization_config"].update(weight_block_size=[32, 48], activation_scheme="static"); json.dump(c, open(p, "w"))' "$dir/bad/config.json"
refused "a static activation scheme" "activation_scheme 'static' is not supported"
# compressed-tensors' FP8 (a scale a row, F32 and BF16): the same checks on scores.
/usr/bin/python3 "$here/fp8_twin.py" "$models/tinystories-656K" "$dir/rows" "$dir/rows-twin" channel \
  || { echo "FAILED: fp8_twin.py channel"; exit 1; }
rows=$(nll --model "$dir/rows"); rows_twin=$(nll --model "$dir/rows-twin")
echo "nll: compressed-tensors FP8 $rows, its dequantized twin $rows_twin"
check "compressed-tensors' FP8 scores what its dequantized twin scores" '[ -n "$rows" ] && [ "$rows" = "$rows_twin" ]'
check "compressed-tensors' FP8 costs under 2% of the original's nll" '/usr/bin/python3 -c "import sys; o, f = map(float, sys.argv[1:]); sys.exit(0 if o != f and abs(f / o - 1) < 0.02 else 1)" "$original" "$rows"'
exit $failed
