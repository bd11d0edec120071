#!/usr/bin/env bash
# Mixtures of experts through the command line, on synthetic Mixtral (2 of 4 experts, a window),
# Qwen3-MoE (3 of 6 narrower experts), Qwen2-MoE (2 of 4 and a shared expert) and OLMoE (2 of 4,
# not renormalised), Granite-MoE (2 of 4, stacked), Granite-MoE-Shared (and a shared MLP) and GPT-OSS (2 of 4 biased experts, sinks, a
# window of 5 on every other block) checkpoints written by `sepal synth`, and beside them OLMo 3 (no
# input norms, a window of 5 on 3 of its 4 blocks):
# - greedy ids over `--hosts 2` (f32 on the wire) are one process's, at f32 and int8;
# - `sepal quantize` writes an int8 copy that generates what `--dtype int8` of the float one does
#   (GPT-OSS's experts one int8 matrix each, out of its transposed stacks, or of its MXFP4 ones);
# - GPT-OSS with its experts in MXFP4 (tests/tools/mxfp4_twin.py, as its released checkpoints hold
#   them) scores what the same values dequantized by that script score, and differs from the
#   float original;
# - `sepal perplexity` over hosts is one process's;
# - `sepal tune --method lora` (q and v) and `--method peqa` (every scale, the experts' too) train
#   and write checkpoints that `generate --adapter` reads; LoRA through 2 hosts has one process's
#   losses bit for bit (and OLMo 3's, on q and down_proj, GPT-OSS's, on q and o, and Mixtral's on
#   q and each expert's w1 and w2, whose generation through 2 hosts is one process's too, and
#   Qwen2-MoE's on every expert's gate and down, its shared expert's included); the PEQA-tuned int8 copy (`sepal quantize --adapter`) scores
#   what the int8 model with the adapter scores; LoRA on GPT-OSS's biased experts is refused in
#   one line, exit status 2.
#   run_moe_test.sh SEPAL_BINARY
set -uo pipefail
sepal=$1
out=$(mktemp -d)
source "$(dirname "$0")/../../scripts/mpi_env.sh"
trap 'rm -rf "$out"; clean_mpi_leftovers' EXIT
source "$(dirname "$0")/cli_checks.sh"

"$sepal" synth --arch mixtral --out "$out/mixtral" --hidden 64 --intermediate 96 --layers 4 --heads 4 --kv-heads 2 \
  --vocab 300 --experts 4 --experts-per-token 2 --seed 3 2> /dev/null || { echo "FAILED: synth mixtral"; exit 1; }
"$sepal" synth --arch qwen3moe --out "$out/qwen3moe" --hidden 64 --intermediate 96 --moe-intermediate 48 --layers 4 \
  --heads 4 --kv-heads 2 --vocab 300 --experts 6 --experts-per-token 3 --seed 4 2> /dev/null || { echo "FAILED: synth qwen3moe"; exit 1; }
"$sepal" synth --arch qwen2moe --out "$out/qwen2moe" --hidden 64 --intermediate 96 --moe-intermediate 32 --shared-intermediate 80 \
  --layers 3 --heads 4 --kv-heads 2 --vocab 300 --experts 4 --experts-per-token 2 --seed 5 2> /dev/null || { echo "FAILED: synth qwen2moe"; exit 1; }
"$sepal" synth --arch granitemoe --out "$out/granitemoe" --hidden 64 --intermediate 48 --layers 3 --heads 4 --kv-heads 2 \
  --vocab 300 --experts 4 --experts-per-token 2 --seed 8 2> /dev/null || { echo "FAILED: synth granitemoe"; exit 1; }
"$sepal" synth --arch granitemoeshared --out "$out/granitemoeshared" --hidden 64 --intermediate 48 --shared-intermediate 72 \
  --layers 3 --heads 4 --kv-heads 2 --vocab 300 --experts 4 --experts-per-token 2 --seed 10 2> /dev/null \
  || { echo "FAILED: synth granitemoeshared"; exit 1; }
"$sepal" synth --arch olmoe --out "$out/olmoe" --hidden 64 --intermediate 48 --layers 3 --heads 4 --kv-heads 2 --vocab 300 \
  --experts 4 --experts-per-token 2 --seed 6 2> /dev/null || { echo "FAILED: synth olmoe"; exit 1; }
"$sepal" synth --arch olmo3 --out "$out/olmo3" --hidden 64 --intermediate 96 --layers 4 --heads 4 --kv-heads 2 --vocab 300 \
  --seed 7 2> /dev/null || { echo "FAILED: synth olmo3"; exit 1; }
"$sepal" synth --arch gpt_oss --out "$out/gpt_oss" --hidden 64 --intermediate 96 --layers 4 --heads 4 --kv-heads 2 --head-dim 16 \
  --vocab 300 --experts 4 --experts-per-token 2 --swiglu-limit 2 --seed 9 2> /dev/null || { echo "FAILED: synth gpt_oss"; exit 1; }
/usr/bin/python3 - "$out/gpt_oss/config.json" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
assert config["layer_types"] == ["sliding_attention", "full_attention"] * 2, config["layer_types"]
config["sliding_window"] = 5
json.dump(config, open(sys.argv[1], "w"))
PY
/usr/bin/python3 - "$out/olmo3/config.json" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
assert config["layer_types"] == ["sliding_attention"] * 3 + ["full_attention"], config["layer_types"]
config["sliding_window"] = 5  # shorter than the prompts and the generated text
json.dump(config, open(sys.argv[1], "w"))
PY
check grep -q '"num_local_experts": 4' "$out/mixtral/config.json"
check grep -q '"moe_intermediate_size": 48' "$out/qwen3moe/config.json"
check grep -q '"shared_intermediate_size": 72' "$out/granitemoeshared/config.json"

for model in mixtral qwen3moe qwen2moe olmoe granitemoe granitemoeshared olmo3 gpt_oss; do
  for dtype in f32 int8; do check_hosts_generate "$out/$model" "$dtype"; done
done

# An int8 checkpoint of the mixture: its experts and routers quantized (Granite-MoE's stacks of
# experts with a scale per row of each, Granite-MoE-Shared's shared MLP's rows too), generating what
# int8 loading does, at a quarter of the size.
for model in mixtral granitemoe granitemoeshared gpt_oss; do check_int8_checkpoint "$out/$model"; done

# Perplexity over hosts equals one process's (f32 on the wire).
printf 'Once upon a time there was a little dog. It liked to run in the park with its friends.\n' > "$out/text.txt"
for model in qwen3moe gpt_oss; do check_hosts_perplexity "$out/$model" "$out/text.txt"; done

# GPT-OSS: its MXFP4 experts load as the values they stand for, and quantize as those values do.
/usr/bin/python3 "$(dirname "$0")/mxfp4_twin.py" "$out/gpt_oss" "$out/gpt_oss-mxfp4" "$out/gpt_oss-twin" || { echo "FAILED: mxfp4_twin.py"; exit 1; }
check grep -q '"experts.gate_up_proj_blocks"\|gate_up_proj_blocks' "$out/gpt_oss-mxfp4/model.safetensors"
original=$("$sepal" perplexity --model "$out/gpt_oss" --text "$out/text.txt" --json 2> /dev/null | ppl)
mxfp4=$("$sepal" perplexity --model "$out/gpt_oss-mxfp4" --text "$out/text.txt" --json 2> "$out/mxfp4.err" | ppl)
twin=$("$sepal" perplexity --model "$out/gpt_oss-twin" --text "$out/text.txt" --json 2> /dev/null | ppl)
check test -n "$mxfp4" || tail -2 "$out/mxfp4.err"
check test "$mxfp4" = "$twin" || echo "MXFP4 experts: $mxfp4, their values dequantized by the script: $twin"
check test "$mxfp4" != "$original" || echo "MXFP4 experts score what the float original does ($original): the test would not see them"
"$sepal" quantize --model "$out/gpt_oss-mxfp4" --out "$out/gpt_oss-mxfp4-int8" 2> /dev/null
int8_loaded=$("$sepal" perplexity --model "$out/gpt_oss-mxfp4" --text "$out/text.txt" --dtype int8 --json 2> /dev/null | ppl)
int8_written=$("$sepal" perplexity --model "$out/gpt_oss-mxfp4-int8" --text "$out/text.txt" --dtype int8 --json 2> /dev/null | ppl)
check test -n "$int8_loaded"
check test "$int8_loaded" = "$int8_written" || echo "MXFP4 GPT-OSS: int8 loading $int8_loaded, its int8 checkpoint $int8_written"
check test "$(grep -c quantization_config "$out/gpt_oss-mxfp4-int8/config.json")" = 0

# Training: LoRA on q and v, and on the experts; PEQA on every int8 scale; GPT-OSS's experts
# refused.
for i in $(seq 1 12); do echo "The cat sat on the mat and looked at the bird number $i."; echo; done > "$out/data.txt"
"$sepal" tune --model "$out/mixtral" --data "$out/data.txt" --method lora --lora-rank 2 --steps 3 --batch-size 2 --lr 0.01 \
  --out "$out/lora.h5" --log "$out/lora.jsonl" > /dev/null 2> "$out/lora.err"
check test $? -eq 0 || tail -3 "$out/lora.err"
check test -f "$out/lora.h5"
# The same run through 2 hosts (their blocks' backward through the experts and routers): the same losses, bit for bit.
timeout 300 "${plain_env[@]}" "$sepal" tune --model "$out/mixtral" --data "$out/data.txt" --method lora --lora-rank 2 --steps 3 \
  --batch-size 2 --lr 0.01 --out "$out/lora-hosts.h5" --log "$out/lora-hosts.jsonl" --hosts 2 --no-wire-compression \
  > /dev/null 2> "$out/lora-hosts.err"
check test $? -eq 0 || tail -3 "$out/lora-hosts.err"
check test "$(losses "$out/lora.jsonl")" = "$(losses "$out/lora-hosts.jsonl")" \
  || echo "losses: one process $(losses "$out/lora.jsonl"), two hosts $(losses "$out/lora-hosts.jsonl")"
check test "$(losses "$out/lora.jsonl" | tr -cd ',' | wc -c)" -eq 2
# OLMo 3 (the backward with no input norms, adapters on the MLP too), GPT-OSS (through sinks,
# biases and clamped experts; adapters on q and o) and Mixtral with adapters on each expert's w1
# and w2: one process and 2 hosts, the same losses.
for model in olmo3:q_proj,down_proj gpt_oss:q_proj,o_proj mixtral:q_proj,w1,w2 qwen2moe:v_proj,gate_proj,down_proj; do
  name=${model%%:*}
  for hosts in 1 2; do
    timeout 300 "${plain_env[@]}" "$sepal" tune --model "$out/$name" --data "$out/data.txt" --method lora --lora-rank 2 \
      --lora-targets "${model#*:}" --steps 3 --batch-size 2 --lr 0.01 --out "$out/$name-$hosts.h5" --log "$out/$name-$hosts.jsonl" \
      $([ "$hosts" = 2 ] && echo "--hosts 2 --no-wire-compression") > /dev/null 2> "$out/$name-$hosts.err"
    check test $? -eq 0 || tail -3 "$out/$name-$hosts.err"
  done
  check test "$(losses "$out/$name-1.jsonl")" = "$(losses "$out/$name-2.jsonl")" \
    || echo "$name losses: one process $(losses "$out/$name-1.jsonl"), two hosts $(losses "$out/$name-2.jsonl")"
  check test "$(losses "$out/$name-1.jsonl" | tr -cd ',' | wc -c)" -eq 2
done
# Generation with Mixtral's experts adapted: through 2 hosts, one process's ids.
gen_ids() { /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["generated_ids"])'; }
one=$("$sepal" generate --model "$out/mixtral" --adapter "$out/mixtral-1.h5" --prompt "The cat" --max-new-tokens 12 --json 2> /dev/null | gen_ids)
two=$(timeout 300 "${plain_env[@]}" "$sepal" generate --model "$out/mixtral" --adapter "$out/mixtral-1.h5" --prompt "The cat" \
  --max-new-tokens 12 --json --hosts 2 --no-wire-compression 2> /dev/null | gen_ids)
check test -n "$one" -a "$one" = "$two" || echo "ids with the experts' adapters: one process $one, two hosts $two"
"$sepal" tune --model "$out/qwen3moe" --data "$out/data.txt" --method peqa --dtype int8 --steps 3 --batch-size 2 --lr 0.01 \
  --out "$out/peqa.h5" > /dev/null 2> "$out/peqa.err"
check test $? -eq 0 || tail -3 "$out/peqa.err"
check test -f "$out/peqa.h5"
# Folded into an int8 copy (the experts' scales too): the same score as the adapter applied.
"$sepal" quantize --model "$out/qwen3moe" --adapter "$out/peqa.h5" --out "$out/qwen3moe-peqa" > /dev/null 2> "$out/fold.err"
check test $? -eq 0 || tail -3 "$out/fold.err"
sed -n 's/^\(The cat.*\)$/{"text": "\1"}/p' "$out/data.txt" > "$out/data.jsonl"
nll() { "$sepal" perplexity --data "$out/data.jsonl" --json "$@" 2> /dev/null | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["nll"])'; }
tuned=$(nll --model "$out/qwen3moe" --dtype int8 --adapter "$out/peqa.h5"); folded=$(nll --model "$out/qwen3moe-peqa" --dtype int8)
base=$(nll --model "$out/qwen3moe" --dtype int8)
check /usr/bin/python3 -c "
import sys
tuned, folded, base = map(float, sys.argv[1:4])
assert abs(tuned - folded) < 1e-5 * tuned, (tuned, folded)
assert abs(tuned - base) > 1e-6, ('PEQA changed nothing', tuned, base)" "$tuned" "$folded" "$base" \
  || echo "PEQA: adapter $tuned, folded $folded, base $base"
# The experts' scales were tuned and folded: an expert's SCB is not the plain int8 copy's.
"$sepal" quantize --model "$out/qwen3moe" --out "$out/qwen3moe-int8" > /dev/null 2>&1
check /usr/bin/python3 - "$out/qwen3moe-int8" "$out/qwen3moe-peqa" "$(dirname "$0")" <<'PY'
import sys
sys.path.insert(0, sys.argv[3])
import numpy as np
from safetensors_io import read_arrays
plain, folded = (read_arrays(f"{d}/model.safetensors") for d in sys.argv[1:3])
name = "model.layers.1.mlp.experts.2.down_proj.SCB"
assert plain[name].shape == folded[name].shape, name
assert not np.array_equal(plain[name], folded[name]), f"{name} is the untuned one"
assert np.array_equal(plain["model.layers.1.mlp.experts.2.down_proj.weight"], folded["model.layers.1.mlp.experts.2.down_proj.weight"])
PY
check /usr/bin/python3 - "$out/lora.h5" "$out/peqa.h5" <<'PY'
import h5py, sys
for path in sys.argv[1:]:
    with h5py.File(path, "r") as f:
        text = []
        f.visititems(lambda name, obj: text.append(name))
        joined = " ".join(text)
        assert "experts" not in joined, joined
PY
"$sepal" generate --model "$out/mixtral" --adapter "$out/lora.h5" --prompt "The cat" --max-new-tokens 4 > /dev/null 2> "$out/gen.err"
check test $? -eq 0 || tail -2 "$out/gen.err"
"$sepal" tune --model "$out/gpt_oss" --data "$out/data.txt" --method lora --lora-targets q_proj,down_proj --steps 1 \
  --batch-size 2 --lr 0.01 --out "$out/bad.h5" > /dev/null 2> "$out/bad.err"
status=$?
check test "$status" -eq 2
check test "$(wc -l < "$out/bad.err")" -eq 1
check grep -q "the experts of this mixture take no adapters (they have biases or are stacked" "$out/bad.err" || cat "$out/bad.err"
exit $failed
