#!/usr/bin/env bash
# Fails when an #include crosses a forbidden edge between the top-level layers:
#   tools -> actors -> model -> kernels, and actors -> runtime.
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
    target=$(sed -E 's/.*#include "([a-z_]+)\/.*/\1/' <<<"$hit")
    case " ${allowed[$layer]} " in
      *" $target "*) ;;
      *) echo "layering violation: $file includes $target/ (a $layer file may include: ${allowed[$layer]})"; status=1 ;;
    esac
  done < <(grep -rnE '^#include "(kernels|model|runtime|actors|tools)/' "$layer" --include='*.h' --include='*.cc' --include='*.cu' || true)
done
# Backend headers stay in their folder: kernels/*.h carry no CUDA and no #ifdef on devices.
if grep -lE '#include <cuda|__CUDACC__|SEPAL_WITH_CUDA' kernels/*.h 2>/dev/null; then
  echo "layering violation: a kernels/ interface header mentions CUDA"
  status=1
fi
[ $status -eq 0 ] && echo "layering: ok"
exit $status
