#!/usr/bin/env bash
# Packs what scripts/gpu_check.sh runs on a GPU machine that has CUDA but none of sepal's Debian
# libraries (the `device` tool's machines, where nothing can be installed): this machine's CUDA
# build of sepal, the plugin, the gpu test programs and the GPU benchmark, every library they
# load but the NVIDIA driver's and cuBLAS (the dynamic loader and C library included, so they run
# whatever that machine's own are), and the shared models the tests read. Writes
# gpu-pack/pack.tar.xz (about 30 MB; git ignores it): name gpu-pack in the device run's carry.
set -euo pipefail
cd "$(dirname "$0")/.."
programs=(sepal backend_ops_test device_blocks_test device_training_test cuda_int8_test gpu_cli_test gpu_decode_bench)
ninja -C build "${programs[@]}" sepal_cuda > /dev/null
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/pack/bin" "$stage/pack/lib" "$stage/pack/models" gpu-pack
for p in "${programs[@]}" libsepal_cuda.so; do cp build/bin/"$p" "$stage/pack/bin/"; done
for p in "${programs[@]}" libsepal_cuda.so; do ldd build/bin/"$p"; done |
  awk '/=>/ { print $3 } $1 ~ /ld-linux/ { print $1 }' | sort -u |
  grep -v -E 'libcuda\.|libcublas|libnvidia' | while read -r lib; do cp -L "$lib" "$stage/pack/lib/"; done
models=${SEPAL_MODELS_DIR:-../shared/models}
cp -r "$models"/{stories260K,tinystories-656K,bloom-synth,reference} "$stage/pack/models/"
# The CLI tests run sepal through the packed loader (/proc/self/exe is then the loader, so the
# plugin's path is given too).
cat > "$stage/pack/bin/sepal-run" <<'SH'
#!/bin/sh
here=$(cd "$(dirname "$0")" && pwd)
export SEPAL_CUDA_PLUGIN="$here/libsepal_cuda.so"
exec "$here/../lib/ld-linux-x86-64.so.2" --library-path "$here/../lib:${SEPAL_CUDA_LIBS:-}" "$here/sepal" "$@"
SH
chmod +x "$stage/pack/bin/sepal-run"
tar -C "$stage" -cJf gpu-pack/pack.tar.xz pack
grep -q '^/gpu-pack/' .gitignore || echo '/gpu-pack/' >> .gitignore
echo "gpu-pack/pack.tar.xz: $(du -m gpu-pack/pack.tar.xz | cut -f1) MB"
