#!/usr/bin/env bash
# `sepal tune` through a swarm gives the losses of one process, step for step (f32 on the wire):
#   1. mpirun -np 4 (3 hosts), 10 steps of deep-ptune: the same losses as one process;
#   2. mpirun -np 5 --replicas 2, 20 steps: the busiest host is killed (kill -9) after step 5; the
#      driver recomputes its micro-batches on the replica and the losses stay the same;
#   3. a run stopped after step 4 under mpirun and resumed in one process: the same losses;
#   4. the client killed (kill -9) after step 7 of a run that checkpoints every 3 steps: resumed
#      from the last checkpoint, every step's loss is the uninterrupted run's;
#   5. BLOOM (bloom-synth) through 3 hosts: the losses of one process;
#   6. LoRA and PEQA adapters through 3 hosts: the losses of one process; LoRA generates its text.
#   run_tune_mpi_test.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$2
source "$(dirname "$0")/../../scripts/mpi_env.sh"
dir=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$dir"; clean_mpi_leftovers' EXIT
failed=0
tune() {  # STEPS LOG OUT [extra args...]
  local steps=$1 log=$2 out=$3; shift 3
  "$sepal" tune --model "$models/tinystories-656K" --data "$models/../data/tune-tom/train.jsonl" --method deep-ptune \
    --prompt-tokens 4 --steps "$steps" --batch-size 8 --micro-batch 2 --lr 0.05 --warmup 2 --seed 5 --max-length 96 \
    --log "$log" --out "$out" "$@"
}
losses() { /usr/bin/python3 -c 'import json,sys; print(" ".join(repr(json.loads(l)["loss"]) for l in open(sys.argv[1]) if "loss" in l))' "$1"; }
same() {  # LABEL LOG_A LOG_B
  if [ -s "$2" ] && [ "$(losses "$2")" = "$(losses "$3")" ]; then
    echo "ok: $1: $(losses "$2" | wc -w) losses identical"
  else
    echo "FAILED: $1"; echo "  expected: $(losses "$2")"; echo "  got:      $(losses "$3")"; failed=$((failed + 1))
  fi
}

tune 10 "$dir/one.jsonl" "$dir/one.h5" 2> "$dir/err.txt" || { echo "FAILED: the one-process run"; tail -3 "$dir/err.txt"; exit 1; }
timeout 300 mpirun -np 4 "$sepal" tune --model "$models/tinystories-656K" --data "$models/../data/tune-tom/train.jsonl" \
  --method deep-ptune --prompt-tokens 4 --steps 10 --batch-size 8 --micro-batch 2 --lr 0.05 --warmup 2 --seed 5 \
  --max-length 96 --log "$dir/swarm.jsonl" --out "$dir/swarm.h5" --no-wire-compression 2> "$dir/err.txt" \
  || { echo "FAILED: mpirun -np 4 sepal tune"; tail -5 "$dir/err.txt"; failed=$((failed + 1)); }
same "mpirun -np 4 (3 hosts) against one process" "$dir/one.jsonl" "$dir/swarm.jsonl"

# 2. kill -9 of a replicated host mid-training.
tune 20 "$dir/one20.jsonl" "$dir/one20.h5" 2> /dev/null
timeout 300 mpirun -np 5 --enable-recovery "$sepal" tune --model "$models/tinystories-656K" \
  --data "$models/../data/tune-tom/train.jsonl" --method deep-ptune --prompt-tokens 4 --steps 20 --batch-size 8 \
  --micro-batch 2 --lr 0.05 --warmup 2 --seed 5 --max-length 96 --log "$dir/kill.jsonl" --out "$dir/kill.h5" \
  --replicas 2 --no-wire-compression > /dev/null 2> "$dir/kill-err.txt" &
job=$!
for _ in $(seq 6000); do
  [ -f "$dir/kill.jsonl" ] && [ "$(wc -l < "$dir/kill.jsonl")" -ge 5 ] && break
  sleep 0.01
done
# The busiest host is on the route: the one with the most CPU time so far.
victim=""; most=-1
for pid in $(sed -n 's/^sepal: host [0-9]* (pid \([0-9]*\)).*/\1/p' "$dir/kill-err.txt"); do
  ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo -1)
  [ "$ticks" -gt "$most" ] && { most=$ticks; victim=$pid; }
done
[ -n "$victim" ] && kill -9 "$victim"
wait $job; rc=$?
# The kill lands inside a pass (the driver recomputes it elsewhere) or between two (later routes
# avoid the host); the losses must not change either way.
if [ "$rc" -eq 0 ] && [ -n "$victim" ] && grep -q "(host) failed" "$dir/kill-err.txt"; then
  how=$(grep -q "recomputing elsewhere" "$dir/kill-err.txt" && echo "recomputed mid-pass" || echo "avoided from the next pass")
  same "kill -9 of host pid $victim, $how (replicas 2)" "$dir/one20.jsonl" "$dir/kill.jsonl"
else
  echo "FAILED: kill -9 of host pid '$victim': exit $rc"
  grep sepal "$dir/kill-err.txt" | tail -6; failed=$((failed + 1))
fi

# 3. Stopped under mpirun, resumed in one process.
timeout 300 mpirun -np 3 "$sepal" tune --model "$models/tinystories-656K" --data "$models/../data/tune-tom/train.jsonl" \
  --method deep-ptune --prompt-tokens 4 --steps 10 --batch-size 8 --micro-batch 2 --lr 0.05 --warmup 2 --seed 5 \
  --max-length 96 --log "$dir/part.jsonl" --out "$dir/part.h5" --no-wire-compression --stop-after 4 2> "$dir/err.txt" \
  || { echo "FAILED: the stopped run"; tail -3 "$dir/err.txt"; failed=$((failed + 1)); }
"$sepal" tune --model "$models/tinystories-656K" --data "$models/../data/tune-tom/train.jsonl" --max-length 96 \
  --resume "$dir/part.h5" --log "$dir/part.jsonl" --out "$dir/part.h5" 2> "$dir/err.txt" \
  || { echo "FAILED: the resumed run"; tail -3 "$dir/err.txt"; failed=$((failed + 1)); }
same "stopped after step 4 under mpirun, resumed in one process" "$dir/one.jsonl" "$dir/part.jsonl"

# 4. The client killed mid-run; the resumed run's steps (the last row of each) are the straight run's.
tune 10 "$dir/killed.jsonl" "$dir/killed.h5" --checkpoint-every 3 2> /dev/null &
job=$!
for _ in $(seq 6000); do
  [ -f "$dir/killed.jsonl" ] && [ "$(wc -l < "$dir/killed.jsonl")" -ge 7 ] && break
  sleep 0.01
done
kill -9 $job 2> /dev/null; wait $job 2> /dev/null
at=$(wc -l < "$dir/killed.jsonl")
"$sepal" tune --model "$models/tinystories-656K" --data "$models/../data/tune-tom/train.jsonl" --max-length 96 \
  --resume "$dir/killed.h5" --log "$dir/killed.jsonl" --out "$dir/killed.h5" 2> "$dir/err.txt" \
  || { echo "FAILED: the run resumed after the kill"; tail -3 "$dir/err.txt"; failed=$((failed + 1)); }
/usr/bin/python3 - "$dir/killed.jsonl" "$dir/last-per-step.jsonl" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    row = json.loads(line)
    rows[row["step"]] = line
with open(sys.argv[2], "w") as out:
    out.writelines(rows[s] for s in sorted(rows))
PY
same "client killed after $at steps, resumed from its last checkpoint" "$dir/one.jsonl" "$dir/last-per-step.jsonl"

# 5. BLOOM (ALiBi, LayerNorms, biases: model/arch/bloom/training.cc) through 3 hosts, one block each.
bloom_tune() {  # LOG OUT [extra args...]
  local log=$1 out=$2; shift 2
  "$sepal" tune --model "$models/bloom-synth" --data "$models/../data/tune-tom/train.jsonl" --method deep-ptune \
    --prompt-tokens 4 --steps 6 --batch-size 8 --micro-batch 2 --lr 0.05 --warmup 2 --seed 5 --max-length 96 \
    --log "$log" --out "$out" "$@"
}
bloom_tune "$dir/bloom-one.jsonl" "$dir/bloom-one.h5" 2> "$dir/err.txt" \
  || { echo "FAILED: BLOOM in one process"; tail -3 "$dir/err.txt"; failed=$((failed + 1)); }
timeout 300 mpirun -np 4 "$sepal" tune --model "$models/bloom-synth" --data "$models/../data/tune-tom/train.jsonl" \
  --method deep-ptune --prompt-tokens 4 --steps 6 --batch-size 8 --micro-batch 2 --lr 0.05 --warmup 2 --seed 5 \
  --max-length 96 --log "$dir/bloom-swarm.jsonl" --out "$dir/bloom-swarm.h5" --no-wire-compression 2> "$dir/err.txt" \
  || { echo "FAILED: BLOOM under mpirun -np 4"; tail -5 "$dir/err.txt"; failed=$((failed + 1)); }
same "BLOOM: mpirun -np 4 (3 hosts) against one process" "$dir/bloom-one.jsonl" "$dir/bloom-swarm.jsonl"

# 6. LoRA and PEQA adapters through 3 hosts (each holds its blocks' slice): the losses of one
#    process; then the LoRA adapter generates through the hosts the text it generates here.
for method in lora peqa; do
  extra=(--lora-rank 4 --lora-targets q_proj,v_proj,down_proj); [ "$method" = peqa ] && extra=(--dtype int8)
  common=(tune --model "$models/tinystories-656K" --data "$models/../data/tune-tom/train.jsonl" --method "$method"
          --steps 6 --batch-size 8 --micro-batch 2 --lr 0.02 --seed 5 --max-length 96 "${extra[@]}")
  "$sepal" "${common[@]}" --log "$dir/$method-one.jsonl" --out "$dir/$method-one.h5" 2> "$dir/err.txt" \
    || { echo "FAILED: $method in one process"; tail -3 "$dir/err.txt"; failed=$((failed + 1)); }
  timeout 300 mpirun -np 4 "$sepal" "${common[@]}" --log "$dir/$method-swarm.jsonl" --out "$dir/$method-swarm.h5" \
    --no-wire-compression 2> "$dir/err.txt" || { echo "FAILED: $method under mpirun -np 4"; tail -5 "$dir/err.txt"; failed=$((failed + 1)); }
  same "$method: mpirun -np 4 (3 hosts) against one process" "$dir/$method-one.jsonl" "$dir/$method-swarm.jsonl"
done
gen=(generate --model "$models/tinystories-656K" --prompt "Tom had a" --max-new-tokens 40 --adapter "$dir/lora-one.h5")
here=$("$sepal" "${gen[@]}" 2> /dev/null)
there=$(timeout 120 mpirun -np 4 "$sepal" "${gen[@]}" --no-wire-compression 2> "$dir/err.txt")
if [ -n "$here" ] && [ "$here" = "$there" ]; then echo "ok: a LoRA adapter generates the same text through 3 hosts"
else echo "FAILED: LoRA generation: here '$here', through hosts '$there'"; tail -3 "$dir/err.txt"; failed=$((failed + 1)); fi
exit $failed
