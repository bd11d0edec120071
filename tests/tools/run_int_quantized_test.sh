#!/usr/bin/env bash
# Integer-quantized checkpoints (model/packed_integers.h: GPTQ, AWQ, compressed-tensors'
# pack-quantized; model/bnb4.h: bitsandbytes' 4-bit), written from a real model
# (tinystories-656K) by tests/tools/int_twin.py and bnb4_twin.py, independently of sepal, beside
# their dequantized F32 twins:
#   - each folder scores exactly what its twin scores: GPTQ 4-bit in groups of 32 with act-order
#     (g_idx) and AutoGPTQ's zero points, GPTQ v2 8-bit a scale a row, GPTQ 2-bit, AWQ 4-bit,
#     compressed-tensors 4-bit symmetric with BF16 scales and 8-bit asymmetric a scale a row,
#     compressed-tensors int-quantized int8 (W8A8's weights, BF16 scales a row),
#     bitsandbytes' NF4 with double quantization (bf16) and FP4 (f16) in blocks of 64; the 4-
#     and 8-bit ones within 3% of the original model's nll (FP4 6%);
#   - over 2 hosts, the GPTQ and NF4 folders generate what one process does;
#   - sepal quantize turns each into an int8 checkpoint without its quantization_config, which
#     at --dtype int8 scores what --dtype int8 on the folder scores;
#   - an older GPTQ folder, its settings in AutoGPTQ's quantize_config.json and its weights in
#     gptq_model-4bit-32g.safetensors, scores the same;
#   - settings sepal cannot read, and parts that do not fit, are refused in one line.
#   run_int_quantized_test.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$2
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
source "$here/../../scripts/mpi_env.sh"
trap 'rm -rf "$dir"; clean_mpi_leftovers' EXIT
model=$models/tinystories-656K
data=$models/../data/tune-tom/eval-none.jsonl
source "$here/quantized_folder_checks.sh"
original=$(nll --model "$model")
echo "nll: original $original"
for spec in "gptq 4 32 act_order" "gptq_v2 8 -1" "gptq 2 64" "awq 4 32" "ct 4 32 bf16" "ct 8 -1 asymmetric" \
            "ct_int8 8 -1 bf16"; do
  set -- $spec
  name="$1-$2-bit"
  /usr/bin/python3 "$here/int_twin.py" "$model" "$dir/$name" "$dir/$name-twin" "$@" || { echo "FAILED: int_twin.py $spec"; exit 1; }
  packed=$(nll --model "$dir/$name") || cat "$dir/err"
  twin=$(nll --model "$dir/$name-twin")
  echo "nll: $spec: $packed, its dequantized twin $twin"
  check "$spec scores what its dequantized twin scores" '[ -n "$packed" ] && [ "$packed" = "$twin" ]'
  if [ "$2" != 2 ]; then check "$spec costs under 3% of the original's nll" 'close "$original" "$packed" 3'; fi
done
for spec in "nf4 64 bfloat16 nested" "fp4 64 float16"; do  # bitsandbytes' 4-bit: self-described
  set -- $spec
  /usr/bin/python3 "$here/bnb4_twin.py" "$model" "$dir/$1" "$dir/$1-twin" "$@" || { echo "FAILED: bnb4_twin.py $spec"; exit 1; }
  packed=$(nll --model "$dir/$1") || cat "$dir/err"
  twin=$(nll --model "$dir/$1-twin")
  echo "nll: bitsandbytes $spec: $packed, its dequantized twin $twin"
  check "bitsandbytes $spec scores what its dequantized twin scores" '[ -n "$packed" ] && [ "$packed" = "$twin" ]'
  limit=3; [ "$1" = fp4 ] && limit=6  # FP4's levels fit weights worse than NF4's, as QLoRA found
  check "bitsandbytes $spec costs under $limit% of the original's nll" 'close "$original" "$packed" $limit'
done
gptq=$dir/gptq-4-bit
swarm_and_int8_checks "$gptq" GPTQ
# An older GPTQ folder: AutoGPTQ's settings in quantize_config.json, none in config.json, and its
# weights file named as AutoGPTQ named it.
cp -r "$gptq" "$dir/old-gptq"
mv "$dir/old-gptq/model.safetensors" "$dir/old-gptq/gptq_model-4bit-32g.safetensors"
/usr/bin/python3 -c 'import json, sys; d = sys.argv[1]; c = json.load(open(d + "/config.json")); q = c.pop("quantization_config"); q.pop("quant_method"); json.dump(c, open(d + "/config.json", "w")); json.dump(q, open(d + "/quantize_config.json", "w"))' "$dir/old-gptq"
a=$(nll --model "$dir/old-gptq"); b=$(nll --model "$gptq")
check "with its settings in quantize_config.json and its file renamed the GPTQ folder scores the same ($a)" '[ -n "$a" ] && [ "$a" = "$b" ]'
swarm_and_int8_checks "$dir/nf4" NF4
settings() { /usr/bin/python3 -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); c["quantization_config"].update(json.loads(sys.argv[2])); json.dump(c, open(p, "w"))' "$dir/bad/config.json" "$1"; }
cp -r "$gptq" "$dir/bad"
settings '{"bits": 3}'
refused "3-bit GPTQ" "gptq 3-bit weights are not supported"
settings '{"bits": 4, "group_size": 64}'
refused "a group size the scales do not have" "groups, but the 384 input columns of 'model.layers.0.mlp.down_proj.qweight' in groups of 64 make 6"
settings '{"group_size": 32, "checkpoint_format": "marlin"}'
refused "a GPTQ format it cannot read" "gptq checkpoint_format \"marlin\" is not supported"
rm -rf "$dir/bad" && cp -r "$dir/awq-4-bit" "$dir/bad"
settings '{"version": "gemv"}'
refused "AWQ's GEMV layout" "awq version \"gemv\" is not supported"
/usr/bin/python3 -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); del c["quantization_config"]; json.dump(c, open(p, "w"))' "$dir/bad/config.json"
refused "packed weights without a quantization_config" "holds packed integer weights, but nothing says how"
exit $failed
