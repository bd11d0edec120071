#!/usr/bin/env bash
# Tuned variants behind `sepal serve-api --adapter NAME=PATH`: a LoRA adapter and a soft prompt
# trained by `sepal tune`, served beside the base model by one host (--hosts 1, f32 on the wire),
# so that sessions of all three share that host and its batches. Requests for each, all at once,
# must give the greedy texts `sepal generate --adapter` gives alone, in one process.
#   run_api_adapters_test.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1 models=$2
source "$(dirname "$0")/serve_api.sh"
model=$models/tinystories-656K
data=$models/../data/tune-tom/train.jsonl
"$sepal" tune --model "$model" --data "$data" --method lora --lora-rank 4 --lora-targets q_proj,v_proj,down_proj \
  --steps 6 --batch-size 4 --lr 0.05 --seed 2 --out "$dir/lora.h5" > /dev/null 2> "$dir/tune.err" \
  || { echo "FAILED: sepal tune --method lora"; tail -3 "$dir/tune.err"; exit 1; }
"$sepal" tune --model "$model" --data "$data" --method ptune --prompt-tokens 4 \
  --steps 6 --batch-size 4 --lr 0.1 --seed 3 --out "$dir/ptune.h5" > /dev/null 2> "$dir/tune.err" \
  || { echo "FAILED: sepal tune --method ptune"; tail -3 "$dir/tune.err"; exit 1; }
prompts=("Once upon a time" "The little dog" "Tom had a ball")
for variant in base lora ptune; do
  flags=()
  [ "$variant" != base ] && flags=(--adapter "$dir/$variant.h5")
  for p in "${prompts[@]}"; do
    "$sepal" generate --model "$model" --prompt "$p" --max-new-tokens 20 --json "${flags[@]}" 2> "$dir/gen.err" \
      | /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin); p=sys.argv[2]; assert r["text"].startswith(p); print(json.dumps({"model": sys.argv[1], "prompt": p, "completion": r["text"][len(p):]}))' "$variant" "$p" \
      >> "$dir/expected.jsonl" || { echo "FAILED: sepal generate ($variant)"; cat "$dir/gen.err"; exit 1; }
  done
done
start_server "$sepal" --model "$model" --model-name base --hosts 1 --no-wire-compression \
  --adapter "lora=$dir/lora.h5" --adapter "ptune=$dir/ptune.h5"
status=0
/usr/bin/python3 - "http://127.0.0.1:$port/v1" "$dir/expected.jsonl" <<'PY' || status=1
import json, sys, threading, urllib.request
base, expected = sys.argv[1], [json.loads(l) for l in open(sys.argv[2])]
models = sorted(m["id"] for m in json.load(urllib.request.urlopen(f"{base}/models"))["data"])
ok = models == ["base", "lora", "ptune"]
print(("ok" if ok else "FAILED") + f": /v1/models lists {models}")
got = [None] * len(expected)
def ask(i, e):
    body = json.dumps({"model": e["model"], "prompt": e["prompt"], "max_tokens": 20, "temperature": 0}).encode()
    req = urllib.request.Request(f"{base}/completions", body, {"Content-Type": "application/json"})
    got[i] = json.load(urllib.request.urlopen(req))["choices"][0]["text"]
threads = [threading.Thread(target=ask, args=(i, e)) for i, e in enumerate(expected)]
for t in threads: t.start()
for t in threads: t.join()
for e, g in zip(expected, got):
    same = g == e["completion"]
    ok &= same
    print(("ok" if same else "FAILED") + f": {e['model']}: {g!r} == {e['completion']!r}")
variants = {e["model"]: set() for e in expected}
for e in expected: variants[e["model"]].add(e["completion"])
differ = variants["base"] != variants["lora"] and variants["base"] != variants["ptune"]
print(("ok" if differ else "FAILED") + ": the variants' texts differ from the base model's")
sys.exit(0 if ok and differ else 1)
PY
stop_server || status=1
grep "batches of sessions" "$dir/server.err"
[ $status -eq 0 ] && echo "PASSED" || { echo "--- server log"; cat "$dir/server.err"; }
exit $status
