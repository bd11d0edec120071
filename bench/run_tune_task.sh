#!/usr/bin/env bash
# A prompt-tuning task made from a model and a hard prompt, and how much of the hard prompt's
# effect a soft prompt learns (the recipe of ../shared/data/tune-tom):
#   1. the model writes TRAIN + EVAL stories after the hard prompt (temperature 0.9, one seed each);
#   2. train.jsonl holds the stories alone ({"text"}); eval-none.jsonl scores held-out stories
#      with no prompt, eval-hard.jsonl after the hard prompt;
#   3. ptune, deep-ptune, peqa (int8 weights) and lora train on train.jsonl (the hard prompt never
#      shown), and each tuned model is scored on eval-none.jsonl.
# Prints the losses and the fraction of the gap (no prompt -> hard prompt) each method recovers
# (peqa's against the int8 model's own gap), and writes bench/results/tune-task-NAME.csv and the
# loss curves (tune-task-NAME-METHOD.png).
#   bench/run_tune_task.sh MODEL_DIR "HARD PROMPT" [NAME] [TRAIN] [EVAL]
# Settings: SEPAL_TUNE_STEPS (60), SEPAL_TUNE_TOKENS (8), SEPAL_TUNE_LR (0.1), SEPAL_TUNE_BATCH (8),
# SEPAL_TUNE_STORY_TOKENS (160), SEPAL_TUNE_LORA_LR (0.01), SEPAL_TUNE_LORA_RANK (8),
# SEPAL_TUNE_LORA_TARGETS (every projection), SEPAL_TUNE_PEQA_LR (0.1),
# SEPAL_TUNE_METHODS (the methods to train, default "ptune deep-ptune peqa lora"),
# SEPAL_TUNE_DATA (a folder that keeps the stories: written on the first run, reused after).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/run_tune_task.sh MODEL_DIR \"HARD PROMPT\" [NAME] [TRAIN] [EVAL]" >&2; exit 2; }
model=$1 hard=$2 name=${3:-task} train=${4:-240} eval=${5:-60}
steps=${SEPAL_TUNE_STEPS:-60} tokens=${SEPAL_TUNE_TOKENS:-8} lr=${SEPAL_TUNE_LR:-0.1} batch=${SEPAL_TUNE_BATCH:-8}
story_tokens=${SEPAL_TUNE_STORY_TOKENS:-160}
lora_lr=${SEPAL_TUNE_LORA_LR:-0.01} lora_rank=${SEPAL_TUNE_LORA_RANK:-8} peqa_lr=${SEPAL_TUNE_PEQA_LR:-0.1}
lora_targets=${SEPAL_TUNE_LORA_TARGETS:-q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj}
[ -x build/bin/sepal ] || scripts/build.sh
methods=${SEPAL_TUNE_METHODS:-ptune deep-ptune peqa lora}
for method in $methods; do
  case $method in ptune|deep-ptune|peqa|lora) ;; *) echo "run_tune_task.sh: unknown method '$method' in SEPAL_TUNE_METHODS" >&2; exit 2 ;; esac
done
work=$(mktemp -d /tmp/sepal-tune-task.XXXXXX)
trap 'rm -rf "$work"' EXIT
data=${SEPAL_TUNE_DATA:-$work}
mkdir -p bench/results "$data"
if [ -s "$data/train.jsonl" ] && [ -s "$data/eval-none.jsonl" ] && [ -s "$data/eval-hard.jsonl" ]; then
  echo "reusing the stories in $data" >&2
else
/usr/bin/python3 - "$hard" "$((train + eval))" > "$work/prompts.jsonl" <<'PY'
import json, sys
for seed in range(1, int(sys.argv[2]) + 1):
    print(json.dumps({"prompt": sys.argv[1], "seed": seed}))
PY
echo "writing $((train + eval)) stories after: $hard" >&2
# In files of 4096 prompts, the most one generate takes.
split -l 4096 "$work/prompts.jsonl" "$work/prompts-part-"
: > "$work/stories.jsonl"
for part in "$work"/prompts-part-*; do
  build/bin/sepal generate --model "$model" --prompts-file "$part" --temperature 0.9 \
    --max-new-tokens "$story_tokens" --json 2> "$work/generate.err" >> "$work/stories.jsonl" \
    || { echo "run_tune_task.sh: generating the stories failed: $(tail -1 "$work/generate.err")" >&2; exit 1; }
done
/usr/bin/python3 - "$hard" "$train" "$work" <<'PY'
import json, sys
hard, train, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
stories = []
for line in open(f"{work}/stories.jsonl"):
    row = json.loads(line)
    story = row["text"][len(hard):].strip() if row["text"].startswith(hard) else row["text"].strip()
    if story:
        stories.append(story)
with open(f"{work}/train.jsonl", "w") as t, open(f"{work}/eval-none.jsonl", "w") as n, open(f"{work}/eval-hard.jsonl", "w") as h:
    for i, story in enumerate(stories):
        if i < train:
            t.write(json.dumps({"text": story}) + "\n")
        else:
            n.write(json.dumps({"prompt": "", "completion": story}) + "\n")
            h.write(json.dumps({"prompt": hard, "completion": " " + story}) + "\n")
PY
[ "$data" = "$work" ] || cp "$work/train.jsonl" "$work/eval-none.jsonl" "$work/eval-hard.jsonl" "$data/"
fi
nll() { build/bin/sepal perplexity --model "$model" --data "$@" --json 2>/dev/null | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["nll"])'; }
none=$(nll "$data/eval-none.jsonl")
with_hard=$(nll "$data/eval-hard.jsonl")
none_int8=$(nll "$data/eval-none.jsonl" --dtype int8)
hard_int8=$(nll "$data/eval-hard.jsonl" --dtype int8)
csv=bench/results/tune-task-$name.csv
echo "method,steps,settings,eval_nll,none_nll,hard_nll,gap_recovered" > "$csv"
echo "no prompt: $none   hard prompt: $with_hard   (int8: $none_int8, $hard_int8)"
for method in $methods; do
  case $method in
    ptune|deep-ptune) flags=(--prompt-tokens "$tokens" --lr "$lr"); scoring=(); base=$none; hard_base=$with_hard
                      what="$tokens tokens, lr $lr" ;;
    peqa) flags=(--dtype int8 --lr "$peqa_lr"); scoring=(--dtype int8); base=$none_int8; hard_base=$hard_int8
          what="every projection's scales, lr $peqa_lr" ;;
    lora) flags=(--lora-rank "$lora_rank" --lora-targets "$lora_targets" --lr "$lora_lr"); scoring=(); base=$none
          hard_base=$with_hard; what="rank $lora_rank on $lora_targets, lr $lora_lr" ;;
  esac
  build/bin/sepal tune --model "$model" --data "$data/train.jsonl" --method "$method" "${flags[@]}" \
    --steps "$steps" --batch-size "$batch" --warmup $((steps / 10)) --seed 1 --out "$work/$method.h5" \
    --log "$work/$method.jsonl" 2>/dev/null >/dev/null
  tuned=$(nll "$data/eval-none.jsonl" --adapter "$work/$method.h5" ${scoring[@]+"${scoring[@]}"})
  recovered=$(/usr/bin/python3 -c "print(round(($base - $tuned) / ($base - $hard_base), 3))")
  echo "$method,$steps,\"$what\",$tuned,$base,$hard_base,$recovered" >> "$csv"
  echo "$method ($what): $tuned (recovers $recovered of the gap)"
  cp "$work/$method.jsonl" "bench/results/tune-task-$name-$method.jsonl"
  bench/plot_loss.py "bench/results/tune-task-$name-$method.jsonl" "bench/results/tune-task-$name-$method.png" >/dev/null
done
echo "wrote $csv"
