#!/usr/bin/env bash
# `mpirun -np N sepal generate --json` (rank 0 the client, N-1 block hosts) must reproduce every
# reference generation for every split into 1 to 5 hosts (as many as the model has blocks), over
# UCX and over MPI.
#   run_distributed_generate.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$2
source "$(dirname "$0")/../scripts/mpi_env.sh"
out=$(mktemp -d)
trap 'rm -rf "$out"; clean_mpi_leftovers' EXIT
checked=0; failed=0
for ref in "$models"/reference/*.greedy.json; do
  read -r model prompt max_new layers < <(/usr/bin/python3 - "$ref" "$models" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c = json.load(open(f"{sys.argv[2]}/{r['model']}/config.json"))
print(r["model"], json.dumps(r["prompt"]).replace(" ", "\u0001"), r["max_new_tokens"], c["num_hidden_layers"])
PY
)
  prompt=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1].replace("\u0001"," ")))' "$prompt")
  for transport in ucx mpi; do
    for hosts in 1 2 3 4 5; do
      [ "$hosts" -le "$layers" ] || continue
      np=$((hosts + 1))
      timeout 120 mpirun -np "$np" "$sepal" generate --model "$models/$model" --prompt "$prompt" \
        --max-new-tokens "$max_new" --transport "$transport" --json > "$out/run.json" 2> "$out/err.log"
      rc=$?
      if /usr/bin/python3 - "$out/run.json" "$ref" "$hosts" <<'PY'
import json, sys
d, r, hosts = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
ok = d["prompt_ids"] == r["prompt_ids"] and d["generated_ids"] == r["generated_ids"] and d["text"] == r["text"] \
     and d["stats"]["host_ranks"] == hosts
sys.exit(0 if ok else 1)
PY
      then echo "ok: $model over $transport with $hosts hosts"
      else echo "FAILED: $model over $transport with $hosts hosts (mpirun exit $rc)"; tail -5 "$out/err.log"; failed=$((failed + 1))
      fi
      checked=$((checked + 1))
    done
  done
done
echo "$((checked - failed)) passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$checked" -gt 0 ]
