#!/usr/bin/env bash
# Speculative decoding through a swarm (token trees verified by the hosts in one step each):
#   - with f32 hidden states, every greedy reference is reproduced over 3 hosts with each draft
#     source (n-gram, the model's first block, the model itself at int8), over UCX with push and
#     over MPI with relay, with hosts spawned from a plain shell (--hosts 3), and with the draft
#     decoder preparing trees during verification (--draft-pipelining);
#   - with 8-bit hidden states on the wire and int8 hosts, each model's text with a draft equals
#     its text without one (one block a host, so one route and one set of hop boundaries), and
#     so does a sampled text (temperature 0.8, a fixed seed);
#   - --json reports the mean accepted length and tokens per step.
#   run_speculative_swarm.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$2
source "$(dirname "$0")/../../scripts/mpi_env.sh"
out=$(mktemp -d)
trap 'rm -rf "$out"; clean_mpi_leftovers' EXIT
checked=0; failed=0
# check NAME FILE EXPECTED_JSON: the run's ids equal the expected ones, and it speculated.
check() {
  if /usr/bin/python3 - "$2" "$3" <<'PY'
import json, sys
d, r = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
spec = d["stats"].get("speculation", {})
ok = d["generated_ids"] == r["generated_ids"] and spec.get("tree_steps", 0) > 0 and spec["mean_accepted_tokens"] >= 1
print(f"  mean accepted {spec.get('mean_accepted_tokens', 0):.2f} tokens a step, {d['stats']['decode_tokens_per_s']:.0f} tokens/s")
sys.exit(0 if ok else 1)
PY
  then echo "ok: $1"
  else echo "FAILED: $1"; tail -5 "$out/err.log"; failed=$((failed + 1))
  fi
  checked=$((checked + 1))
}
for ref in "$models"/reference/*.greedy.json; do
  read -r model prompt max_new layers < <(/usr/bin/python3 "$(dirname "$0")/reference_fields.py" "$ref" "$models")
  if [ "$layers" -eq 0 ]; then echo "skipped: $model (an architecture sepal does not run yet)"; continue; fi
  prompt=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1].replace("\u0001"," ")))' "$prompt")
  gen=(generate --model "$models/$model" --prompt "$prompt" --max-new-tokens "$max_new" --json)
  drafts=("--draft-ngram 3" "--draft-layers 1 --tree-size 8" "--draft-model $models/$model --draft-dtype int8 --tree-size 24")
  for draft in "${drafts[@]}"; do
    # shellcheck disable=SC2086  # the draft's flags split on spaces
    for way in "ucx push" "mpi relay"; do
      read -r transport mode <<< "$way"
      timeout 120 mpirun -np 4 "$sepal" "${gen[@]}" --transport "$transport" --mode "$mode" --no-wire-compression $draft \
        > "$out/run.json" 2> "$out/err.log"
      check "$model over 3 hosts, $transport $mode, $draft" "$out/run.json" "$ref"
    done
  done
  # shellcheck disable=SC2086
  timeout 120 "$sepal" "${gen[@]}" --hosts 3 --no-wire-compression ${drafts[0]} > "$out/run.json" 2> "$out/err.log"
  check "$model with --hosts 3, ${drafts[0]}" "$out/run.json" "$ref"
  # The draft decoder guessing each outcome and preparing the next tree meanwhile, with the n-gram
  # as the second stage below the draft.
  # shellcheck disable=SC2086
  timeout 120 mpirun -np 4 "$sepal" "${gen[@]}" --no-wire-compression ${drafts[1]} --draft-ngram 3 --draft-pipelining \
    > "$out/run.json" 2> "$out/err.log"
  check "$model over 3 hosts, ${drafts[1]} --draft-ngram 3 --draft-pipelining" "$out/run.json" "$ref"
  grep -q '"anticipated_trees"' "$out/run.json" || { echo "FAILED: no anticipated_trees in --json"; failed=$((failed + 1)); }
  # Compressed hidden states and int8 hosts, greedy and sampled: the text of decoding.
  hosts=$layers  # one block a host: one route
  for sampling in "" "--temperature 0.8 --seed 7"; do
    # shellcheck disable=SC2086
    timeout 120 mpirun -np $((hosts + 1)) "$sepal" "${gen[@]}" --dtype int8 $sampling > "$out/plain.json" 2> "$out/err.log"
    # shellcheck disable=SC2086
    timeout 120 mpirun -np $((hosts + 1)) "$sepal" "${gen[@]}" --dtype int8 $sampling ${drafts[2]} \
      > "$out/run.json" 2>> "$out/err.log"
    check "$model, int8 hosts, 8-bit wire, ${sampling:-greedy}, ${drafts[2]}" "$out/run.json" "$out/plain.json"
  done
done
echo "$((checked - failed)) passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$checked" -gt 0 ]
