#!/usr/bin/env bash
# Cohere's and GLM-4's blocks through the command line, on synthetic Cohere (LayerNorms, parallel
# blocks, RoPE over adjacent pairs, per-head q and k norms), Cohere 2 (a window of 5 on 3 of its 4
# blocks, which alone rotate) and GLM-4 (q, k, v biases, half of each head rotating in adjacent
# pairs, gate_up_proj fused, output norms) checkpoints written by `sepal synth`:
# - greedy ids over `--hosts 2` (f32 on the wire) are one process's, at f32 and int8;
# - `sepal quantize` writes an int8 copy that generates what `--dtype int8` of the float one does,
#   at under a third of the size;
# - `sepal perplexity` over hosts is one process's;
# - `sepal tune --method lora` (q, v and down) has one process's losses through 2 hosts, bit for
#   bit, and `generate --adapter` reads its checkpoint; `--method peqa` trains and
#   `quantize --adapter` folds it into an int8 copy with the adapted model's perplexity (to 1e-3),
#   Cohere's and GLM-4's (whose gate and up scales are rows of gate_up_proj's).
#   run_cohere_glm_test.sh SEPAL_BINARY
set -uo pipefail
sepal=$1
out=$(mktemp -d)
source "$(dirname "$0")/../../scripts/mpi_env.sh"
trap 'rm -rf "$out"; clean_mpi_leftovers' EXIT
source "$(dirname "$0")/cli_checks.sh"

for arch in cohere cohere2 glm4; do
  "$sepal" synth --arch "$arch" --out "$out/$arch" --hidden 64 --intermediate 96 --layers 4 --heads 4 --kv-heads 2 \
    --vocab 300 --seed 11 2> /dev/null || { echo "FAILED: synth $arch"; exit 1; }
done
check grep -q '"use_qk_norm": true' "$out/cohere/config.json"
check grep -q '"logit_scale": 0.0625' "$out/cohere/config.json"
/usr/bin/python3 - "$out/cohere2/config.json" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
assert config["sliding_window_pattern"] == 4, config
config["sliding_window"] = 5  # shorter than the prompts and the generated text
json.dump(config, open(sys.argv[1], "w"))
PY

printf 'Once upon a time there was a little dog. It liked to run in the park with its friends.\n' > "$out/text.txt"
for model in cohere cohere2 glm4; do
  for dtype in f32 int8; do check_hosts_generate "$out/$model" "$dtype"; done
  check_int8_checkpoint "$out/$model"
  check_hosts_perplexity "$out/$model" "$out/text.txt"
done

for i in $(seq 1 12); do echo "The cat sat on the mat and looked at the bird number $i."; echo; done > "$out/data.txt"
for model in cohere cohere2 glm4; do
  for hosts in 1 2; do
    timeout 300 "${plain_env[@]}" "$sepal" tune --model "$out/$model" --data "$out/data.txt" --method lora --lora-rank 2 \
      --lora-targets q_proj,v_proj,down_proj --steps 3 --batch-size 2 --lr 0.01 --out "$out/$model-$hosts.h5" \
      --log "$out/$model-$hosts.jsonl" $([ "$hosts" = 2 ] && echo "--hosts 2 --no-wire-compression") > /dev/null 2> "$out/$model-$hosts.err"
    check test $? -eq 0 || tail -3 "$out/$model-$hosts.err"
  done
  check test "$(losses "$out/$model-1.jsonl")" = "$(losses "$out/$model-2.jsonl")" \
    || echo "$model losses: one process $(losses "$out/$model-1.jsonl"), two hosts $(losses "$out/$model-2.jsonl")"
  check test "$(losses "$out/$model-1.jsonl" | tr -cd ',' | wc -c)" -eq 2
  "$sepal" generate --model "$out/$model" --adapter "$out/$model-1.h5" --prompt "The cat" --max-new-tokens 4 > /dev/null 2> "$out/gen.err"
  check test $? -eq 0 || tail -2 "$out/gen.err"
done

# PEQA on the int8 scales (every projection's), folded into an int8 copy that scores what the adapted
# model does.
echo '{"prompt": "The cat", "completion": " sat on the mat and looked at the bird."}' > "$out/eval.jsonl"
for model in cohere glm4; do
  "$sepal" tune --model "$out/$model" --data "$out/data.txt" --method peqa --dtype int8 --steps 3 --batch-size 2 --lr 0.05 \
    --out "$out/$model-peqa.h5" > /dev/null 2> "$out/peqa.err"
  check test $? -eq 0 || tail -3 "$out/peqa.err"
  "$sepal" quantize --model "$out/$model" --adapter "$out/$model-peqa.h5" --out "$out/$model-peqa" 2> "$out/fold.err"
  check test $? -eq 0 || tail -3 "$out/fold.err"
  adapted=$("$sepal" perplexity --model "$out/$model" --dtype int8 --adapter "$out/$model-peqa.h5" --data "$out/eval.jsonl" --json 2> /dev/null | ppl)
  folded=$("$sepal" perplexity --model "$out/$model-peqa" --dtype int8 --data "$out/eval.jsonl" --json 2> /dev/null | ppl)
  base=$("$sepal" perplexity --model "$out/$model" --dtype int8 --data "$out/eval.jsonl" --json 2> /dev/null | ppl)
  check test -n "$adapted"
  # The folded scales round once where the adapter's rescaling rounds twice; where that moves a
  # token's largest activation, the next int8 product quantizes the whole row differently. On these
  # random models that has been up to 1.6e-4 of the score (glm4, depending on the trained values);
  # the adapter itself moves it by 0.7% (cohere) and 14% (glm4).
  check /usr/bin/python3 -c 'import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(a - b) > 1e-3 * a)' "$adapted" "$folded" \
    || echo "$model PEQA: adapted $adapted, folded into the checkpoint $folded"
  check /usr/bin/python3 -c 'import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(a - b) < 3e-3 * b)' "$adapted" "$base" \
    || echo "$model PEQA moved the score by less than 0.3% ($adapted against $base): the check above would not see a fold left out"
done
exit $failed
