#!/usr/bin/env bash
# What each tuning method costs through a swarm: `sepal tune` through 3 hosts on loopback
# (mpirun -np 4, f32 on the wire) on a synthetic model of real width (768 wide, 2048 MLP, 4 blocks,
# 32000 vocabulary; random weights prove nothing but speed and bytes), SEPAL_BENCH_STEPS steps
# (default 4) of 8 sequences of 120 tokens in micro-batches of 2, for ptune and deep-ptune (16
# tokens), LoRA (rank 8 on q and v, and on every projection) and PEQA (int8 weights). Reports
# training tokens/s over the steps after the first and the tensor bytes a step spends between the
# client driver and the hosts, each against ptune's in the same run (PEQA's against ptune on the
# same int8 weights). Writes bench/results/adapter-training.csv.
#   bench/run_adapter_training.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/mpi_env.sh
steps=${SEPAL_BENCH_STEPS:-4}
[ -x build/bin/sepal ] || scripts/build.sh
source bench/tune_bench_setup.sh
run() {  # LABEL METHOD-FLAGS...
  local label=$1; shift
  timeout 900 mpirun -np 4 build/bin/sepal tune --model "$model" --data "$work/data.txt" "$@" --steps "$steps" \
    --batch-size 8 --micro-batch 2 --lr 0.01 --max-length 120 --out "$work/$label.h5" --log "$work/$label.jsonl" \
    --no-wire-compression > /dev/null 2> "$work/$label.err" || { echo "run failed: $label"; tail -3 "$work/$label.err"; exit 1; }
  rate=$(/usr/bin/python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if "loss" in l][1:]
print(sum(r["tokens"] for r in rows) / sum(r["seconds"] for r in rows))' "$work/$label.jsonl")
  mb=$(sed -n 's/.* MB of tensors to and from the hosts, \([0-9.]*\) MB a step/\1/p' "$work/$label.err")
  echo "$label $rate $mb" >> "$work/results"
}
run ptune --method ptune --prompt-tokens 16
run deep-ptune --method deep-ptune --prompt-tokens 16
run lora-qv --method lora --lora-rank 8 --lora-targets q_proj,v_proj
run lora-all --method lora --lora-rank 8 --lora-targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
run ptune-int8 --method ptune --prompt-tokens 16 --dtype int8
run peqa --method peqa --dtype int8
csv=bench/results/adapter-training.csv
/usr/bin/python3 - "$work/results" "$csv" <<'PY'
import sys
rows = {l.split()[0]: (float(l.split()[1]), float(l.split()[2])) for l in open(sys.argv[1])}
with open(sys.argv[2], "w") as out:
    out.write("method,tokens_per_s,time_per_step_vs_ptune,mb_per_step,bytes_vs_ptune\n")
    for name, (rate, mb) in rows.items():
        base = rows["ptune-int8" if name in ("peqa", "ptune-int8") else "ptune"]
        line = f"{name},{rate:.1f},{base[0] / rate:.3f},{mb:.3f},{mb / base[1]:.3f}"
        out.write(line + "\n")
        print(f"{name:11s} {rate:8.1f} tokens/s ({base[0] / rate:.2f} x ptune's time a step), {mb:7.3f} MB a step "
              f"({mb / base[1]:.2f} x ptune's)")
PY
echo "wrote $csv"
