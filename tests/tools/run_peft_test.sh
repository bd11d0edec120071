#!/usr/bin/env bash
# LoRA in Hugging Face PEFT's layout (model/peft_adapter.h), on a Llama (tinystories-656K), on
# BLOOM (bloom-synth, whose q, k and v are one fused query_key_value), on a synthetic Phi-3
# (qkv_proj and gate_up_proj fused), a synthetic Mixtral (each expert's w1 and w2 adapted), a
# synthetic Qwen2-MoE (each expert's and the shared expert's gate and down) and on synthetic Gemma,
# Gemma 2 and Gemma 3:
#   1. sepal tune --method lora --export-peft writes adapter_config.json (PEFT's keys; BLOOM's fused
#      module with its rank and alpha in rank_pattern and alpha_pattern) and
#      adapter_model.safetensors (PEFT's tensor names); the folder as --adapter scores exactly what
#      the HDF5 checkpoint scores, and the model with the folder merged into its weights by an
#      independent script (tests/tools/peft_merge.py) scores the same;
#   2. an adapter "trained elsewhere" (peft_merge.py make: F16 factors on other targets, ranks and
#      alphas, per module through rank_pattern and alpha_pattern) scores what the model with it
#      merged into the weights scores;
#   3. a folder of another kind, settings of the wrong type and a pattern key sepal cannot read are
#      refused in one line.
#   run_peft_test.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$2
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
data=$models/../data/tune-tom
failed=0
# Scores are compared for equality, not size: 16 held-out stories are enough.
head -16 "$data/eval-none.jsonl" > "$dir/eval.jsonl"
nll() { "$sepal" perplexity --data "$dir/eval.jsonl" --json "$@" 2>"$dir/err" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["nll"])'; }
close() {  # close WHAT A B: A and B within 1e-5 relative
  /usr/bin/python3 -c "
import sys
what, a, b = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
assert abs(a - b) < 1e-5 * abs(b), f'{what}: {a} against {b}'
print(f'ok: {what}: {a} against {b}')" "$@" || failed=$((failed + 1))
}

# check_model NAME TARGETS EXPECTED_CONFIG_AND_NAMES (Python asserts on c, the config, and names)
check_model() {  # check_model NAME TARGETS EXPECT [MODEL_DIR, default MODELS_DIR/NAME]
  local name=$1 targets=$2 expect=$3 model=${4:-$models/$1} out=$dir/$1
  mkdir -p "$out"
  "$sepal" tune --model "$model" --data "$data/train.jsonl" --method lora --lora-rank 4 --lora-targets "$targets" \
    --steps 6 --batch-size 4 --lr 0.02 --seed 2 --out "$out/lora.h5" --export-peft "$out/peft" 2> "$dir/err" > /dev/null \
    || { echo "FAILED: $name: sepal tune --export-peft"; tail -3 "$dir/err"; failed=$((failed + 1)); return; }
  /usr/bin/python3 - "$out/peft" "$expect" <<'PY' || failed=$((failed + 1))
import json, struct, sys
d, expect = sys.argv[1:3]
c = json.load(open(f"{d}/adapter_config.json"))
for key, want in {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 16.0, "bias": "none"}.items():
    assert c[key] == want, f"adapter_config.json: {key} = {c[key]!r}, not {want!r}"
raw = open(f"{d}/adapter_model.safetensors", "rb").read()
names = set(json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])) - {"__metadata__"}
exec(expect)
print("ok: the export has PEFT's config keys and tensor names")
PY
  local a b merged
  a=$(nll --model "$model" --adapter "$out/lora.h5"); b=$(nll --model "$model" --adapter "$out/peft")
  [ -n "$a" ] && [ "$a" = "$b" ] && echo "ok: $name: the PEFT folder scores what the checkpoint scores ($a)" \
    || { echo "FAILED: $name: checkpoint $a, PEFT folder $b"; failed=$((failed + 1)); }
  /usr/bin/python3 "$here/peft_merge.py" merge "$model" "$out/peft" "$out/merged-export" || { failed=$((failed + 1)); return; }
  merged=$(nll --model "$out/merged-export")
  close "$name: the export merged into the weights, against the checkpoint" "$merged" "$a"

  /usr/bin/python3 "$here/peft_merge.py" make "$model" "$out/elsewhere" "$out/merged" || { failed=$((failed + 1)); return; }
  local plain with
  plain=$(nll --model "$model"); with=$(nll --model "$model" --adapter "$out/elsewhere"); merged=$(nll --model "$out/merged")
  /usr/bin/python3 -c "
import sys
plain, with_ = map(float, sys.argv[1:3])
assert abs(with_ - plain) > 1e-3, f'the adapter changed nothing ({plain} and {with_})'" "$plain" "$with" \
    || { echo "FAILED: $name: the adapter trained elsewhere changed nothing"; failed=$((failed + 1)); }
  close "$name: an adapter trained elsewhere, against its merged model (base $plain)" "$with" "$merged"
}

check_model tinystories-656K q_proj,v_proj,down_proj '
assert sorted(c["target_modules"]) == ["down_proj", "q_proj", "v_proj"], c["target_modules"]
assert not c["rank_pattern"] and not c["alpha_pattern"], c
assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in names, sorted(names)[:4]
assert "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in names, sorted(names)[:4]
assert len(names) == 2 * 3 * 2, len(names)'
# BLOOM: q and v are one LoRA of rank 8 on the fused query_key_value (alpha 32 keeps 16 / 4).
check_model bloom-synth q_proj,v_proj,dense_4h_to_h '
assert sorted(c["target_modules"]) == ["dense_4h_to_h", "query_key_value"], c["target_modules"]
assert c["rank_pattern"] == {"query_key_value": 8} and c["alpha_pattern"] == {"query_key_value": 32.0}, c
assert "base_model.model.transformer.h.0.self_attention.query_key_value.lora_A.weight" in names, sorted(names)[:4]
assert "base_model.model.transformer.h.2.mlp.dense_4h_to_h.lora_B.weight" in names, sorted(names)[:4]
assert len(names) == 3 * 2 * 2, len(names)'

# Phi-3 (synthetic): q and v are one LoRA of rank 8 on the fused qkv_proj; an adapter trained
# elsewhere puts one A on the fused gate_up_proj, for gate and up.
"$sepal" synth --arch phi3 --hidden 96 --intermediate 160 --layers 2 --heads 4 --kv-heads 2 --vocab 400 \
  --out "$dir/phi3-synth" > /dev/null 2>&1 || { echo "FAILED: sepal synth --arch phi3"; failed=$((failed + 1)); }
check_model phi3-synth q_proj,v_proj,down_proj '
assert sorted(c["target_modules"]) == ["down_proj", "qkv_proj"], c["target_modules"]
assert c["rank_pattern"] == {"qkv_proj": 8} and c["alpha_pattern"] == {"qkv_proj": 32.0}, c
assert "base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight" in names, sorted(names)[:4]
assert "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in names, sorted(names)[:4]
assert len(names) == 2 * 2 * 2, len(names)' "$dir/phi3-synth"
# Mixtral (synthetic): every expert's w1 and w2 a module with a LoRA of its own.
"$sepal" synth --arch mixtral --hidden 64 --intermediate 96 --layers 2 --heads 4 --kv-heads 2 --vocab 400 --experts 4 \
  --experts-per-token 2 --out "$dir/mixtral-synth" > /dev/null 2>&1 || { echo "FAILED: sepal synth --arch mixtral"; failed=$((failed + 1)); }
check_model mixtral-synth q_proj,w1,w2 '
assert sorted(c["target_modules"]) == ["q_proj", "w1", "w2"], c["target_modules"]
assert "base_model.model.model.layers.1.block_sparse_moe.experts.3.w1.lora_A.weight" in names, sorted(names)[:4]
assert "base_model.model.model.layers.0.block_sparse_moe.experts.0.w2.lora_B.weight" in names, sorted(names)[:4]
assert len(names) == 2 * (1 + 2 * 4) * 2, len(names)' "$dir/mixtral-synth"
# Qwen2-MoE (synthetic): every expert's gate_proj and down_proj and its shared expert's.
"$sepal" synth --arch qwen2moe --hidden 64 --intermediate 96 --moe-intermediate 32 --shared-intermediate 80 --layers 2 \
  --heads 4 --kv-heads 2 --vocab 400 --experts 4 --experts-per-token 2 --out "$dir/qwen2moe-synth" > /dev/null 2>&1 \
  || { echo "FAILED: sepal synth --arch qwen2moe"; failed=$((failed + 1)); }
check_model qwen2moe-synth q_proj,gate_proj,down_proj '
assert sorted(c["target_modules"]) == ["down_proj", "gate_proj", "q_proj"], c["target_modules"]
assert "base_model.model.model.layers.1.mlp.experts.3.gate_proj.lora_A.weight" in names, sorted(names)[:4]
assert "base_model.model.model.layers.0.mlp.shared_expert.down_proj.lora_B.weight" in names, sorted(names)[:4]
assert len(names) == 2 * (1 + 2 * 5) * 2, len(names)' "$dir/qwen2moe-synth"
# Gemma (synthetic): Llama's module names; training passes through its GeGLU, its norms of 1 +
# weight and its scaled embeddings.
"$sepal" synth --arch gemma --hidden 64 --intermediate 160 --layers 2 --heads 4 --kv-heads 1 --head-dim 32 --vocab 400 \
  --tied --out "$dir/gemma-synth" > /dev/null 2>&1 || { echo "FAILED: sepal synth --arch gemma"; failed=$((failed + 1)); }
check_model gemma-synth q_proj,v_proj,gate_proj '
assert sorted(c["target_modules"]) == ["gate_proj", "q_proj", "v_proj"], c["target_modules"]
assert "base_model.model.model.layers.1.mlp.gate_proj.lora_B.weight" in names, sorted(names)[:4]
assert len(names) == 2 * 3 * 2, len(names)' "$dir/gemma-synth"
# Gemma 2 (synthetic): the gradients pass through its output norms and soft-capped scores and logits.
"$sepal" synth --arch gemma2 --hidden 64 --intermediate 160 --layers 2 --heads 4 --kv-heads 2 --head-dim 32 --vocab 400 \
  --tied --out "$dir/gemma2-synth" > /dev/null 2>&1 || { echo "FAILED: sepal synth --arch gemma2"; failed=$((failed + 1)); }
check_model gemma2-synth q_proj,o_proj,down_proj '
assert sorted(c["target_modules"]) == ["down_proj", "o_proj", "q_proj"], c["target_modules"]
assert len(names) == 2 * 3 * 2, len(names)' "$dir/gemma2-synth"
# Gemma 3 (synthetic): through its q and k norms and its sliding blocks' own RoPE base.
"$sepal" synth --arch gemma3 --hidden 64 --intermediate 160 --layers 3 --heads 4 --kv-heads 1 --head-dim 32 --vocab 400 \
  --tied --out "$dir/gemma3-synth" > /dev/null 2>&1 || { echo "FAILED: sepal synth --arch gemma3"; failed=$((failed + 1)); }
check_model gemma3-synth q_proj,k_proj,up_proj '
assert sorted(c["target_modules"]) == ["k_proj", "q_proj", "up_proj"], c["target_modules"]
assert len(names) == 3 * 3 * 2, len(names)' "$dir/gemma3-synth"
# The same Gemma 3 laid out as the 4B and larger are (Gemma3ForConditionalGeneration: a vision
# tower beside the language model, under either of transformers' prefixes), with the adapter named
# as PEFT names one of that model: the same scores as the text model with its own adapter.
text_nll=$(nll --model "$dir/gemma3-synth" --adapter "$dir/gemma3-synth/peft")
for layout in old new; do
  mm=$dir/gemma3-multimodal-$layout
  /usr/bin/python3 "$here/gemma3_multimodal.py" model "$dir/gemma3-synth" "$mm" --layout $layout \
    && /usr/bin/python3 "$here/gemma3_multimodal.py" peft "$dir/gemma3-synth/peft" "$mm-peft" --layout $layout \
    || { echo "FAILED: gemma3_multimodal.py ($layout)"; failed=$((failed + 1)); continue; }
  mm_nll=$(nll --model "$mm" --adapter "$mm-peft")
  [ -n "$text_nll" ] && [ "$mm_nll" = "$text_nll" ] \
    && echo "ok: a multimodal Gemma 3 ($layout names) with its PEFT adapter scores what its text model does ($mm_nll)" \
    || { echo "FAILED: multimodal Gemma 3 ($layout names): $mm_nll, its text model $text_nll"; cat "$dir/err"; failed=$((failed + 1)); }
  # Trained on the multimodal folder: the export names the modules as transformers' model of it
  # does (model.language_model.layers...), and scores what the checkpoint does.
  "$sepal" tune --model "$mm" --data "$data/train.jsonl" --method lora --lora-rank 4 --lora-targets q_proj,up_proj \
    --steps 4 --batch-size 4 --lr 0.02 --seed 2 --out "$mm-tuned.h5" --export-peft "$mm-tuned" 2> "$dir/err" > /dev/null \
    || { echo "FAILED: tune on the multimodal Gemma 3 ($layout names)"; tail -3 "$dir/err"; failed=$((failed + 1)); continue; }
  if /usr/bin/python3 - "$mm-tuned/adapter_model.safetensors" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
names = set(json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])) - {"__metadata__"}
assert len(names) == 3 * 2 * 2, sorted(names)
assert all(n.startswith("base_model.model.model.language_model.layers.") for n in names), sorted(names)[:2]
assert "base_model.model.model.language_model.layers.2.mlp.up_proj.lora_B.weight" in names, sorted(names)[:2]
PY
  then echo "ok: an adapter trained on the multimodal Gemma 3 ($layout names) is exported under model.language_model."
  else echo "FAILED: the multimodal Gemma 3's export names"; failed=$((failed + 1)); fi
  a=$(nll --model "$mm" --adapter "$mm-tuned.h5"); b=$(nll --model "$mm" --adapter "$mm-tuned")
  [ -n "$a" ] && [ "$a" = "$b" ] && echo "ok: its PEFT folder scores what its checkpoint scores ($a)" \
    || { echo "FAILED: multimodal Gemma 3 ($layout names): checkpoint $a, PEFT folder $b"; failed=$((failed + 1)); }
done

refused() {  # refused WHAT FOLDER EXPECTED_TEXT
  "$sepal" perplexity --model "$models/tinystories-656K" --data "$data/eval-none.jsonl" --adapter "$2" 2> "$dir/err" > /dev/null
  grep -q "$3" "$dir/err" && [ "$(wc -l < "$dir/err")" -eq 1 ] && echo "ok: $1 refused in one line" \
    || { echo "FAILED: $1: $(cat "$dir/err")"; failed=$((failed + 1)); }
}
mkdir -p "$dir/ia3" && echo '{"peft_type": "IA3", "target_modules": ["k_proj"]}' > "$dir/ia3/adapter_config.json"
refused "an IA3 folder" "$dir/ia3" "PEFT type 'IA3' is not supported"
mkdir -p "$dir/typed" && echo '{"peft_type": 5}' > "$dir/typed/adapter_config.json"
refused "a numeric peft_type" "$dir/typed" "PEFT type '5' is not supported"
mkdir -p "$dir/dora" && echo '{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "use_dora": "yes"}' \
  > "$dir/dora/adapter_config.json"
refused "a use_dora that is not a boolean" "$dir/dora" 'use_dora must be true or false, not "yes"'
cp -r "$dir/tinystories-656K/elsewhere" "$dir/regex"
/usr/bin/python3 -c "
import json, sys
p = sys.argv[1] + '/adapter_config.json'
c = json.load(open(p)); c['rank_pattern'] = {r'layers\.\d+\.self_attn\.o_proj': 2}
json.dump(c, open(p, 'w'))" "$dir/regex"
refused "a regular expression in rank_pattern" "$dir/regex" "regular expressions are not supported"
# An alpha past float's range, and B factors that its module's alpha / r carries past it (found by
# fuzz_peft_adapter): refused, not infinite.
for case in huge:1e300 scaled:1e29; do
  cp -r "$dir/tinystories-656K/elsewhere" "$dir/${case%%:*}"
  /usr/bin/python3 -c "
import json, sys
sys.path.insert(0, sys.argv[3])
import numpy as np
from safetensors_io import read_arrays, write_arrays
p = sys.argv[1] + '/adapter_config.json'
c = json.load(open(p)); c['alpha_pattern'] = {'up_proj': float(sys.argv[2])}
json.dump(c, open(p, 'w'))
w = read_arrays(sys.argv[1] + '/adapter_model.safetensors')  # up_proj's B as F32, up to 1e12
w = {k: (v.astype(np.float32) * 1e12 if 'up_proj.lora_B' in k else v) for k, v in w.items()}
write_arrays(sys.argv[1] + '/adapter_model.safetensors', w)" "$dir/${case%%:*}" "${case#*:}" "$here"
done
refused "an alpha of 1e300" "$dir/huge" "is 1e+300, not a positive number up to 1e30"
refused "B times an alpha / r past float's range" "$dir/scaled" "lora_B.weight times its module's alpha / r (.*) is not finite"
exit $failed
