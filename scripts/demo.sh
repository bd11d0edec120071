#!/usr/bin/env bash
# The main job: install dependencies, build, and generate text with a real model through a local
# swarm: mpirun starts the client driver and balancer (rank 0) and 3 block hosts.
#   scripts/demo.sh                                  # stories260K, "Once upon a time"
#   scripts/demo.sh --model DIR --prompt "..." ...   # any sepal generate flags
#   SEPAL_HOSTS=5 scripts/demo.sh                    # another number of block hosts
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
if [ $# -eq 0 ]; then
  set -- --model ../shared/models/stories260K --prompt "Once upon a time" --max-new-tokens 200
fi
source scripts/mpi_env.sh
exec mpirun -np $((${SEPAL_HOSTS:-3} + 1)) --enable-recovery build/bin/sepal generate "$@"
