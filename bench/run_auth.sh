#!/usr/bin/env bash
# What authenticating every UCX message costs (runtime/link_auth.h), measured in this one run,
# alternating authenticated and unauthenticated runs so that drifts in the machine's load hit
# both alike:
#   1. 1 MiB bandwidth between two ranks (sepal ping), authenticated / not, over shared memory
#      (a 12 GB/s memcpy on loopback: the MAC costs as much as the transfer) and over an emulated
#      10 Gbit/s link (what a network between nodes gives);
#   2. decode tokens/s through 3 block hosts (sepal generate under mpirun, tinystories-656K, f32
#      hidden states: the smallest steps, where a per-message cost shows most), authenticated / not.
# Prints medians and ratios (goals: bandwidth >= 0.9, decode >= 0.97); writes bench/results/auth.csv.
#   bench/run_auth.sh [ROUNDS]     # default 5
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/bin/sepal ] || scripts/build.sh
source scripts/mpi_env.sh
rounds=${1:-7}
models=${SEPAL_MODELS:-../shared/models}
out=bench/results
mkdir -p "$out"
csv="$out/auth.csv"
echo "round,measure,authenticated,value" > "$csv"
bandwidth() {  # GB/s of 1 MiB messages
  mpirun -np 2 build/bin/sepal ping --transport ucx --sizes 1048576 --json "$@" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["bandwidth_gbps"])'
}
decode() {  # tokens/s
  mpirun -np 4 --enable-recovery build/bin/sepal generate --model "$models/tinystories-656K" --prompt "Once upon a time" \
    --max-new-tokens 400 --no-wire-compression --json "$@" 2> /dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["decode_tokens_per_s"])'
}
for r in $(seq "$rounds"); do
  echo "$r,bandwidth_gbps,yes,$(bandwidth)" >> "$csv"
  echo "$r,bandwidth_gbps,no,$(bandwidth --no-link-authentication)" >> "$csv"
  echo "$r,bandwidth_10gbit_link_gbps,yes,$(bandwidth --wan bandwidth_mbps=10000)" >> "$csv"
  echo "$r,bandwidth_10gbit_link_gbps,no,$(bandwidth --wan bandwidth_mbps=10000 --no-link-authentication)" >> "$csv"
  echo "$r,decode_tokens_per_s,yes,$(decode)" >> "$csv"
  echo "$r,decode_tokens_per_s,no,$(decode --no-link-authentication)" >> "$csv"
  echo "round $r of $rounds done" >&2
done
python3 - "$csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
goals = {"bandwidth_gbps": 0.9, "bandwidth_10gbit_link_gbps": 0.9, "decode_tokens_per_s": 0.97}
for measure, goal in goals.items():
    value = {(r["round"], r["authenticated"]): float(r["value"]) for r in rows if r["measure"] == measure}
    rounds = sorted({k[0] for k in value})
    on = statistics.median(value[(r, "yes")] for r in rounds)
    off = statistics.median(value[(r, "no")] for r in rounds)
    ratio = statistics.median(value[(r, "yes")] / value[(r, "no")] for r in rounds)  # paired, per round
    print(f"{measure}: authenticated {on:.3f}, not {off:.3f}, median ratio {ratio:.3f} "
          f"(goal >= {goal}): {'met' if ratio >= goal else 'NOT met'}")
PY
