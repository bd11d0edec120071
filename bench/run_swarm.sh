#!/usr/bin/env bash
# Swarm decode speed and time to first token on the TinyLlama-1.1B shape (bf16; or
# SEPAL_BENCH_PRESET / SEPAL_BENCH_DTYPE, e.g. stories-110m and int8): 1 to 4 hosts,
# loopback and emulated WANs (1 Gbit/s 5 ms RTT; 100 Mbit/s 100 ms RTT), host-to-host push
# against client relay, compared in the same run with the single-process speed and with the
# physical floor: single-process compute plus one one-way link latency (and transfer) per link a
# token crosses (client -> host 1 -> ... -> host N -> client). Writes bench/results/swarm.csv and
# swarm.png (swarm-PRESET-DTYPE.* for other shapes). SEPAL_BENCH_NETWORKS="loopback" limits the
# networks (default: loopback 5:1000 100:100, RTT ms:Mbit/s). Synthetic checkpoints go to ${SEPAL_BENCH_MODELS:-/tmp/sepal-bench}.
# Every configuration (the single process too) runs SEPAL_BENCH_REPEATS times (default 3) and
# reports its median run: on a shared machine one run can lose a core to another process.
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
run() {  # run OUT_JSON ARGS...: `repeats` generations; the median one's JSON on OUT_JSON
  local out=$1; shift
  local runs=()
  for ((i = 0; i < repeats; i++)); do
    timeout 600 "$@" --model "$model" --dtype "$dtype" --prompt "$prompt" --max-new-tokens "$tokens" --json > "$out.$i" 2> "$out.$i.err" \
      || { echo "run failed: $*" >&2; tail -5 "$out.$i.err" >&2; return 1; }
    runs+=("$out.$i")
  done
  /usr/bin/python3 bench/median_run.py "$out" "${runs[@]}"
}
stat() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stats"][sys.argv[2]])' "$1" "$2"; }

# A swarm token's time, split: the client's own work (token_ms - its wait for the swarm), the
# hosts' forwards of one row (each host's mean, summed) and the rest of the wait (links, wire
# codec and hand-offs between threads and processes), all from the median run.
echo "hosts,network,rtt_ms,bandwidth_mbps,mode,decode_tokens_per_s,time_to_first_token_s,token_ms,single_token_ms,floor_ms,ratio_to_floor,ratio_to_single,client_ms,hosts_forward_ms,links_ms" > "$csv"
run /tmp/sepal-single.json build/bin/sepal generate
single_tps=$(stat /tmp/sepal-single.json decode_tokens_per_s)
single_ttft=$(stat /tmp/sepal-single.json time_to_first_token_s)
echo "single process (median of $repeats): $single_tps tokens/s, first token after $single_ttft s"
hidden_bytes=$(/usr/bin/python3 -c 'import json,sys; print(4 * json.load(open(sys.argv[1]))["hidden_size"])' "$model/config.json")
for network in ${SEPAL_BENCH_NETWORKS:-loopback 5:1000 100:100}; do
  if [ "$network" = loopback ]; then rtt=0; bw=0; wan=(); else rtt=${network%%:*}; bw=${network##*:}; wan=(--wan "rtt_ms=$rtt,bandwidth_mbps=$bw"); fi
  for hosts in ${SEPAL_BENCH_HOSTS:-$(seq 1 "$max_hosts")}; do
    for mode in push relay; do
      run /tmp/sepal-swarm.json mpirun -np $((hosts + 1)) build/bin/sepal generate --mode "$mode" "${wan[@]}"
      tps=$(stat /tmp/sepal-swarm.json decode_tokens_per_s); ttft=$(stat /tmp/sepal-swarm.json time_to_first_token_s)
      line=$(/usr/bin/python3 - "$hosts" "$network" "$rtt" "$bw" "$mode" "$tps" "$ttft" "$single_tps" "$hidden_bytes" /tmp/sepal-swarm.json <<'PY'
import json, re, sys
hosts, network, rtt, bw, mode, tps, ttft, single_tps, hidden, run = sys.argv[1:]
wait_ms = json.load(open(run))["stats"]["decode_wait_ms_per_step"]
forwards = [float(m) for m in re.findall(r"of one row, ([0-9.]+) ms each", open(run + ".err").read())]
hosts, rtt, bw, tps, ttft, single_tps, hidden = int(hosts), float(rtt), float(bw), float(tps), float(ttft), float(single_tps), int(hidden)
token_ms = 1000 / tps
single_ms = 1000 / single_tps
link_ms = rtt / 2 + (hidden * 8 / (bw * 1e6) * 1000 if bw > 0 else 0)
floor_ms = single_ms + (hosts + 1) * link_ms
hosts_ms = sum(forwards) if len(forwards) == hosts else float("nan")
print(f"{hosts},{network},{rtt:g},{bw:g},{mode},{tps:.3f},{ttft:.4f},{token_ms:.2f},{single_ms:.2f},{floor_ms:.2f},{token_ms / floor_ms:.3f},{tps / single_tps:.3f},"
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
