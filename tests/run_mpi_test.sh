#!/usr/bin/env bash
# Runs a test binary under mpirun on this node and checks the ranks' own verdicts: with
# --enable-recovery (a rank may be killed on purpose) mpirun exits 0 whatever happened.
#   run_mpi_test.sh NP EXPECTED_PASSES BINARY ARGS...
set -uo pipefail
np=$1; expected=$2; shift 2
source "$(dirname "$0")/../scripts/mpi_env.sh"
log=$(mktemp)
timeout 300 mpirun -np "$np" --enable-recovery "$@" > "$log" 2>&1
rc=$?
cat "$log"
passed=$(grep -c "conformance passed\|: passed$" "$log" || true)
failed=$(grep -c "FAILED" "$log" || true)
rm -f "$log"
clean_mpi_leftovers
if [ "$rc" -eq 124 ]; then echo "run_mpi_test: timed out"; exit 1; fi
if [ "$failed" -ne 0 ] || [ "$passed" -ne "$expected" ]; then
  echo "run_mpi_test: $passed ranks passed (expected $expected), $failed failures"
  exit 1
fi
echo "run_mpi_test: $passed ranks passed"
