#!/usr/bin/env bash
# A join between two separately launched mpirun jobs, through the port file (no ompi-server).
#   run_connect_test.sh BINARY
set -uo pipefail
bin=$1
source "$(dirname "$0")/../../scripts/mpi_env.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
printf 'sepal-test-swarm-secret-0123456789\n' > "$dir/secret"
timeout 120 mpirun -np 2 --enable-recovery "$bin" listen "$dir/port" "$dir/secret" > "$dir/a.log" 2>&1 &
a=$!
timeout 120 mpirun -np 1 "$bin" connect "$dir/port" "$dir/secret" > "$dir/b.log" 2>&1
wait $a
echo "--- job A (listen)"; cat "$dir/a.log"; echo "--- job B (connect)"; cat "$dir/b.log"
passed=$(cat "$dir/a.log" "$dir/b.log" | grep -c ": passed$" || true)
failed=$(cat "$dir/a.log" "$dir/b.log" | grep -c "FAILED" || true)
clean_mpi_leftovers
if [ "$failed" -ne 0 ] || [ "$passed" -ne 3 ]; then
  echo "run_connect_test: $passed processes passed (expected 3), $failed failures"
  exit 1
fi
echo "run_connect_test: 3 processes passed"
