#!/usr/bin/env bash
# Writes a held-out text for perplexity checks: stories sampled from a model (f32, temperature 1,
# seeds 1, 2, ...) until the text holds at least TOKENS tokens of that model's tokenizer, as
# sepal perplexity counts them. Stories are separated by blank lines; blank lines inside a story
# are dropped so that each story stays one document, and special tokens (the EOS) are dropped.
#   bench/make_heldout_text.sh SEPAL_BINARY MODEL_DIR OUT_FILE [TOKENS]   (default 20000)
set -euo pipefail
sepal=$1; model=$2; out=$3; want=${4:-20000}
: > "$out"
# Stories are sampled 32 seeds to a process (--prompts-file gives each what it gives alone) and
# taken in seed order until the text is long enough: the text of one process a story.
tokens=0; seed=0
while [ "$tokens" -lt "$want" ]; do
  /usr/bin/python3 -c 'import json,sys; [print(json.dumps({"prompt": "", "seed": s})) for s in range(int(sys.argv[1]) + 1, int(sys.argv[1]) + 33)]' \
    "$seed" > "$out.prompts"
  "$sepal" generate --model "$model" --prompts-file "$out.prompts" --temperature 1 --max-new-tokens 400 --json \
    2>/dev/null > "$out.batch" || { echo "make_heldout_text: $model did not generate" >&2; exit 1; }
  read -r seed tokens < <(/usr/bin/python3 - "$out.batch" "$out" "$seed" "$tokens" "$want" <<'PY'
import json, re, sys
batch, out, seed, tokens, want = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
with open(out, "a") as f:
    for line in open(batch):
        if tokens >= want:
            break
        d = json.loads(line)
        seed += 1
        text = re.sub(r"<\|[a-z_]+\|>|</s>", "", d["text"])  # special tokens such as the EOS are not text
        text = "\n".join(l for l in text.strip().splitlines() if l.strip())
        if text:
            f.write(text + "\n\n")
        tokens += len(d["generated_ids"])
print(seed, tokens)
PY
)
  if [ "$seed" -ge 2000 ] && [ "$tokens" -lt "$want" ]; then
    echo "make_heldout_text: $model gave only $tokens tokens in 2000 samples" >&2; exit 1
  fi
done
rm -f "$out.prompts" "$out.batch"
echo "make_heldout_text: $seed stories, about $tokens tokens, in $out" >&2
