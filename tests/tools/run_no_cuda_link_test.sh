#!/usr/bin/env bash
# The sepal program links no CUDA library, in a CPU-only build and in a CUDA build alike (there
# the CUDA backend is the plugin libsepal_cuda.so, loaded only when a GPU is asked for): it
# starts on a node without CUDA, as small as the CPU-only build.
#   run_no_cuda_link_test.sh SEPAL_BINARY
set -uo pipefail
sepal=$1
linked=$(ldd "$sepal" | grep -i -E 'libcuda|libcudart|libcublas|libnccl|libnvidia' || true)
if [ -n "$linked" ]; then echo "FAILED: $sepal links CUDA libraries:"; echo "$linked"; exit 1; fi
help=$("$sepal" generate --help)
grep -q -- '--device' <<< "$help" || { echo "FAILED: generate --help lists no --device"; exit 1; }
echo "ok: $sepal links no CUDA library"
