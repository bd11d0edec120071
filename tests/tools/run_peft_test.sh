#!/usr/bin/env bash
# LoRA in Hugging Face PEFT's layout (model/peft_adapter.h):
#   1. sepal tune --method lora --export-peft writes adapter_config.json (PEFT's keys) and
#      adapter_model.safetensors (PEFT's tensor names); the folder as --adapter scores exactly what
#      the HDF5 checkpoint scores;
#   2. an adapter "trained elsewhere" (tests/tools/peft_merge.py: F16 factors on other targets,
#      another rank and alpha) scores what the model with it merged into the weights scores;
#   3. a folder of another kind is refused in one line.
#   run_peft_test.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$2
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
model=$models/tinystories-656K
data=$models/../data/tune-tom
failed=0
nll() { "$sepal" perplexity --data "$data/eval-none.jsonl" --json "$@" 2>"$dir/err" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["nll"])'; }
"$sepal" tune --model "$model" --data "$data/train.jsonl" --method lora --lora-rank 4 --lora-targets q_proj,v_proj,down_proj \
  --steps 6 --batch-size 4 --lr 0.02 --seed 2 --out "$dir/lora.h5" --export-peft "$dir/peft" 2> "$dir/err" > /dev/null \
  || { echo "FAILED: sepal tune --export-peft"; tail -3 "$dir/err"; exit 1; }
/usr/bin/python3 - "$dir/peft" <<'PY' || failed=$((failed + 1))
import json, struct, sys
d = sys.argv[1]
c = json.load(open(f"{d}/adapter_config.json"))
for key, want in {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 16.0, "bias": "none"}.items():
    assert c[key] == want, f"adapter_config.json: {key} = {c[key]!r}, not {want!r}"
assert sorted(c["target_modules"]) == ["down_proj", "q_proj", "v_proj"], c["target_modules"]
raw = open(f"{d}/adapter_model.safetensors", "rb").read()
names = set(json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])) - {"__metadata__"}
assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in names, sorted(names)[:4]
assert "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in names, sorted(names)[:4]
assert len(names) == 2 * 3 * 2, len(names)
print("ok: the export has PEFT's config keys and tensor names")
PY
a=$(nll --model "$model" --adapter "$dir/lora.h5"); b=$(nll --model "$model" --adapter "$dir/peft")
[ -n "$a" ] && [ "$a" = "$b" ] && echo "ok: the PEFT folder scores what the checkpoint scores ($a)" \
  || { echo "FAILED: checkpoint $a, PEFT folder $b"; failed=$((failed + 1)); }
/usr/bin/python3 "$here/peft_merge.py" "$model" "$dir/elsewhere" "$dir/merged" || exit 1
plain=$(nll --model "$model"); with=$(nll --model "$model" --adapter "$dir/elsewhere"); merged=$(nll --model "$dir/merged")
/usr/bin/python3 -c "
import sys
plain, with_, merged = map(float, sys.argv[1:4])
assert abs(with_ - plain) > 1e-3, f'the adapter changed nothing ({plain} and {with_})'
assert abs(with_ - merged) < 1e-5 * merged, f'base + adapter {with_}, merged weights {merged}'
print(f'ok: an adapter trained elsewhere scores {with_}, its merged model {merged} (base {plain})')" "$plain" "$with" "$merged" \
  || failed=$((failed + 1))
mkdir -p "$dir/ia3" && echo '{"peft_type": "IA3", "target_modules": ["k_proj"]}' > "$dir/ia3/adapter_config.json"
"$sepal" perplexity --model "$model" --data "$data/eval-none.jsonl" --adapter "$dir/ia3" 2> "$dir/err" > /dev/null
grep -q "PEFT type 'IA3' is not supported" "$dir/err" && [ "$(wc -l < "$dir/err")" -eq 1 ] && echo "ok: IA3 refused in one line" \
  || { echo "FAILED: IA3 folder: $(cat "$dir/err")"; failed=$((failed + 1)); }
exit $failed
