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
trap 'rm -rf "$dir"; clean_mpi_leftovers' EXIT
source "$here/../../scripts/mpi_env.sh"
data=$models/../data/tune-tom/eval-none.jsonl
source "$here/quantized_folder_checks.sh"
/usr/bin/python3 "$here/fp8_twin.py" "$models/tinystories-656K" "$dir/fp8" "$dir/twin" 32 48 || { echo "FAILED: fp8_twin.py"; exit 1; }
original=$(nll --model "$models/tinystories-656K"); fp8=$(nll --model "$dir/fp8"); twin=$(nll --model "$dir/twin")
echo "nll: original $original, FP8 $fp8, its dequantized twin $twin"
check "the FP8 folder scores what its dequantized twin scores" '[ -n "$fp8" ] && [ "$fp8" = "$twin" ]'
check "FP8 costs under 2% of the original's nll" 'close "$original" "$fp8" 2'
swarm_and_int8_checks "$dir/fp8" FP8
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
check "compressed-tensors' FP8 costs under 2% of the original's nll" 'close "$original" "$rows" 2'
exit $failed
