#!/usr/bin/env bash
# Swarm decode speed and time to first token on the TinyLlama-1.1B shape (bf16; or
# SEPAL_BENCH_PRESET / SEPAL_BENCH_DTYPE, e.g. stories-110m and int8): 1 to 4 hosts,
# loopback and emulated WANs (1 Gbit/s 5 ms RTT; 100 Mbit/s 100 ms RTT), host-to-host push
# against client relay, compared in the same run with the single-process speed and with the
# physical floor: single-process compute plus one one-way link latency (and transfer) per link a
# token crosses (client -> host 1 -> ... -> host N -> client). Writes bench/results/swarm.csv and
# swarm.png (swarm-PRESET-DTYPE.* for other shapes). SEPAL_BENCH_NETWORKS="loopback" limits the
# networks (default: loopback 5:1000 100:100, RTT ms:Mbit/s). Synthetic checkpoints go to ${SEPAL_BENCH_MODELS:-/tmp/sepal-bench}.
# Every configuration runs SEPAL_BENCH_REPEATS times (default 3), each run after a single-process
# run of its own; it reports its median run and the median ratio of the pairs: on a shared
# machine one run can lose a core to another process, and the machine's speed drifts.
#   bench/run_swarm.sh [MAX_HOSTS]            # or SEPAL_BENCH_HOSTS="1 3" for a chosen list
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/mpi_env.sh
max_hosts=${1:-4}
models=${SEPAL_BENCH_MODELS:-/tmp/sepal-bench}
preset=${SEPAL_BENCH_PRESET:-tinyllama-1.1b}
dtype=${SEPAL_BENCH_DTYPE:-bf16}
# int8 is quantized from the bf16 checkpoint while loading.
stored=$([ "$dtype" = int8 ] && echo bf16 || echo "$dtype")
model="$models/$preset-$stored"
[ -x build/bin/sepal ] || scripts/build.sh
[ -f "$model/model.safetensors" ] || build/bin/sepal synth --preset "$preset" --dtype "$stored" --out "$model"
mkdir -p bench/results
name=$([ "$preset-$dtype" = tinyllama-1.1b-bf16 ] && echo swarm || echo "swarm-$preset-$dtype")
csv=bench/results/$name.csv
prompt="The quick brown fox jumps over the lazy dog while the children watch from the old stone bridge"
tokens=32
repeats=${SEPAL_BENCH_REPEATS:-3}
once() {  # once OUT_JSON ARGS...: one generation
  local out=$1; shift
  timeout 600 "$@" --model "$model" --dtype "$dtype" --prompt "$prompt" --max-new-tokens "$tokens" --json > "$out" 2> "$out.err" \
    || { echo "run failed: $*" >&2; tail -5 "$out.err" >&2; return 1; }
}
stat() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stats"][sys.argv[2]])' "$1" "$2"; }

# A swarm token's time, split: the client's own work (token_ms - its wait for the swarm), the
# hosts' forwards of one row (each host's mean, summed) and the rest of the wait (links, wire
# codec and hand-offs between threads and processes), all from the median run.
# This machine's speed drifts from one second to the next (other tenants): every swarm run is
# paired with a single-process run just before it, and ratio_to_single is the median of the
# pairs' ratios; single_token_ms and the floor use the median of those single runs.
echo "hosts,network,rtt_ms,bandwidth_mbps,mode,decode_tokens_per_s,time_to_first_token_s,token_ms,single_token_ms,floor_ms,ratio_to_floor,ratio_to_single,client_ms,hosts_forward_ms,links_ms" > "$csv"
hidden_bytes=$(/usr/bin/python3 -c 'import json,sys; print(4 * json.load(open(sys.argv[1]))["hidden_size"])' "$model/config.json")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for network in ${SEPAL_BENCH_NETWORKS:-loopback 5:1000 100:100}; do
  if [ "$network" = loopback ]; then rtt=0; bw=0; wan=(); else rtt=${network%%:*}; bw=${network##*:}; wan=(--wan "rtt_ms=$rtt,bandwidth_mbps=$bw"); fi
  for hosts in ${SEPAL_BENCH_HOSTS:-$(seq 1 "$max_hosts")}; do
    for mode in push relay; do
      for ((i = 0; i < repeats; i++)); do
        once "$work/single.$i" build/bin/sepal generate
        once "$work/swarm.$i" mpirun -np $((hosts + 1)) build/bin/sepal generate --mode "$mode" "${wan[@]}"
      done
      line=$(/usr/bin/python3 - "$hosts" "$network" "$rtt" "$bw" "$mode" "$hidden_bytes" "$work" "$repeats" <<'PY'
import json, re, statistics, sys
hosts, network, rtt, bw, mode, hidden, work, repeats = sys.argv[1:]
hosts, rtt, bw, hidden, repeats = int(hosts), float(rtt), float(bw), int(hidden), int(repeats)
stats = lambda f: json.load(open(f))["stats"]
singles = [stats(f"{work}/single.{i}") for i in range(repeats)]
swarms = [stats(f"{work}/swarm.{i}") for i in range(repeats)]
ratio = statistics.median(w["decode_tokens_per_s"] / s["decode_tokens_per_s"] for s, w in zip(singles, swarms))
single_tps = statistics.median(s["decode_tokens_per_s"] for s in singles)
order = sorted(range(repeats), key=lambda i: swarms[i]["decode_tokens_per_s"])
median = order[repeats // 2]  # the median swarm run: its split
run = swarms[median]
tps, ttft, wait_ms = run["decode_tokens_per_s"], run["time_to_first_token_s"], run["decode_wait_ms_per_step"]
forwards = [float(m) for m in re.findall(r"of one row, ([0-9.]+) ms each", open(f"{work}/swarm.{median}.err").read())]
token_ms = 1000 / tps
single_ms = 1000 / single_tps
link_ms = rtt / 2 + (hidden * 8 / (bw * 1e6) * 1000 if bw > 0 else 0)
floor_ms = single_ms + (hosts + 1) * link_ms
hosts_ms = sum(forwards) if len(forwards) == hosts else float("nan")
print(f"{hosts},{network},{rtt:g},{bw:g},{mode},{tps:.3f},{ttft:.4f},{token_ms:.2f},{single_ms:.2f},{floor_ms:.2f},{token_ms / floor_ms:.3f},{ratio:.3f},"
      f"{token_ms - wait_ms:.2f},{hosts_ms:.2f},{wait_ms - hosts_ms:.2f}")
PY
)
      echo "$line" >> "$csv"
      echo "$line"
    done
  done
done
/usr/bin/python3 bench/plot_swarm.py "$csv" "bench/results/$name.png" "$preset shape, $dtype"
echo "wrote $csv and bench/results/$name.png"
