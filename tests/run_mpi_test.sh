#!/usr/bin/env bash
# Runs a test binary under mpirun on this node and checks the ranks' own verdicts: with
# --enable-recovery (a rank may be killed on purpose) mpirun exits 0 whatever happened.
#   run_mpi_test.sh NP EXPECTED_PASSES BINARY ARGS...
set -uo pipefail
np=$1; expected=$2; shift 2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
export OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
log=$(mktemp)
timeout 300 mpirun -np "$np" --enable-recovery "$@" > "$log" 2>&1
rc=$?
cat "$log"
passed=$(grep -c "conformance passed\|: passed$" "$log" || true)
failed=$(grep -c "FAILED" "$log" || true)
rm -f "$log"
# Killed ranks leave session directories and shared-memory segments behind. MPI tests hold the
# ctest resource lock "mpi", so no other job's files are removed here.
rm -rf /dev/shm/vader_segment.* /tmp/ompi.* 2>/dev/null || true
if [ "$rc" -eq 124 ]; then echo "run_mpi_test: timed out"; exit 1; fi
if [ "$failed" -ne 0 ] || [ "$passed" -ne "$expected" ]; then
  echo "run_mpi_test: $passed ranks passed (expected $expected), $failed failures"
  exit 1
fi
echo "run_mpi_test: $passed ranks passed"
