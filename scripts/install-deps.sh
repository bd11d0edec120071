#!/usr/bin/env bash
# Installs the Debian 12 packages sepal builds and runs with. Needs root (or sudo).
# Skips apt entirely when everything is already installed.
set -euo pipefail
packages=(
  cmake ninja-build g++ pkg-config git
  libopenblas-pthread-dev           # BLAS for prompt-sized matrix products (our threads call it)
  nlohmann-json3-dev                # config.json, tokenizer.json, safetensors headers
  libsentencepiece-dev              # tokenizer.model
  libpcre2-dev                      # byte-level BPE pre-tokenizer regexes (\p{L}, \p{N})
  libutf8proc-dev                   # Unicode normalization of tokenizer.json normalizers (NFC, ...)
  libboost-program-options-dev      # the sepal command line
  libgtest-dev libgmock-dev libbenchmark-dev
  libopenmpi-dev openmpi-bin libucx-dev ucx-utils   # distributed runtime
  libhdf5-dev hdf5-tools            # checkpoints of prompt tuning
  python3-h5py                      # the checkpoint tests read them as h5py users do
  python3-matplotlib                # benchmark plots
  python3-jinja2                    # the chat-template engine's test runs Jinja2 itself as the oracle
  python3-jsonschema                # structured outputs are checked against the reference JSON Schema validator
  python3-rfc3987                   # ... which checks URIs with it
  clang libclang-rt-14-dev          # libFuzzer for scripts/fuzz.sh
  libssl-dev                        # HMAC-SHA256 for the join challenge
  libcpp-httplib-dev                # the HTTP server of `sepal serve-api`
  chromium                          # its status page's test loads the page headless
  slurm-wlm munge                   # the Slurm tests run a real single-node Slurm
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm run the GGUF gpt2-vocabulary test against GPT-2's own encoder (any install will do).
command -v node > /dev/null && command -v npm > /dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
