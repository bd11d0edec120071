#!/usr/bin/env bash
# GGUF variants of stories260K, written by tests/tools/gguf_variant.py (independently of sepal):
#   - rope_freqs.weight as llama.cpp's converter writes it for Llama 3.1's RoPE scaling scores what
#     the Hugging Face folder with the same rope_scaling in config.json scores, and not what the
#     file without it scores (the factors are applied, not skipped);
#   - factors of the wrong count or sign, a tensor sepal does not read (a bias) and a mixture of
#     experts without its count of experts per token are refused in one line, exit status 1.
#   run_gguf_rope_test.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$(cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
gguf="$models/stories260K/original/stories260K.gguf"
variant() { /usr/bin/python3 "$here/gguf_variant.py" "$gguf" "$@"; }
# A held-out text without runs of spaces (the folder's SentencePiece model folds them, GGUF
# tokenizers do not), scored in windows of 512 tokens (the folder's context; the GGUF file says
# 2048): both then see the same tokens at the same positions.
"$here/../../bench/make_heldout_text.sh" "$sepal" "$models/stories260K" "$dir/raw.txt" 6000 > /dev/null || exit 1
tr -s ' ' < "$dir/raw.txt" > "$dir/text.txt"
ppl() { "$sepal" perplexity --model "$1" --text "$dir/text.txt" --context 512 --json 2> "$dir/err.log" \
        | /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["perplexity"], r["tokens"])' \
        || { tail -3 "$dir/err.log" >&2; echo nan 0; }; }
failed=0
# factor 8, low 1, high 4, original context 1024: stories260K's 4 frequencies per head get 1, 1,
# a factor between and 8 (every branch of the scaling).
variant "$dir/llama3.gguf" rope-llama3 8 1 4 1024 || exit 1
mkdir "$dir/hf"
for f in "$models/stories260K"/*; do ln -s "$f" "$dir/hf/"; done
rm "$dir/hf/config.json"
/usr/bin/python3 - "$models/stories260K/config.json" "$dir/hf/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 1024}
json.dump(c, open(sys.argv[2], "w"))
PY
read -r plain plain_tokens < <(ppl "$gguf"); read -r scaled scaled_tokens < <(ppl "$dir/llama3.gguf")
read -r hf hf_tokens < <(ppl "$dir/hf")
echo "perplexity: GGUF $plain, GGUF with rope_freqs $scaled, Hugging Face folder with llama3 rope_scaling $hf" \
  "($plain_tokens, $scaled_tokens and $hf_tokens tokens)"
[ "$scaled_tokens" = "$hf_tokens" ] && [ "$hf_tokens" -gt 5000 ] || { echo "FAILED: the two models scored different tokens"; failed=1; }
/usr/bin/python3 -c 'import sys; s,h=map(float,sys.argv[1:]); sys.exit(0 if abs(s/h-1) < 1e-5 else 1)' "$scaled" "$hf" \
  && echo "ok: rope_freqs scores as config.json's rope_scaling" || { echo "FAILED: rope_freqs does not score as rope_scaling"; failed=1; }
/usr/bin/python3 -c 'import sys; p,s=map(float,sys.argv[1:]); sys.exit(0 if abs(s/p-1) > 1e-3 else 1)' "$plain" "$scaled" \
  && echo "ok: the factors change the scores" || { echo "FAILED: rope_freqs changed nothing (skipped?)"; failed=1; }
refused() {  # refused FILE NEEDLE
  "$sepal" generate --model "$1" --prompt "Once" --max-new-tokens 2 > /dev/null 2> "$dir/refused.err"
  local rc=$?
  if [ "$rc" = 1 ] && [ "$(wc -l < "$dir/refused.err")" = 1 ] && grep -qF -- "$2" "$dir/refused.err"; then
    echo "ok: refused: $(cat "$dir/refused.err")"
  else
    echo "FAILED: exit status $rc, expected one line with: $2"; cat "$dir/refused.err"; failed=1
  fi
}
variant "$dir/three.gguf" rope-factors 1,1,8 && refused "$dir/three.gguf" "rope_freqs.weight must hold 4 factors (half of the 8 rotated dimensions), not 3"
variant "$dir/zero.gguf" rope-factors 1,1,0,8 && refused "$dir/zero.gguf" "rope_freqs.weight holds 0 (factors must be positive)"
variant "$dir/bias.gguf" tensor blk.0.attn_q.bias 64 \
  && refused "$dir/bias.gguf" "tensor blk.0.attn_q.bias is not one sepal reads (a variant of llama it does not support)"
variant "$dir/moe.gguf" u32 llama.expert_count 8 && refused "$dir/moe.gguf" "no llama.expert_used_count"
exit $failed
