#!/usr/bin/env bash
# kill -9 of the route's first block host (its blocks have a replica), during the prompt, early
# and late in decoding: generation finishes with exactly the text of an uninterrupted run (the
# client re-routes the hop's blocks and replays its inputs there to rebuild the caches). Hidden
# states travel as f32 here because routes vary between runs and each hop boundary quantizes
# compressed ones; swarm_test checks a failover with compression on fixed hop boundaries.
#   run_failover_test.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$2
source "$(dirname "$0")/../scripts/mpi_env.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"; clean_mpi_leftovers' EXIT
run() {
  timeout 180 mpirun -np 5 --enable-recovery "$sepal" generate --model "$models/stories260K" \
    --prompt "Once upon a time" --max-new-tokens 200 --replicas 2 --wan rtt_ms=10 --no-wire-compression "$@"
}
run > "$dir/expected.txt" 2> "$dir/err.txt" || { echo "FAILED: the uninterrupted run"; cat "$dir/err.txt"; exit 1; }
truncate -s -1 "$dir/expected.txt"  # the final newline
prompt_bytes=$(printf 'Once upon a time' | wc -c)
failed=0
for point in prompt early late; do
  case $point in
    prompt) threshold=$prompt_bytes ;;             # prompt printed: its forward pass is under way
    early) threshold=$((prompt_bytes + 20)) ;;
    late) threshold=$(( $(wc -c < "$dir/expected.txt") * 8 / 10 )) ;;  # 80% of the text
  esac
  : > "$dir/out.txt"; : > "$dir/err.txt"
  # 4 hosts, 2 per block range; a 10 ms round trip on every link makes the kill land where meant.
  run > "$dir/out.txt" 2> "$dir/err.txt" &
  job=$!
  pid=""; host=""
  for _ in $(seq 3000); do
    host=$(sed -n 's/^sepal: route ([a-z]*): host \([0-9]*\) .*/\1/p' "$dir/err.txt")
    [ -n "$host" ] && pid=$(sed -n "s/^sepal: host $host (pid \([0-9]*\)).*/\1/p" "$dir/err.txt" | head -1)
    [ -n "$pid" ] && break
    sleep 0.01
  done
  for _ in $(seq 3000); do
    [ "$(wc -c < "$dir/out.txt")" -ge "$threshold" ] && break
    sleep 0.002
  done
  at=$(wc -c < "$dir/out.txt")
  [ -n "$pid" ] && kill -9 "$pid"
  wait $job
  if cmp -s <(head -c -1 "$dir/out.txt") "$dir/expected.txt" && grep -q "move from host $host" "$dir/err.txt"; then
    echo "ok: killed host $host (pid $pid) at $point ($at bytes of output); text identical, failover logged"
  else
    echo "FAILED: kill at $point ($at bytes): text identical? $(cmp -s <(head -c -1 "$dir/out.txt") "$dir/expected.txt" && echo yes || echo no)"
    grep -E "sepal|error" "$dir/err.txt" | head -8
    failed=$((failed + 1))
  fi
done
echo "$((3 - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
