#!/usr/bin/env bash
# The fault matrix of an mpirun swarm (stories260K, 4 hosts, 2 per block range, 10 ms round trip
# on every link): each fault hits the route's first host during the prompt, early and late in
# decoding, and the text must be exactly the uninterrupted run's.
#   kill  kill -9: the host is gone;
#   stop  SIGSTOP for 5 s, then SIGCONT: a straggler; the client routes around it once it has
#         been silent for the failure timeout (2 s here), and nothing breaks when it resumes;
#   term  SIGTERM: a graceful leave;
#   pause SIGSTOP for 2 s under the default 5 s failure timeout: a stall (a busy node) that the
#         swarm rides out: no host is moved, and the text goes on where it stopped.
# Each row prints the recovery time, from the fault to the next token on the client's output
# (the goal for kill -9 is under 2 s). The partition row of the matrix runs in process, through
# the fault-injection transport (swarm_test, SwarmFaults). Hidden states travel as f32: routes
# vary between runs, and each hop boundary quantizes compressed ones.
# Flags after `--` go to every generate run (e.g. a draft: the faults then hit tree steps).
#   run_fault_matrix.sh SEPAL_BINARY MODELS_DIR [FAULTS...] [-- GENERATE_FLAGS...]   # default: kill stop term pause
set -uo pipefail
sepal=$1; models=$2; shift 2
faults=(); extra=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do faults+=("$1"); shift; done
[ $# -gt 0 ] && shift && extra=("$@")
[ ${#faults[@]} -eq 0 ] && faults=(kill stop term pause)
source "$(dirname "$0")/../../scripts/mpi_env.sh"
# Info lines with times (a few dozen a run): a failed row prints the whole run's story.
export SEPAL_LOG=${SEPAL_LOG:-info} SEPAL_LOG_TIME=1
dir=$(mktemp -d)
trap 'rm -rf "$dir"; clean_mpi_leftovers' EXIT
# A 2 s failure timeout (the default is 5 s) except for the pause: the 5 s stop must outlast it,
# so that the client routes around the stopped host.
run() {
  local timeout=2
  [ "${fault:-}" = pause ] && timeout=5
  timeout 180 mpirun -np 5 --enable-recovery "$sepal" generate --model "$models/stories260K" \
    --prompt "Once upon a time" --max-new-tokens 200 --replicas 2 --wan rtt_ms=10 --no-wire-compression \
    --failure-timeout "$timeout" ${extra[@]+"${extra[@]}"} "$@"
}
now() { date +%s.%N; }
poll=(/usr/bin/python3 "$(dirname "$0")/poll_files.py")  # waits without a fork every few ms beside the swarm
run > "$dir/expected.txt" 2> "$dir/err.txt" || { echo "FAILED: the uninterrupted run"; tail -5 "$dir/err.txt"; exit 1; }
truncate -s -1 "$dir/expected.txt"  # the final newline
prompt_bytes=$(printf 'Once upon a time' | wc -c)
failed=0; total=0
for fault in "${faults[@]}"; do
  for point in prompt early late; do
    total=$((total + 1))
    case $point in
      prompt) threshold=$prompt_bytes ;;             # prompt printed: its forward pass is under way
      early) threshold=$((prompt_bytes + 20)) ;;
      late) threshold=$(( $(wc -c < "$dir/expected.txt") * 8 / 10 )) ;;  # 80% of the text
    esac
    : > "$dir/out.txt"; : > "$dir/err.txt"
    run > "$dir/out.txt" 2> "$dir/err.txt" &
    job=$!
    pid=""
    host=$("${poll[@]}" match "$dir/err.txt" '^sepal: route \([a-z]*\): host ([0-9]+) ' 30)
    [ -n "$host" ] && pid=$("${poll[@]}" match "$dir/err.txt" "^sepal: host $host \\(pid ([0-9]+)\\)" 30)
    "${poll[@]}" size "$dir/out.txt" "$threshold" 30
    at=$(wc -c < "$dir/out.txt")
    t0=$(now)
    case $fault in
      kill) [ -n "$pid" ] && kill -9 "$pid" ;;
      stop) [ -n "$pid" ] && kill -STOP "$pid" && (sleep 5; kill -CONT "$pid") & ;;
      pause) [ -n "$pid" ] && kill -STOP "$pid" && (sleep 2; kill -CONT "$pid") & ;;
      term) [ -n "$pid" ] && kill -TERM "$pid" ;;
    esac
    # Recovery: the first output after the client moved the host's blocks (output before that
    # may come from tokens computed before the fault).
    after=()
    [ "$fault" = pause ] && after=("$at")  # nothing moves: the first output after the fault
    recovery=$("${poll[@]}" recovery "$dir/out.txt" "$dir/err.txt" "move from host $host\b" "$t0" "$job" ${after[@]+"${after[@]}"})
    wait $job
    wait  # the SIGCONT helper
    moved=$(grep -c "move from host $host" "$dir/err.txt")
    if [ "$fault" = pause ]; then moved_ok=$([ "$moved" -eq 0 ] && ! grep -qE "\[(warn|error)\].*failed" "$dir/err.txt" && echo yes)
    else moved_ok=$([ "$moved" -ge 1 ] && echo yes); fi
    if cmp -s <(head -c -1 "$dir/out.txt") "$dir/expected.txt" && [ "$moved_ok" = yes ]; then
      printf 'ok: %-4s host %s at %-6s (%4d bytes): text identical, next token %s s after the fault\n' \
        "$fault" "$host" "$point" "$at" "${recovery:-(none: the run ended)}"
    else
      echo "FAILED: $fault of host $host at $point ($at bytes): text identical? $(cmp -s <(head -c -1 "$dir/out.txt") "$dir/expected.txt" && echo yes || echo no), moved $moved times$([ "$fault" = pause ] && echo " (a pause must move none, and fail no one)")"
      grep -vE "^sepal: route|^$" "$dir/err.txt" | tail -60
      failed=$((failed + 1))
    fi
  done
done
echo "$((total - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
