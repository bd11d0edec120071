#!/usr/bin/env bash
# `sepal serve-api` over a 3-host swarm (spawned with --hosts 3, f32 on the wire, an API key),
# called by the official OpenAI client from the npm registry (openai_client_test.cjs): its greedy
# texts must be the ones `sepal generate` writes in one process. Then SIGTERM: the server ends
# cleanly, with every host, and reports the client that left mid-stream.
#   run_openai_client_test.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1 models=$2
model=$models/stories260K
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../scripts/mpi_env.sh"
dir=$(mktemp -d)
server=0
cleanup() {
  [ "$server" -gt 0 ] && kill -9 "$server" 2> /dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
command -v node > /dev/null && command -v npm > /dev/null || { echo "FAILED: node and npm are needed (scripts/install-deps.sh)"; exit 1; }
(cd "$dir" && timeout 120 npm pack --silent openai@6.49.0 > /dev/null && tar xzf openai-6.49.0.tgz) \
  || { echo "FAILED: cannot fetch openai from the npm registry"; exit 1; }
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
echo "sk-sepal-test-$RANDOM$RANDOM" > "$dir/keys"
"$sepal" serve-api --model "$model" --port 0 --hosts 3 --no-wire-compression --api-key-file "$dir/keys" \
  > "$dir/server.out" 2> "$dir/server.err" &
server=$!
for _ in $(seq 1 240); do grep -q "serving" "$dir/server.err" && break; kill -0 $server 2> /dev/null || break; sleep 0.25; done
port=$(sed -n 's/.*at http:\/\/127.0.0.1:\([0-9]*\)\/v1.*/\1/p' "$dir/server.err")
[ -n "$port" ] || { echo "FAILED: the server did not start"; cat "$dir/server.err"; exit 1; }
status=0
timeout 240 node "$here/openai_client_test.cjs" "$dir/package" "http://127.0.0.1:$port/v1" stories260K "$(cat "$dir/keys")" \
  "$dir/expected.json" || status=1
kill -TERM $server
for _ in $(seq 1 80); do kill -0 $server 2> /dev/null || break; sleep 0.25; done
if kill -0 $server 2> /dev/null; then echo "FAILED: the server did not end within 20 s of SIGTERM"; status=1; fi
wait $server; code=$?
server=0
[ $code -eq 0 ] || { echo "FAILED: the server exited with $code"; status=1; }
grep -q "1 clients left mid-stream" "$dir/server.err" || { echo "FAILED: the departed client was not counted"; status=1; }
if pgrep -f "sepal serve --join" > /dev/null && pgrep -f "$dir" > /dev/null; then echo "FAILED: a host outlived the server"; status=1; fi
tail -3 "$dir/server.err"
[ $status -eq 0 ] && echo "PASSED" || { echo "--- server log"; cat "$dir/server.err"; }
exit $status
