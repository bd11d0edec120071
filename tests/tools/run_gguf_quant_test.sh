#!/usr/bin/env bash
# Quantized GGUF files, written by tests/tools/gguf_requant.py from stories260K's F32 GGUF with
# ggml's layouts (independently of sepal), over a held-out text of stories sampled from the model:
#   - Q8_0 weights score a perplexity within 0.1% of the F32 file's;
#   - a file mixing Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL and F16 (with the F16 fallback for rows that
#     are not whole blocks) scores what the same weights dequantized to F32 score.
#   run_gguf_quant_test.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$2
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
gguf="$models/stories260K/original/stories260K.gguf"
"$here/../../bench/make_heldout_text.sh" "$sepal" "$models/stories260K" "$dir/text.txt" 21000 > /dev/null || exit 1
ppl() { "$sepal" perplexity --model "$1" --text "$dir/text.txt" --json 2> "$dir/err.log" \
        | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["perplexity"])' || { tail -3 "$dir/err.log" >&2; echo nan; }; }
failed=0
/usr/bin/python3 "$here/gguf_requant.py" "$gguf" "$dir/q8.gguf" "$dir/q8-twin.gguf" .weight=Q8_0 > /dev/null
/usr/bin/python3 "$here/gguf_requant.py" "$gguf" "$dir/mixed.gguf" "$dir/mixed-twin.gguf" \
  attn_q.weight=Q4_0 attn_k.weight=Q4_1 attn_v.weight=Q5_0 attn_output.weight=Q5_1 ffn_gate.weight=Q8_0 \
  ffn_up.weight=IQ4_NL ffn_down.weight=Q8_0 token_embd.weight=Q8_0 output.weight=F16 > /dev/null
f32=$(ppl "$gguf"); q8=$(ppl "$dir/q8.gguf"); mixed=$(ppl "$dir/mixed.gguf"); twin=$(ppl "$dir/mixed-twin.gguf")
echo "perplexity: F32 $f32, Q8_0 $q8, mixed $mixed, mixed dequantized to F32 $twin"
/usr/bin/python3 -c 'import sys; f,q=map(float,sys.argv[1:]); sys.exit(0 if abs(q/f-1) < 1e-3 else 1)' "$f32" "$q8" \
  && echo "ok: Q8_0 within 0.1% of F32" || { echo "FAILED: Q8_0 is not within 0.1% of F32"; failed=1; }
/usr/bin/python3 -c 'import sys; m,t=map(float,sys.argv[1:]); sys.exit(0 if abs(m/t-1) < 1e-5 else 1)' "$mixed" "$twin" \
  && echo "ok: the mixed file scores its dequantized weights" || { echo "FAILED: the mixed file does not score its dequantized weights"; failed=1; }
/usr/bin/python3 -c 'import sys; f,m=map(float,sys.argv[1:]); sys.exit(0 if m/f > 1.0001 else 1)' "$f32" "$mixed" \
  && echo "ok: 4- and 5-bit weights cost perplexity" || { echo "FAILED: the mixed file scores as F32 (were the weights quantized?)"; failed=1; }
exit $failed
