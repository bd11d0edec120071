#!/usr/bin/env bash
# Prompt-tuning speed through a swarm against one process, measured in the same run, on a
# synthetic model of real width (768 wide, 2048 MLP, 4 blocks, 32000 vocabulary; random weights
# prove nothing but speed): `sepal tune` for SEPAL_BENCH_STEPS steps (default 6) of 8 sequences of
# 128 tokens in micro-batches of 2, in one process and through 3 hosts on loopback
# (mpirun -np 4, f32 on the wire and 8-bit), tokens/s over the steps after the first. Beside it,
# training_bench: the time of a backward pass against a forward pass through the blocks. Writes
# bench/results/training-swarm.csv (and training.csv).
#   bench/run_training.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/mpi_env.sh
steps=${SEPAL_BENCH_STEPS:-6}
[ -x build/bin/sepal ] && [ -x build/bin/training_bench ] || scripts/build.sh
source bench/tune_bench_setup.sh
tune() {  # LABEL, then the launcher
  local label=$1; shift
  "$@" build/bin/sepal tune --model "$model" --data "$work/data.txt" --method deep-ptune --prompt-tokens 8 \
    --steps "$steps" --batch-size 8 --micro-batch 2 --lr 0.01 --max-length 120 --out "$work/$label.h5" \
    --log "$work/$label.jsonl" "${extra[@]}" > /dev/null 2> "$work/$label.err" \
    || { echo "run failed: $label"; tail -3 "$work/$label.err"; exit 1; }
}
rate() { /usr/bin/python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if "loss" in l][1:]
print(sum(r["tokens"] for r in rows) / sum(r["seconds"] for r in rows))' "$1"; }
extra=(); tune one
extra=(--no-wire-compression); tune swarm-f32 mpirun -np 4
extra=(); tune swarm-8bit mpirun -np 4
one=$(rate "$work/one.jsonl")
csv=bench/results/training-swarm.csv
echo "configuration,tokens_per_s,ratio_to_one_process" > "$csv"
echo "one process: $one training tokens/s"
echo "one process,$one,1" >> "$csv"
for label in swarm-f32 swarm-8bit; do
  r=$(rate "$work/$label.jsonl")
  ratio=$(/usr/bin/python3 -c "print(round($r / $one, 3))")
  echo "3 hosts on loopback ($label): $r training tokens/s, $ratio of one process"
  echo "3 hosts $label,$r,$ratio" >> "$csv"
done
build/bin/training_bench --model-dir "$model" --sequences 2 --length 128 --rounds 3
echo "wrote $csv"
