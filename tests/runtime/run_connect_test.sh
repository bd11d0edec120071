#!/usr/bin/env bash
# Join by connect/accept between two separately launched mpirun jobs sharing an ompi-server.
#   run_connect_test.sh BINARY
set -uo pipefail
bin=$1
source "$(dirname "$0")/../../scripts/mpi_env.sh"
dir=$(mktemp -d)
trap 'kill $server 2>/dev/null; rm -rf "$dir"' EXIT
printf 'sepal-test-swarm-secret-0123456789\n' > "$dir/secret"
ompi-server --no-daemonize --report-uri "$dir/uri" > "$dir/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do [ -s "$dir/uri" ] && break; sleep 0.05; done
timeout 120 mpirun --ompi-server "file:$dir/uri" -np 2 --enable-recovery "$bin" listen "$dir/port" "$dir/secret" > "$dir/a.log" 2>&1 &
a=$!
timeout 120 mpirun --ompi-server "file:$dir/uri" -np 1 "$bin" connect "$dir/port" "$dir/secret" > "$dir/b.log" 2>&1
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
