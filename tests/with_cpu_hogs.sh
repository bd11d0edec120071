#!/usr/bin/env bash
# Runs a command with every core kept busy, as a block host computing on all cores keeps a
# machine: N busy processes (default: one per core) for the command's whole run, ended after it.
#   with_cpu_hogs.sh [N] -- COMMAND ARGS...
set -uo pipefail
hogs=$(nproc)
if [ "$1" != "--" ]; then hogs=$1; shift; fi
shift  # --
pids=()
for _ in $(seq "$hogs"); do
  timeout 1800 sh -c 'while :; do :; done' &
  pids+=($!)
done
"$@"
rc=$?
kill "${pids[@]}" 2>/dev/null
wait "${pids[@]}" 2>/dev/null
exit $rc
