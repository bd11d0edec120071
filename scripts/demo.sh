#!/usr/bin/env bash
# The main job: install dependencies, build, and generate text with a real model.
#   scripts/demo.sh                                  # stories260K, "Once upon a time"
#   scripts/demo.sh --model DIR --prompt "..." ...   # any sepal generate flags
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
if [ $# -eq 0 ]; then
  set -- --model ../shared/models/stories260K --prompt "Once upon a time" --max-new-tokens 200
fi
exec build/bin/sepal generate "$@"
