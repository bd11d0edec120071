#!/usr/bin/env bash
# Writes a held-out text for perplexity checks: stories sampled from a model (f32, temperature 1,
# seeds 1, 2, ...) until the text holds at least TOKENS tokens of that model's tokenizer, as
# sepal perplexity counts them. Stories are separated by blank lines; blank lines inside a story
# are dropped so that each story stays one document, and special tokens (the EOS) are dropped.
#   bench/make_heldout_text.sh SEPAL_BINARY MODEL_DIR OUT_FILE [TOKENS]   (default 20000)
set -euo pipefail
sepal=$1; model=$2; out=$3; want=${4:-20000}
: > "$out"
tokens=0; seed=0
while [ "$tokens" -lt "$want" ]; do
  seed=$((seed + 1))
  "$sepal" generate --model "$model" --prompt "" --temperature 1 --seed "$seed" --max-new-tokens 400 --json 2>/dev/null |
    /usr/bin/python3 -c '
import json, re, sys
d = json.load(sys.stdin)
text = re.sub(r"<\|[a-z_]+\|>|</s>", "", d["text"])  # special tokens such as the EOS are not text
text = "\n".join(line for line in text.strip().splitlines() if line.strip())
if text:
    print(text + "\n")
print(len(d["generated_ids"]), file=sys.stderr)' >> "$out" 2> "$out.count"
  tokens=$((tokens + $(cat "$out.count")))
  if [ "$seed" -gt 2000 ]; then echo "make_heldout_text: $model gave only $tokens tokens in 2000 samples" >&2; exit 1; fi
done
rm -f "$out.count"
echo "make_heldout_text: $seed stories, about $tokens tokens, in $out" >&2
