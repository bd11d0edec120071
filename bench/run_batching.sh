#!/usr/bin/env bash
# Batching across sessions on the hosts: aggregate decode tokens/s of 1, 4 and 16 clients at once
# (`sepal generate --hosts H --prompts-file`, one session per prompt) through 1 and 3 spawned hosts
# on loopback, with the hosts batching the steps that reach them together and with
# --no-step-batching, in this one run, on a synthetic model of real width (768 wide, 2048 MLP, 6 blocks, 32000
# vocabulary; random weights prove nothing but speed). Checks that every prompt gave the same ids
# batched and not (a session's states do not depend on its batch), prints tokens/s against the
# unbatched single client, and writes bench/results/batching-DTYPE.csv and .png. Each figure is
# the median of SEPAL_BENCH_RUNS rounds (3; this machine's speed moves by a third from one run to
# the next), SEPAL_BENCH_TOKENS tokens each (128); each round runs every setting of a host count
# back to back, and the 16-against-1 ratio is the median of the rounds' own ratios. Every run goes
# to batching-DTYPE-runs.csv. KV_DTYPE: the hosts' key/value caches (f32 or
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
runs_csv=${csv%.csv}-runs.csv
echo "dtype,hosts,clients,batching,round,seconds,tokens,tokens_per_s,steps_per_batch" > "$runs_csv"
for clients in 1 4 16; do head -n "$clients" "$out/all.txt" > "$out/prompts$clients.txt"; done
for hosts in 1 3; do
  # Rounds outside: each round measures every setting within a minute or two, so that a slow
  # minute of this machine weighs on the settings it compares alike.
  for r in $(seq "$runs"); do
    for clients in 1 4 16; do
      for batching in on off; do
        flag=()
        [ "$batching" = off ] && flag=(--no-step-batching)
        run=$hosts-$clients-$batching
        build/bin/sepal generate --model "$model" --dtype "$dtype" --kv-dtype "$kv_dtype" --hosts "$hosts" --prompts-file "$out/prompts$clients.txt" \
          --max-new-tokens "$tokens" --json "${flag[@]}" > "$out/ids-$run.jsonl" 2> "$out/err-$run.log" \
          || { tail -5 "$out/err-$run.log"; exit 1; }
        line=$(grep -E "^sepal: [0-9]+ prompts, [0-9]+ at a time" "$out/err-$run.log")
        seconds=$(sed -E 's/.* in ([0-9.]+) s: .*/\1/' <<<"$line")
        generated=$(sed -E 's/.*: ([0-9]+) tokens generated.*/\1/' <<<"$line")
        rate=$(/usr/bin/python3 -c "print(round($generated / $seconds, 1))")
        # The hosts' own count: steps per batch over all of them (0 without batching).
        per_batch=$(sed -n 's/.*; \([0-9]*\) batches of sessions. steps held \([0-9]*\) steps/\1 \2/p' "$out/err-$run.log" |
          awk '{b += $1; s += $2} END {print (b > 0 ? sprintf("%.2f", s / b) : 0)}')
        echo "$label,$hosts,$clients,$batching,$r,$seconds,$generated,$rate,$per_batch" >> "$runs_csv"
        echo "round $r: $hosts hosts, $clients clients, batching $batching: $generated tokens in $seconds s ($rate tokens/s, $per_batch steps a batch)" >&2
      done
    done
  done
done
/usr/bin/python3 - "$out" "$csv" "$runs_csv" <<'PY'
import csv, json, statistics, sys
out, path, runs_path = sys.argv[1:4]
ids = lambda run: [json.loads(l)["generated_ids"] for l in open(f"{out}/ids-{run}.jsonl")]
# Batched and not at the same host count (hidden states cross the wire in 8 bits at every hop, so
# other hop counts give other numbers).
same = all(ids(f"{h}-{n}-on") == ids(f"{h}-{n}-off") for h in (1, 3) for n in (1, 4, 16))
runs = list(csv.DictReader(open(runs_path)))
key = lambda r: (int(r["hosts"]), int(r["clients"]), r["batching"])
# Each setting's median run by tokens/s, as the plot's CSV.
fields = ["dtype", "hosts", "clients", "batching", "seconds", "tokens", "tokens_per_s", "steps_per_batch"]
rows = {}
with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fields, extrasaction="ignore")
    w.writeheader()
    for k in sorted({key(r) for r in runs}):
        picked = sorted((r for r in runs if key(r) == k), key=lambda r: float(r["tokens_per_s"]))
        median = picked[(len(picked) - 1) // 2]
        w.writerow(median)
        rows[k] = float(median["tokens_per_s"])
# The ratios of one round each (the same minutes), and their median.
rate = {(key(r), int(r["round"])): float(r["tokens_per_s"]) for r in runs}
rounds = sorted({int(r["round"]) for r in runs})
for h in (1, 3):
    base = rows[(h, 1, "off")]
    for n in (1, 4, 16):
        print(f"{h} hosts, {n:2d} clients: batched {rows[(h, n, 'on')]:7.1f} tokens/s ({rows[(h, n, 'on')] / base:4.2f} x "
              f"one client unbatched), unbatched {rows[(h, n, 'off')]:7.1f} ({rows[(h, n, 'off')] / base:4.2f} x)")
    per_round = [rate[((h, 16, "on"), r)] / rate[((h, 1, "on"), r)] for r in rounds]
    goal = statistics.median(per_round)
    print(f"{h} hosts: 16 clients batched / 1 client, each round: {', '.join(f'{x:.2f}' for x in per_round)}; "
          f"median {goal:.2f} (goal >= 4: {'met' if goal >= 4 else 'NOT met'}); "
          f"16 batched / 16 unbatched: {rows[(h, 16, 'on')] / rows[(h, 16, 'off')]:.2f}")
print(f"ids identical batched and not, at every host count: {same}")
sys.exit(0 if same else 1)
PY
/usr/bin/python3 bench/plot_batching.py "$csv" "${csv%.csv}.png" && echo "wrote ${csv%.csv}.png" >&2
