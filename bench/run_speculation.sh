#!/usr/bin/env bash
# Speculative decoding through a swarm of 3 block hosts (mpirun -np 4, push, 8-bit wire): decode
# tokens/s with each draft source and tree size against decoding without a draft, measured in the
# same run on the same network: loopback and emulated WANs (1 Gbit/s 5 ms RTT, 100 Mbit/s 100 ms
# RTT). Reports the speed-up, the mean accepted tokens per tree step, the distribution of tokens
# per step, the draft's share of the decode time (the time the generation waited on the draft)
# and, with --draft-pipelining, the share of trees the draft decoder had prepared in time. Writes bench/results/speculation.csv,
# speculation.png (speed-up against tree size) and speculation-accepted.png (tokens per step).
# Greedy, so every run's text is the same (the script checks it).
#   bench/run_speculation.sh
# SEPAL_BENCH_MODEL (default ../shared/models/tinystories-656K), SEPAL_BENCH_NETWORKS (default
# "loopback 5:1000 100:100", RTT ms:Mbit/s), SEPAL_BENCH_TOKENS (default 96) and
# SEPAL_BENCH_REPEATS (default 3; each configuration's median run is kept).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/mpi_env.sh
model=${SEPAL_BENCH_MODEL:-../shared/models/tinystories-656K}
tokens=${SEPAL_BENCH_TOKENS:-96}
repeats=${SEPAL_BENCH_REPEATS:-3}
[ -f "$model/config.json" ] || { echo "run_speculation.sh: no model at $model (set SEPAL_BENCH_MODEL)" >&2; exit 1; }
[ -x build/bin/sepal ] || scripts/build.sh
mkdir -p bench/results
csv=bench/results/speculation.csv
prompt="Once upon a time, there was a little girl who"
layers=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["num_hidden_layers"])' "$model/config.json")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() {  # run OUT_JSON ARGS...: `repeats` generations; the median one's JSON on OUT_JSON
  local out=$1; shift
  local runs=()
  for ((i = 0; i < repeats; i++)); do
    timeout 600 mpirun -np 4 build/bin/sepal generate --model "$model" --prompt "$prompt" --max-new-tokens "$tokens" \
      --json "$@" > "$out.$i" 2> "$work/err" || { echo "run failed: $*" >&2; tail -5 "$work/err" >&2; return 1; }
    runs+=("$out.$i")
  done
  /usr/bin/python3 bench/median_run.py "$out" "${runs[@]}"
}
# Draft sources: name|flags|tree sizes.
drafts=("n-gram 3|--draft-ngram 3|4 8 16"
        "first block|--draft-layers 1|4 8 16 32"
        "model at int8|--draft-model $model --draft-dtype int8|4 8 16 32"
        "model at int8 + pipelining|--draft-model $model --draft-dtype int8 --draft-pipelining|8 16")
[ "$layers" -ge 2 ] || drafts=("${drafts[0]}" "${drafts[2]}")
echo "network,rtt_ms,draft,tree_size,decode_tokens_per_s,speedup,mean_accepted_tokens,draft_share,anticipated_share,tokens_per_step" > "$csv"
for network in ${SEPAL_BENCH_NETWORKS:-loopback 5:1000 100:100}; do
  if [ "$network" = loopback ]; then rtt=0; wan=(); else rtt=${network%%:*}; wan=(--wan "rtt_ms=$rtt,bandwidth_mbps=${network##*:}"); fi
  run "$work/plain.json" ${wan[@]+"${wan[@]}"}
  for entry in "" "${drafts[@]}"; do
    if [ -z "$entry" ]; then name=none; flags=""; sizes=1; else IFS='|' read -r name flags sizes <<< "$entry"; fi
    for size in $sizes; do
      if [ "$name" = none ]; then cp "$work/plain.json" "$work/run.json"
      else
        # shellcheck disable=SC2086  # the draft's flags split on spaces
        run "$work/run.json" ${wan[@]+"${wan[@]}"} $flags --tree-size "$size"
      fi
      line=$(/usr/bin/python3 - "$work/run.json" "$work/plain.json" "$network" "$rtt" "$name" "$size" <<'PY'
import json, sys
d, p = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
network, rtt, name, size = sys.argv[3:]
if d["generated_ids"] != p["generated_ids"]:
    sys.exit(f"run_speculation.sh: {name} at tree size {size} on {network} gave another text than decoding")
s = d["stats"]
spec = s.get("speculation", {})
tps = s["decode_tokens_per_s"]
decode_s = (s["generated_tokens"] - 1) / tps if tps > 0 else 0
share = spec.get("draft_seconds", 0) / decode_s if decode_s > 0 else 0
hist = ";".join(str(c) for c in spec.get("tokens_per_step", []))
anticipated = spec.get("anticipated_trees", 0) / spec["tree_steps"] if spec.get("tree_steps") else 0
print(f"{network},{rtt},{name},{size},{tps:.2f},{tps / p['stats']['decode_tokens_per_s']:.3f},"
      f"{spec.get('mean_accepted_tokens', 1.0):.3f},{share:.3f},{anticipated:.3f},{hist}")
PY
)
      echo "$line" >> "$csv"
      echo "$line"
    done
  done
done
/usr/bin/python3 bench/plot_speculation.py "$csv" bench/results/speculation.png bench/results/speculation-accepted.png
echo "wrote $csv, bench/results/speculation.png and bench/results/speculation-accepted.png"
