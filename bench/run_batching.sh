#!/usr/bin/env bash
# Batching across sessions on the hosts: aggregate decode tokens/s of 1, 4 and 16 clients at once
# (`sepal generate --hosts H --prompts-file`, one session per prompt) through 1 and 3 spawned hosts
# on loopback, with the hosts batching the steps that reach them together and with
# --no-step-batching, in this one run, on a synthetic model of real width (768 wide, 2048 MLP, 6 blocks, 32000
# vocabulary; random weights prove nothing but speed). Checks that every prompt gave the same ids
# batched and not (a session's states do not depend on its batch), prints tokens/s against the
# unbatched single client, and writes bench/results/batching-DTYPE.csv and .png. Each figure is
# the median of SEPAL_BENCH_RUNS runs (3; this machine's speed moves by a third from one run to
# the next), SEPAL_BENCH_TOKENS tokens each (128). KV_DTYPE: the hosts' key/value caches (f32 or
# bf16; the CSV is then batching-DTYPE-kv-bf16.csv).
#   bench/run_batching.sh [DTYPE [KV_DTYPE]]     # f32 (default), bf16 or int8; f32 (default) or bf16
set -euo pipefail
cd "$(dirname "$0")/.."
dtype=${1:-f32}
kv_dtype=${2:-f32}
tokens=${SEPAL_BENCH_TOKENS:-128}
runs=${SEPAL_BENCH_RUNS:-3}
[ -x build/bin/sepal ] || scripts/build.sh
models=${SEPAL_BENCH_MODELS:-/tmp/sepal-bench}
model=$models/batch-768x6
[ -f "$model/model.safetensors" ] || build/bin/sepal synth --out "$model" --hidden 768 --intermediate 2048 --layers 6 \
  --heads 12 --kv-heads 12 --vocab 32000 --max-positions 1024 2> /dev/null
mkdir -p bench/results
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
words=(the a cat dog sun big little red blue ran jumped happy sad tree park ball girl boy played saw)
for i in $(seq 0 15); do echo "${words[$i]} ${words[$(( (i * 7 + 3) % 20 ))]} ${words[$(( (i * 3 + 1) % 20 ))]}"; done > "$out/all.txt"
csv=bench/results/batching-$dtype.csv
label=$dtype  # the CSV's dtype column, which the plot's titles show
[ "$kv_dtype" = f32 ] || { csv=bench/results/batching-$dtype-kv-$kv_dtype.csv; label="$dtype ($kv_dtype caches)"; }
echo "dtype,hosts,clients,batching,seconds,tokens,tokens_per_s,steps_per_batch" > "$csv"
for hosts in 1 3; do
  for clients in 1 4 16; do
    head -n "$clients" "$out/all.txt" > "$out/prompts$clients.txt"
    for batching in on off; do
      flag=()
      [ "$batching" = off ] && flag=(--no-step-batching)
      run=$hosts-$clients-$batching
      lines=()
      for r in $(seq "$runs"); do
        build/bin/sepal generate --model "$model" --dtype "$dtype" --kv-dtype "$kv_dtype" --hosts "$hosts" --prompts-file "$out/prompts$clients.txt" \
          --max-new-tokens "$tokens" --json "${flag[@]}" > "$out/ids-$run.jsonl" 2> "$out/err-$run.log" \
          || { tail -5 "$out/err-$run.log"; exit 1; }
        lines+=("$(grep -E "^sepal: [0-9]+ prompts, [0-9]+ at a time" "$out/err-$run.log")")
      done
      # The median run by tokens/s.
      line=$(printf '%s\n' "${lines[@]}" | sed -E 's/.*\(([0-9.]+) tokens\/s\).*/\1 &/' | sort -n | awk -v n="$runs" 'NR == int((n + 1) / 2)' | cut -d' ' -f2-)
      seconds=$(sed -E 's/.* in ([0-9.]+) s: .*/\1/' <<<"$line")
      generated=$(sed -E 's/.*: ([0-9]+) tokens generated.*/\1/' <<<"$line")
      rate=$(/usr/bin/python3 -c "print(round($generated / $seconds, 1))")
      # The hosts' own count: steps per batch over all of them (0 without batching).
      per_batch=$(sed -n 's/.*; \([0-9]*\) batches of sessions. steps held \([0-9]*\) steps/\1 \2/p' "$out/err-$run.log" |
        awk '{b += $1; s += $2} END {print (b > 0 ? sprintf("%.2f", s / b) : 0)}')
      echo "$label,$hosts,$clients,$batching,$seconds,$generated,$rate,$per_batch" >> "$csv"
      echo "$hosts hosts, $clients clients, batching $batching: $generated tokens in $seconds s ($rate tokens/s, $per_batch steps a batch)" >&2
    done
  done
done
/usr/bin/python3 - "$out" "$csv" <<'PY'
import csv, json, sys
out, path = sys.argv[1], sys.argv[2]
ids = lambda run: [json.loads(l)["generated_ids"] for l in open(f"{out}/ids-{run}.jsonl")]
# Batched and not at the same host count (hidden states cross the wire in 8 bits at every hop, so
# other hop counts give other numbers).
same = all(ids(f"{h}-{n}-on") == ids(f"{h}-{n}-off") for h in (1, 3) for n in (1, 4, 16))
rows = {(int(r["hosts"]), int(r["clients"]), r["batching"]): float(r["tokens_per_s"]) for r in csv.DictReader(open(path))}
for h in (1, 3):
    base = rows[(h, 1, "off")]
    for n in (1, 4, 16):
        print(f"{h} hosts, {n:2d} clients: batched {rows[(h, n, 'on')]:7.1f} tokens/s ({rows[(h, n, 'on')] / base:4.2f} x "
              f"one client unbatched), unbatched {rows[(h, n, 'off')]:7.1f} ({rows[(h, n, 'off')] / base:4.2f} x)")
    goal = rows[(h, 16, "on")] / rows[(h, 1, "on")]
    print(f"{h} hosts: 16 clients batched / 1 client: {goal:.2f} (goal >= 4: {'met' if goal >= 4 else 'NOT met'}); "
          f"16 batched / 16 unbatched: {rows[(h, 16, 'on')] / rows[(h, 16, 'off')]:.2f}")
print(f"ids identical batched and not, at every host count: {same}")
sys.exit(0 if same else 1)
PY
/usr/bin/python3 bench/plot_batching.py "$csv" "${csv%.csv}.png" && echo "wrote ${csv%.csv}.png" >&2
