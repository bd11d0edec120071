#!/usr/bin/env bash
# Block hosts on a GPU (label gpu): `sepal generate --hosts 2 --device cuda` (two host processes on
# GPU 0, f32 hidden states) must give every reference generation; with int8 weights it must
# generate, and its perplexity through the hosts must equal one process's on the GPU; deep prompt
# tuning through the hosts must give one process's losses on the GPU.
#   run_gpu_hosts_test.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$2
source "$(dirname "$0")/../../scripts/mpi_env.sh"
out=$(mktemp -d)
trap 'rm -rf "$out"; clean_mpi_leftovers' EXIT
checked=0; failed=0
for ref in "$models"/reference/*.greedy.json; do
  read -r model prompt max_new layers < <(/usr/bin/python3 "$(dirname "$0")/reference_fields.py" "$ref" "$models")
  [ "$layers" -ge 2 ] || continue
  prompt=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1].replace("\u0001"," ")))' "$prompt")
  timeout 300 "$sepal" generate --model "$models/$model" --prompt "$prompt" --max-new-tokens "$max_new" \
    --hosts 2 --device cuda --no-wire-compression --json > "$out/run.json" 2> "$out/err.log"
  if /usr/bin/python3 - "$out/run.json" "$ref" <<'PY'
import json, sys
d, r = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
sys.exit(0 if d["generated_ids"] == r["generated_ids"] and d["stats"]["failovers"] == 0 else 1)
PY
  then checked=$((checked + 1)); echo "ok: $model through 2 GPU hosts"
  else failed=$((failed + 1)); echo "FAILED: $model through 2 GPU hosts"; tail -5 "$out/err.log"; fi
done
# int8 through the hosts against one process on the GPU.
text="$out/t.txt"
for i in 1 2 3 4; do echo "Once upon a time, there was a little girl named Lily. She liked to play in the park."; echo; done > "$text"
one=$(timeout 300 "$sepal" perplexity --model "$models/stories260K" --text "$text" --dtype int8 --device cuda --json 2>/dev/null)
two=$(timeout 300 "$sepal" perplexity --model "$models/stories260K" --text "$text" --dtype int8 --device cuda --hosts 2 \
      --no-wire-compression --json 2>/dev/null)
if /usr/bin/python3 -c 'import json,sys; a,b=json.loads(sys.argv[1]),json.loads(sys.argv[2]); sys.exit(0 if abs(a["perplexity"]-b["perplexity"])<=1e-6*a["perplexity"] else 1)' "$one" "$two"
then echo "ok: int8 perplexity through 2 GPU hosts equals one process's"
else failed=$((failed + 1)); echo "FAILED: int8 perplexity through 2 GPU hosts: $one / $two"; fi
# Deep prompt tuning through the hosts (their training passes on the GPU) against one process on the GPU.
for i in 1 2 3 4; do echo '{"text": "Tom had a red car. He liked to drive it to the park with his dog."}'; done > "$out/d.jsonl"
tune() {
  timeout 300 "$sepal" tune --model "$models/stories260K" --data "$out/d.jsonl" --method deep-ptune --prompt-tokens 4 \
    --steps 3 --batch-size 2 --lr 0.1 --device cuda --out "$out/$1.h5" --log "$out/$1.log" "${@:2}" > /dev/null 2>&1
}
tune one && tune two --hosts 2 --no-wire-compression
if /usr/bin/python3 - "$out/one.log" "$out/two.log" <<'PY'
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(f) if '"loss"' in l] for f in sys.argv[1:])
sys.exit(0 if len(a) == 3 and len(b) == 3 and all(abs(x - y) <= 1e-6 * abs(x) for x, y in zip(a, b)) else 1)
PY
then echo "ok: deep prompt tuning through 2 GPU hosts gives one process's losses"
else failed=$((failed + 1)); echo "FAILED: deep prompt tuning through 2 GPU hosts"; cat "$out/one.log" "$out/two.log"; fi
echo "gpu hosts: $checked references, $failed failures"
[ "$failed" -eq 0 ] && [ "$checked" -ge 2 ]
