# Shared by the tuning benchmarks (source it after `cd` to the repository): the synthetic model of
# real width they train on (768 wide, 2048 MLP, 4 blocks, 32000 vocabulary; random weights prove
# nothing but speed and bytes), written once under SEPAL_BENCH_MODELS (default /tmp/sepal-bench),
# and 64 documents of 200 random words in $work/data.txt. Sets `model` and `work` (removed on exit).
models=${SEPAL_BENCH_MODELS:-/tmp/sepal-bench}
model=$models/tune-768x4
[ -f "$model/model.safetensors" ] || build/bin/sepal synth --out "$model" --hidden 768 --intermediate 2048 --layers 4 \
  --heads 12 --kv-heads 12 --vocab 32000 --max-positions 1024 2>/dev/null
mkdir -p bench/results
work=$(mktemp -d /tmp/sepal-tune-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 - "$work/data.txt" <<'PY'
import random, sys
random.seed(1)
words = "the a cat dog sun big little red blue ran jumped happy sad tree park ball girl boy played saw went home".split()
with open(sys.argv[1], "w") as f:
    for _ in range(64):
        f.write(" ".join(random.choice(words) for _ in range(200)).capitalize() + ".\n\n")
PY
