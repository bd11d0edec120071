#!/usr/bin/env bash
# Perplexity of every real model under ../shared/models with int8 weights, with 8-bit hidden
# states across 3 hosts, with both, and with bf16 key/value caches must be within 1% of f32 in
# one process, over a held-out text of at least 20,000 tokens: stories sampled from the f32 model
# itself with fixed seeds (bench/make_heldout_text.sh). The bf16 caches must change it (the f32
# figure would mean the flag was dropped), and 3 spawned hosts with bf16 caches and f32 hidden
# states on the wire must give exactly the one-process bf16 figure (the hosts got --kv-dtype).
#   run_perplexity_test.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$2
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../scripts/mpi_env.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"; clean_mpi_leftovers' EXIT
checked=0; failed=0
for config in "$models"/*/config.json; do
  model=$(dirname "$config"); name=$(basename "$model")
  if ! /usr/bin/python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1])).get("architectures") != ["LlamaForCausalLM"])' "$config"; then
    echo "skipped: $name (not a trained Llama: the held-out text is sampled from the model itself)"; continue
  fi
  "$here/../../bench/make_heldout_text.sh" "$sepal" "$model" "$dir/$name.txt" 21000 || { failed=$((failed + 1)); continue; }
  run() {  # label, then the command's arguments
    local label=$1; shift
    if ! timeout 300 "$@" --model "$model" --text "$dir/$name.txt" --json > "$dir/$label.json" 2> "$dir/err.log"; then
      echo "FAILED: $name $label did not run"; tail -5 "$dir/err.log"; return 1
    fi
  }
  run f32 "$sepal" perplexity || { failed=$((failed + 1)); continue; }
  for label in int8 wire-3-hosts int8-wire-3-hosts bf16-caches bf16-caches-3-hosts; do
    case $label in
      int8) run $label "$sepal" perplexity --dtype int8 ;;
      wire-3-hosts) run $label mpirun -np 4 "$sepal" perplexity ;;
      int8-wire-3-hosts) run $label mpirun -np 4 "$sepal" perplexity --dtype int8 ;;
      bf16-caches) run $label "$sepal" perplexity --kv-dtype bf16 ;;
      bf16-caches-3-hosts) run $label "$sepal" perplexity --kv-dtype bf16 --hosts 3 --no-wire-compression ;;
    esac || { failed=$((failed + 1)); checked=$((checked + 1)); continue; }
    if /usr/bin/python3 - "$dir/f32.json" "$dir/$label.json" "$name" "$label" "$dir/bf16-caches.json" <<'PY'
import json, sys
f, d = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
change = d["perplexity"] / f["perplexity"] - 1
hosts = d["stats"]["host_ranks"]
print(f"{sys.argv[3]} {sys.argv[4]}: perplexity {d['perplexity']:.4f} against {f['perplexity']:.4f} for f32 "
      f"({100 * change:+.3f}%) over {d['tokens']} tokens, {hosts} hosts")
label = sys.argv[4]
wire_ok = hosts == 0 or (hosts == 3 and d["stats"]["wire_compression"] == (label != "bf16-caches-3-hosts"))
caches_ok = "bf16-caches" not in label or d["perplexity"] != f["perplexity"]
if label == "bf16-caches-3-hosts":
    caches_ok = caches_ok and d["perplexity"] == json.load(open(sys.argv[5]))["perplexity"]
sys.exit(0 if abs(change) <= 0.01 and d["tokens"] >= 20000 and d["tokens"] == f["tokens"] and wire_ok and caches_ok else 1)
PY
    then echo "ok: $name $label"
    else echo "FAILED: $name $label"; failed=$((failed + 1))
    fi
    checked=$((checked + 1))
  done
done
echo "$((checked - failed)) passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$checked" -gt 0 ]
