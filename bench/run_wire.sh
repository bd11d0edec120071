#!/usr/bin/env bash
# Bytes of hidden states per token per hop, 8-bit blockwise compressed against f32, measured in
# the same run: a swarm of 3 hosts (mpirun) on the TinyLlama-1.1B shape with int8 weights
# generates the same prompt twice, once with --no-wire-compression. Also the decode speed of
# each. Writes bench/results/wire.csv.
#   bench/run_wire.sh   (synthetic checkpoint in ${SEPAL_BENCH_MODELS:-/tmp/sepal-bench})
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/bin/sepal ] || scripts/build.sh
source scripts/mpi_env.sh
model=${SEPAL_BENCH_MODELS:-/tmp/sepal-bench}/tinyllama-1.1b-bf16
[ -f "$model/model.safetensors" ] || build/bin/sepal synth --preset tinyllama-1.1b --dtype bf16 --out "$model"
out=bench/results/wire.csv
mkdir -p bench/results
echo "wire,bytes_per_token_hop,f32_bytes_per_token_hop,ratio,decode_tokens_per_s" > "$out"
for wire in f32 q8; do
  flag=(); [ "$wire" = f32 ] && flag=(--no-wire-compression)
  echo "bench/run_wire: 3 hosts, $wire hidden states..." >&2
  mpirun -np 4 build/bin/sepal generate --model "$model" --dtype int8 --prompt "Once upon a time" \
    --max-new-tokens 24 "${flag[@]}" --json 2>/dev/null |
    /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin); s = d["stats"]
hidden = json.load(open(sys.argv[2] + "/config.json"))["hidden_size"]
b, tps = s["wire_bytes_per_token_hop"], s["decode_tokens_per_s"]
print(f"{sys.argv[1]},{b:.1f},{4 * hidden},{b / (4 * hidden):.4f},{tps:.3f}")' "$wire" "$model" >> "$out"
done
column -s, -t "$out"
/usr/bin/python3 -c '
import csv, sys
rows = {r["wire"]: r for r in csv.DictReader(open(sys.argv[1]))}
q, f = rows["q8"], rows["f32"]
size = float(q["bytes_per_token_hop"]) / float(f["bytes_per_token_hop"])
speed = float(q["decode_tokens_per_s"]) / float(f["decode_tokens_per_s"])
print(f"compressed against f32 (same run): {size:.3f} of the bytes per token per hop; decode {speed:.2f}x")' "$out"
