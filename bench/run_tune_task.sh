#!/usr/bin/env bash
# A prompt-tuning task made from a model and a hard prompt, and how much of the hard prompt's
# effect a soft prompt learns (the recipe of ../shared/data/tune-tom):
#   1. the model writes TRAIN + EVAL stories after the hard prompt (temperature 0.9, one seed each);
#   2. train.jsonl holds the stories alone ({"text"}); eval-none.jsonl scores held-out stories
#      with no prompt, eval-hard.jsonl after the hard prompt;
#   3. ptune and deep-ptune train on train.jsonl (the hard prompt never shown), and each tuned
#      prompt is scored on eval-none.jsonl.
# Prints the losses and the fraction of the gap (no prompt -> hard prompt) each method recovers,
# and writes bench/results/tune-task-NAME.csv and the loss curves (tune-task-NAME-METHOD.png).
#   bench/run_tune_task.sh MODEL_DIR "HARD PROMPT" [NAME] [TRAIN] [EVAL]
# Settings: SEPAL_TUNE_STEPS (60), SEPAL_TUNE_TOKENS (8), SEPAL_TUNE_LR (0.1), SEPAL_TUNE_BATCH (8),
# SEPAL_TUNE_STORY_TOKENS (160).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/run_tune_task.sh MODEL_DIR \"HARD PROMPT\" [NAME] [TRAIN] [EVAL]" >&2; exit 2; }
model=$1 hard=$2 name=${3:-task} train=${4:-240} eval=${5:-60}
steps=${SEPAL_TUNE_STEPS:-60} tokens=${SEPAL_TUNE_TOKENS:-8} lr=${SEPAL_TUNE_LR:-0.1} batch=${SEPAL_TUNE_BATCH:-8}
story_tokens=${SEPAL_TUNE_STORY_TOKENS:-160}
[ -x build/bin/sepal ] || scripts/build.sh
work=$(mktemp -d /tmp/sepal-tune-task.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p bench/results
/usr/bin/python3 - "$hard" "$((train + eval))" > "$work/prompts.jsonl" <<'PY'
import json, sys
for seed in range(1, int(sys.argv[2]) + 1):
    print(json.dumps({"prompt": sys.argv[1], "seed": seed}))
PY
echo "writing $((train + eval)) stories after: $hard" >&2
build/bin/sepal generate --model "$model" --prompts-file "$work/prompts.jsonl" --temperature 0.9 \
  --max-new-tokens "$story_tokens" --json 2>/dev/null > "$work/stories.jsonl"
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
nll() { build/bin/sepal perplexity --model "$model" --data "$@" --json 2>/dev/null | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["nll"])'; }
none=$(nll "$work/eval-none.jsonl")
with_hard=$(nll "$work/eval-hard.jsonl")
csv=bench/results/tune-task-$name.csv
echo "method,steps,prompt_tokens,eval_nll,none_nll,hard_nll,gap_recovered" > "$csv"
echo "no prompt: $none   hard prompt: $with_hard"
for method in ptune deep-ptune; do
  build/bin/sepal tune --model "$model" --data "$work/train.jsonl" --method "$method" --prompt-tokens "$tokens" \
    --steps "$steps" --batch-size "$batch" --lr "$lr" --warmup $((steps / 10)) --seed 1 --out "$work/$method.h5" \
    --log "$work/$method.jsonl" 2>/dev/null >/dev/null
  tuned=$(nll "$work/eval-none.jsonl" --adapter "$work/$method.h5")
  recovered=$(/usr/bin/python3 -c "print(round(($none - $tuned) / ($none - $with_hard), 3))")
  echo "$method,$steps,$tokens,$tuned,$none,$with_hard,$recovered" >> "$csv"
  echo "$method: $tuned (recovers $recovered of the gap)"
  cp "$work/$method.jsonl" "bench/results/tune-task-$name-$method.jsonl"
  bench/plot_loss.py "bench/results/tune-task-$name-$method.jsonl" "bench/results/tune-task-$name-$method.png" >/dev/null
done
echo "wrote $csv"
