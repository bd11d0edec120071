#!/usr/bin/env bash
# One distributed greedy generation (3 block hosts over UCX, host-to-host push, f32 hidden
# states) of every reference of stories260K and tinystories-656K: the text must be the reference.
#   run_generate_once.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$2
source "$(dirname "$0")/../../scripts/mpi_env.sh"
out=$(mktemp -d)
trap 'rm -rf "$out"; clean_mpi_leftovers' EXIT
failed=0
for ref in "$models"/reference/stories260K*.greedy.json "$models"/reference/tinystories-656K*.greedy.json; do
  [ -f "$ref" ] || continue
  read -r model max_new < <(/usr/bin/python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["model"], r["max_new_tokens"])' "$ref")
  prompt=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["prompt"])' "$ref")
  start=$EPOCHREALTIME
  timeout 240 mpirun -np 3 --enable-recovery "$sepal" generate --model "$models/$model" --prompt "$prompt" \
    --max-new-tokens "$max_new" --no-wire-compression --json > "$out/run.json" 2> "$out/err.log"
  rc=$?
  if /usr/bin/python3 - "$out/run.json" "$ref" <<'PY'
import json, sys
d, r = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
sys.exit(0 if d["generated_ids"] == r["generated_ids"] and d["stats"]["failovers"] == 0 else 1)
PY
  then awk -v a="$start" -v b="$EPOCHREALTIME" -v n="$(basename "$ref")" 'BEGIN { printf "ok: %s in %.1f s\n", n, b - a }'
  else echo "FAILED: $(basename "$ref") (mpirun exit $rc)"; tail -5 "$out/err.log"; failed=$((failed + 1))
  fi
done
[ "$failed" -eq 0 ]
