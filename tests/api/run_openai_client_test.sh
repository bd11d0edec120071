#!/usr/bin/env bash
# `sepal serve-api` over a 3-host swarm (spawned with --hosts 3, f32 on the wire, an API key),
# called by the official OpenAI client from the npm registry (openai_client_test.cjs): its greedy
# texts must be the ones `sepal generate` writes in one process, with logit_bias and presence and
# frequency penalties too. Then SIGTERM: the server ends
# cleanly, with every host, and reports the client that left mid-stream.
#   run_openai_client_test.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1 models=$2
model=$models/stories260K
source "$(dirname "$0")/serve_api.sh"
npm_fetch_pack "$dir" openai@6.49.0
prompts=("Once upon a time" "The little dog" "Lily and Tom went to the park." "One day, a bird" "Sam had a red ball"
         "The sun was hot" "Mom said" "There was a big tree")
for p in "${prompts[@]}"; do printf '{"prompt": "%s"}\n' "$p"; done > "$dir/prompts.jsonl"
"$sepal" generate --model "$model" --prompts-file "$dir/prompts.jsonl" --max-new-tokens 24 --json 2> "$dir/generate.err" \
  > "$dir/generate.jsonl" || { echo "FAILED: sepal generate"; cat "$dir/generate.err"; exit 1; }
/usr/bin/python3 - "$dir" <<'PY' || exit 1
import json, sys
d = sys.argv[1]
prompts = [json.loads(l)["prompt"] for l in open(f"{d}/prompts.jsonl")]
rows = [json.loads(l) for l in open(f"{d}/generate.jsonl")]
out = []
for p, r in zip(prompts, rows):
    assert r["text"].startswith(p), (p, r["text"])
    assert len(r["generated_ids"]) == 24, "a reference stopped early: " + p
    out.append({"prompt": p, "completion": r["text"][len(p):]})
json.dump(out, open(f"{d}/expected.json", "w"))
PY
# Logit adjustments: the first prompt's greedy text with its first token banned and penalties on
# repeats, as `sepal generate` writes it with the same flags.
first=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["generated_ids"][0])' "$dir/generate.jsonl")
"$sepal" generate --model "$model" --prompt "${prompts[0]}" --max-new-tokens 24 --json --logit-bias "$first=-100" \
  --logit-bias 13=2.5 --presence-penalty 0.3 --frequency-penalty 0.8 2> "$dir/adjusted.err" \
  | /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin); p=sys.argv[1]; assert r["text"].startswith(p); json.dump({"prompt": p, "completion": r["text"][len(p):], "logit_bias": {sys.argv[2]: -100, "13": 2.5}, "presence_penalty": 0.3, "frequency_penalty": 0.8}, open(sys.argv[3], "w"))' \
    "${prompts[0]}" "$first" "$dir/adjusted.json" || { echo "FAILED: sepal generate with logit adjustments"; cat "$dir/adjusted.err"; exit 1; }
echo "sk-sepal-test-$RANDOM$RANDOM" > "$dir/keys"
start_server "$sepal" --model "$model" --hosts 3 --no-wire-compression --api-key-file "$dir/keys"
status=0
timeout 240 node "$(dirname "$0")/openai_client_test.cjs" "$dir/package" "http://127.0.0.1:$port/v1" stories260K "$(cat "$dir/keys")" \
  "$dir/expected.json" "$dir/adjusted.json" || status=1
stop_server || status=1
grep -q "1 clients left mid-stream" "$dir/server.err" || { echo "FAILED: the departed client was not counted"; status=1; }
tail -3 "$dir/server.err"
[ $status -eq 0 ] && echo "PASSED" || { echo "--- server log"; cat "$dir/server.err"; }
exit $status
