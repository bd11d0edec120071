#!/usr/bin/env bash
# `mpirun -np N sepal generate --json` (rank 0 the client and balancer, N-1 block hosts) with f32
# hidden states must reproduce every reference generation for every split into 1 to 5 hosts (as
# many as the model has blocks) over UCX with host-to-host push, and with 2 hosts and the most
# over UCX with client relay and over MPI with push and relay; and `sepal generate --hosts 2` from a plain shell must too. With 8-bit compressed hidden
# states (the default) and one block a host (so one route), push and relay over UCX and MPI must
# give one same text (compression happens at every hop boundary), and each hop's
# answer must take at most 0.27 of the f32 bytes. stories260K's GGUF file gives its reference over 3
# hosts too (mpirun and spawned).
#   run_distributed_generate.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$2
source "$(dirname "$0")/../../scripts/mpi_env.sh"
out=$(mktemp -d)
trap 'rm -rf "$out"; clean_mpi_leftovers' EXIT
checked=0; failed=0
for ref in "$models"/reference/*.greedy.json; do
  read -r model prompt max_new layers < <(/usr/bin/python3 "$(dirname "$0")/reference_fields.py" "$ref" "$models")
  if [ "$layers" -eq 0 ]; then echo "skipped: $model (an architecture sepal does not run yet)"; continue; fi
  prompt=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1].replace("\u0001"," ")))' "$prompt")
  for transport in ucx mpi; do
   for mode in push relay; do
    for hosts in 1 2 3 4 5; do
      [ "$hosts" -le "$layers" ] || continue
      # Every split over UCX with push (the default); the other three ways with 2 hosts and with
      # the most, where hop boundaries and the host-to-host path differ from one host's.
      if [ "$transport/$mode" != ucx/push ] && [ "$hosts" -ne 2 ] && [ "$hosts" -ne $(( layers < 5 ? layers : 5 )) ]; then
        continue
      fi
      np=$((hosts + 1))
      timeout 120 mpirun -np "$np" "$sepal" generate --model "$models/$model" --prompt "$prompt" \
        --max-new-tokens "$max_new" --transport "$transport" --mode "$mode" --no-wire-compression --json \
        > "$out/run.json" 2> "$out/err.log"
      rc=$?
      if /usr/bin/python3 - "$out/run.json" "$ref" "$hosts" <<'PY'
import json, sys
d, r, hosts = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
s = d["stats"]
route = s["route"]
covered = route[0]["first"] == 0 and all(a["last"] == b["first"] for a, b in zip(route, route[1:])) \
          and route[-1]["last"] == d["block_map"]["num_blocks"]
ok = d["prompt_ids"] == r["prompt_ids"] and d["generated_ids"] == r["generated_ids"] and d["text"] == r["text"] \
     and s["host_ranks"] == hosts and len(d["block_map"]["hosts"]) == hosts and covered and s["failovers"] == 0
sys.exit(0 if ok else 1)
PY
      then echo "ok: $model over $transport ($mode) with $hosts hosts"
      else echo "FAILED: $model over $transport ($mode) with $hosts hosts (mpirun exit $rc)"; tail -5 "$out/err.log"; failed=$((failed + 1))
      fi
      checked=$((checked + 1))
    done
   done
  done
  # Compressed hidden states: one text whatever the mode and transport; a quarter of the bytes.
  hosts=$(( layers < 5 ? layers : 5 )); first=""  # a block each: one route, so one set of hop boundaries
  for transport in ucx mpi; do
    for mode in push relay; do
      timeout 120 mpirun -np $((hosts + 1)) "$sepal" generate --model "$models/$model" --prompt "$prompt" \
        --max-new-tokens "$max_new" --transport "$transport" --mode "$mode" --json > "$out/run.json" 2> "$out/err.log"
      [ -z "$first" ] && cp "$out/run.json" "$out/first.json" && first=yes
      if /usr/bin/python3 - "$out/run.json" "$out/first.json" "$models/$model/config.json" <<'PY'
import json, sys
d, f, c = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
s = d["stats"]
ratio = s["wire_bytes_per_token_hop"] / (4 * c["hidden_size"])
print(f"  wire bytes per token per hop: {s['wire_bytes_per_token_hop']:.0f} ({ratio:.3f} of f32)")
sys.exit(0 if d["generated_ids"] == f["generated_ids"] and s["wire_compression"] and ratio <= 0.27 and s["failovers"] == 0 else 1)
PY
      then echo "ok: $model compressed over $transport ($mode) with $hosts hosts"
      else echo "FAILED: $model compressed over $transport ($mode) with $hosts hosts"; tail -5 "$out/err.log"; failed=$((failed + 1))
      fi
      checked=$((checked + 1))
    done
  done
  # Hosts spawned from a plain shell (MPI_Comm_spawn).
  timeout 120 "$sepal" generate --model "$models/$model" --prompt "$prompt" --max-new-tokens "$max_new" --hosts 2 \
    --no-wire-compression --json > "$out/run.json" 2> "$out/err.log"
  rc=$?
  # With the time the client waited for the swarm (each decode step at most a token's time) and
  # each host's forwards: the prompt's, and one a decode step (none for the last token).
  if [ "$rc" -eq 0 ] && /usr/bin/python3 - "$out/run.json" "$ref" "$out/err.log" <<'PY'
import json, re, sys
d, r = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
s, ids = d["stats"], d["generated_ids"]
forwards = [int(n) for n in re.findall(r"ran (\d+) inference forwards", open(sys.argv[3]).read())]
sys.exit(0 if ids == r["generated_ids"] and s["host_ranks"] == 2 and s["swarm_wait_seconds"] > 0
         and 0 < s["decode_wait_ms_per_step"] <= 1000 / s["decode_tokens_per_s"] and forwards == [len(ids)] * 2 else 1)
PY
  then echo "ok: $model with --hosts 2"
  else echo "FAILED: $model with --hosts 2 (exit $rc)"; tail -5 "$out/err.log"; failed=$((failed + 1))
  fi
  checked=$((checked + 1))
done
# A GGUF file across hosts: stories260K as published for llama.cpp gives its reference.
gguf="$models/stories260K/original/stories260K.gguf"
for launch in "mpirun -np 4" ""; do
  extra=(); [ -z "$launch" ] && extra=(--hosts 3)
  # shellcheck disable=SC2086  # the launcher splits on spaces
  timeout 120 $launch "$sepal" generate --model "$gguf" --prompt "Once upon a time" --max-new-tokens 200 \
    --no-wire-compression --json ${extra[@]+"${extra[@]}"} > "$out/run.json" 2> "$out/err.log"
  if /usr/bin/python3 -c 'import json,sys; d,r=json.load(open(sys.argv[1])),json.load(open(sys.argv[2])); sys.exit(0 if d["generated_ids"]==r["generated_ids"] and d["prompt_ids"]==r["prompt_ids"] and d["stats"]["host_ranks"]==3 else 1)' "$out/run.json" "$models/reference/stories260K.greedy.json"
  then echo "ok: stories260K.gguf over 3 hosts (${launch:-spawned})"
  else echo "FAILED: stories260K.gguf over 3 hosts (${launch:-spawned})"; tail -5 "$out/err.log"; failed=$((failed + 1))
  fi
  checked=$((checked + 1))
done
# UCX's log goes to stderr: with UCX_LOG_LEVEL=info it writes lines at every start, and stdout
# must still be the JSON alone. No warnings either (UCX warns about UCX_ variables set after it
# loaded, as sepal's own UCX_LOG_FILE for the processes it spawns would be if set too early).
UCX_LOG_LEVEL=info timeout 120 mpirun -np 3 "$sepal" generate --model "$models/stories260K" --prompt "Once upon a time" \
  --max-new-tokens 8 --json > "$out/run.json" 2> "$out/err.log"
if grep -q "UCX  INFO" "$out/err.log" && ! grep "UCX  WARN" "$out/err.log" && /usr/bin/python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$out/run.json"
then echo "ok: UCX's log on stderr, no warnings in it, stdout the JSON alone"
else echo "FAILED: UCX's log is not on stderr alone, or it warns"; head -3 "$out/run.json"; failed=$((failed + 1))
fi
checked=$((checked + 1))
echo "$((checked - failed)) passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$checked" -gt 0 ]
