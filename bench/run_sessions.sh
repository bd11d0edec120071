#!/usr/bin/env bash
# Many sessions at once through one swarm: 8 prompts of tinystories-656K over 3 spawned hosts
# (`sepal generate --hosts 3 --prompts-file`), with an emulated WAN of 100 ms round trip on every
# link, run 1, 2, 4 and 8 at a time in this one run. Each step of a session waits for its round
# trips; sessions that run together overlap them. Prints the time of each and the ratio of all 8
# together to one after another (goal: at most 0.3), checks that every prompt gave the same ids
# every time, and writes bench/results/sessions.csv and sessions.png.
#   bench/run_sessions.sh [RTT_MS]     # default 100
set -euo pipefail
cd "$(dirname "$0")/.."
rtt=${1:-100}
models=${SEPAL_MODELS:-../shared/models}
[ -x build/bin/sepal ] || scripts/build.sh
mkdir -p bench/results
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
prompts=$out/prompts.txt
for p in "Once upon a time" "The little dog" "Lily wanted to" "Tom and his mom" "One day, a bird" "The sun was" \
         "The big red ball" "Sam had a toy"; do
  echo "$p" >> "$prompts"
done
csv=bench/results/sessions.csv
echo "at_once,seconds,tokens" > "$csv"
for n in 1 2 4 8; do
  build/bin/sepal generate --model "$models/tinystories-656K" --hosts 3 --wan "rtt_ms=$rtt" --prompts-file "$prompts" \
    --max-new-tokens 24 --concurrency "$n" --json > "$out/ids$n.jsonl" 2> "$out/err$n.log" || { tail -5 "$out/err$n.log"; exit 1; }
  line=$(grep -E "^sepal: [0-9]+ prompts, [0-9]+ at a time" "$out/err$n.log")
  seconds=$(sed -E 's/.* in ([0-9.]+) s: .*/\1/' <<<"$line")
  tokens=$(sed -E 's/.*: ([0-9]+) tokens generated.*/\1/' <<<"$line")
  echo "$n,$seconds,$tokens" >> "$csv"
  echo "$n at a time: $seconds s for $tokens tokens" >&2
done
/usr/bin/python3 - "$out" "$csv" <<'PY'
import csv, json, sys
out, path = sys.argv[1], sys.argv[2]
ids = {n: [json.loads(l)["generated_ids"] for l in open(f"{out}/ids{n}.jsonl")] for n in (1, 2, 4, 8)}
same = all(ids[n] == ids[1] for n in ids)
rows = {int(r["at_once"]): float(r["seconds"]) for r in csv.DictReader(open(path))}
ratio = rows[8] / rows[1]
print(f"one after another: {rows[1]:.2f} s; all 8 at once: {rows[8]:.2f} s; ratio {ratio:.3f} "
      f"(goal <= 0.3: {'met' if ratio <= 0.3 else 'NOT met'}); ids identical at every concurrency: {same}")
sys.exit(0 if same else 1)
PY
/usr/bin/python3 bench/plot_sessions.py "$csv" bench/results/sessions.png "$rtt" && echo "wrote bench/results/sessions.png" >&2
