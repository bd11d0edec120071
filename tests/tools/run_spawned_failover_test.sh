#!/usr/bin/env bash
# Hosts started by `sepal generate --hosts N` (MPI_Comm_spawn, no mpirun) are independent:
#   1. kill -9 of the route's first host of --hosts 4 --replicas 2, int8 weights and f32 hidden
#      states on tinystories-656K: the text is exactly the uninterrupted run's;
#   2. kill -9 of a host of --hosts 2 (no replica, nobody can move): the client ends within 60 s
#      with one error line naming the unserved blocks, and sleeps (does not spin) while it waits.
#   run_spawned_failover_test.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$2
source "$(dirname "$0")/../../scripts/mpi_env.sh"
dir=$(mktemp -d)
trap 'pkill -9 -f "$dir" 2>/dev/null; rm -rf "$dir"; clean_mpi_leftovers' EXIT
failed=0
model="$models/tinystories-656K"
run() {
  timeout 300 "$sepal" generate --model "$model" --prompt "Once upon a time, a little dog" --max-new-tokens 150 \
    --dtype int8 --no-wire-compression --wan rtt_ms=10 "$@"
}
# The pid of host $1 once it has printed it.
host_pid() {
  for _ in $(seq 3000); do
    local pid
    pid=$(sed -n "s/^sepal: host $1 (pid \([0-9]*\)).*/\1/p" "$dir/err.txt" | head -1)
    [ -n "$pid" ] && { echo "$pid"; return; }
    sleep 0.01
  done
}
wait_for_bytes() {
  for _ in $(seq 3000); do
    [ "$(wc -c < "$dir/out.txt")" -ge "$1" ] && return
    sleep 0.005
  done
}
# Clock ticks (user + system) a process has used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# 1. A replica takes over; the text does not change.
run --hosts 4 --replicas 2 > "$dir/expected.txt" 2> "$dir/err.txt" \
  || { echo "FAILED: the uninterrupted run"; tail -5 "$dir/err.txt"; exit 1; }
: > "$dir/out.txt"; : > "$dir/err.txt"
run --hosts 4 --replicas 2 > "$dir/out.txt" 2> "$dir/err.txt" &
job=$!
host=""
for _ in $(seq 3000); do
  host=$(sed -n 's/^sepal: route ([a-z]*): host \([0-9]*\) .*/\1/p' "$dir/err.txt")
  [ -n "$host" ] && break
  sleep 0.01
done
pid=$(host_pid "$host")
wait_for_bytes 80
at=$(wc -c < "$dir/out.txt")
[ -n "$pid" ] && kill -9 "$pid"
wait $job; rc=$?
if [ "$rc" -eq 0 ] && cmp -s "$dir/out.txt" "$dir/expected.txt" && grep -q "move from host $host" "$dir/err.txt"; then
  echo "ok: killed spawned host $host (pid $pid) at $at bytes; the others kept serving, text identical (int8)"
else
  echo "FAILED: kill of spawned host '$host' at $at bytes: exit $rc, text identical? $(cmp -s "$dir/out.txt" "$dir/expected.txt" && echo yes || echo no)"
  grep -E "sepal" "$dir/err.txt" | tail -8
  failed=$((failed + 1))
fi

# 2. No replica: one line, in bounded time, without spinning.
: > "$dir/out.txt"; : > "$dir/err.txt"
run --hosts 2 > "$dir/out.txt" 2> "$dir/err.txt" &
job=$!
pid=$(host_pid 2)
wait_for_bytes 60
client=$(pgrep -f -n "^$sepal generate --model $model")
kill -9 "$pid"
killed=$(date +%s.%N)
sleep 5  # past failure detection: the client is now waiting for a host that will not come
t0=$(cpu_ticks "$client"); w0=$(date +%s.%N)
sleep 10
t1=$(cpu_ticks "$client"); w1=$(date +%s.%N)
wait $job; rc=$?
took=$(echo "$(date +%s.%N) - $killed" | bc)
busy=$(echo "($t1 - $t0) / $(getconf CLK_TCK) / ($w1 - $w0)" | bc -l)
errors=$(grep -c "^sepal[a-z ]*: error:" "$dir/err.txt")
if [ "$rc" -ne 0 ] && [ "$errors" -eq 1 ] && grep -q "^sepal[a-z ]*: error: .*block" "$dir/err.txt" \
   && [ "$(echo "$took < 60" | bc)" -eq 1 ] && [ "$(echo "$busy < 0.2" | bc)" -eq 1 ]; then
  printf 'ok: no replica: "%s" %.0f s after the kill; the waiting client used %.0f%% of a core\n' \
    "$(grep '^sepal[a-z ]*: error:' "$dir/err.txt")" "$took" "$(echo "$busy * 100" | bc -l)"
else
  printf 'FAILED: no replica: exit %s after %.0f s, %s error lines, client busy %.2f of a core\n' "$rc" "$took" "$errors" "$busy"
  grep -E "sepal" "$dir/err.txt" | tail -6
  failed=$((failed + 1))
fi
echo "$((2 - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
