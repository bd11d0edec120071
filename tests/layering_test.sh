#!/usr/bin/env bash
# Fails when an #include crosses a forbidden edge between the top-level layers:
#   tools -> actors -> model -> kernels, and actors -> runtime;
# when MPI or UCX headers appear outside runtime/ and the node wiring (actors/swarm_node.*), or
# tools/ includes a transport, MPI or UCX header; when a kernels/ interface header mentions CUDA;
# or when an actor waits (sleep_for, a condition variable, request_sync) outside the blocking
# facade (actors/blocking_facade.*).
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"
declare -A allowed=(
  [kernels]="kernels"
  [model]="model kernels"
  [runtime]="runtime"
  [actors]="actors runtime model kernels"
  [tools]="tools actors runtime model kernels"
)
status=0
for layer in "${!allowed[@]}"; do
  [ -d "$layer" ] || continue
  while IFS= read -r hit; do
    file=${hit%%:*}
    [[ $hit =~ \#include\ \"([a-z_]+)/ ]] && target=${BASH_REMATCH[1]}  # no process per line: thousands of them
    case " ${allowed[$layer]} " in
      *" $target "*) ;;
      *) echo "layering violation: $file includes $target/ (a $layer file may include: ${allowed[$layer]})"; status=1 ;;
    esac
  done < <(grep -rnE '^#include "(kernels|model|runtime|actors|tools)/' "$layer" --include='*.h' --include='*.cc' --include='*.cu' || true)
done
# Backend headers stay in their folder: kernels/*.h carry no CUDA and no #if on the build's CUDA
# option (SEPAL_CUDA, CMakeLists.txt) or on the device compiler.
if grep -lE '#include <cuda|__CUDACC__|\bSEPAL_CUDA\b' kernels/*.h 2>/dev/null; then
  echo "layering violation: a kernels/ interface header mentions CUDA"
  status=1
fi
# MPI and UCX stay in runtime/ and the node wiring.
while IFS= read -r file; do
  case "$file" in
    runtime/*|actors/swarm_node.h|actors/swarm_node.cc) ;;
    *) echo "layering violation: $file includes an MPI or UCX header (only runtime/ and actors/swarm_node.*)"; status=1 ;;
  esac
done < <(grep -rlE '^#include <(mpi\.h|ucp/|uct/|ucs/)' runtime actors model kernels tools --include='*.h' --include='*.cc' 2>/dev/null || true)
# tools/ parses flags: no transport, MPI, UCX or spawning header of the runtime.
if grep -nE '^#include "runtime/(transport|[a-z_]*_transport|mpi_[a-z_]*|ucx[a-z_]*|process_spawn|swarm_join)\.h"' tools/*.h tools/*.cc 2>/dev/null; then
  echo "layering violation: tools/ includes a transport, MPI or spawning header (use actors/swarm_launch.h)"
  status=1
fi
# Actors never wait; the blocking facade is the one place in actors/ that does.
if grep -nE 'sleep_for|condition_variable|request_sync' actors/*.h actors/*.cc 2>/dev/null | grep -v '^actors/blocking_facade\.'; then
  echo "layering violation: a wait in actors/ outside actors/blocking_facade.*"
  status=1
fi
[ $status -eq 0 ] && echo "layering: ok"
exit $status
