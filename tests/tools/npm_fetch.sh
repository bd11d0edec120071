# Packages from the npm registry for the tests that compare with JavaScript references (source it).
# One fetch at a time on this machine: the tests run in parallel, and concurrent npm processes
# sharing a cold cache (~/.npm/_cacache, CI's first run) can fail on each other's temporary files
# (npm/cli#1484 and later reports of EEXIST in _cacache/tmp). A fetch that fails is tried once
# more, 5 s later (a registry hiccup). Each is bounded by `timeout`, the lock's wait too.
#   npm_fetch_install DIR PACKAGE@VERSION...   npm install into DIR (DIR/node_modules/...)
#   npm_fetch_pack DIR PACKAGE@VERSION         the package's tarball unpacked into DIR/package
# Each prints a FAILED line and exits the test when node or npm is missing or the fetch fails.

_npm_fetch_locked() {  # WHAT COMMAND...: COMMAND under the machine-wide lock, tried twice
  local what=$1; shift
  command -v node > /dev/null && command -v npm > /dev/null \
    || { echo "FAILED: node and npm are needed (scripts/install-deps.sh)"; exit 1; }
  local cache=${npm_config_cache:-${HOME:-/tmp}/.npm}
  mkdir -p "$cache"
  local try
  for try in 1 2; do
    [ "$try" = 1 ] || sleep 5
    flock -w 600 "$cache/.sepal-tests.lock" timeout 240 "$@" > /dev/null 2>&1 && return 0
  done
  echo "FAILED: cannot fetch $what from the npm registry"
  exit 1
}

npm_fetch_install() {
  local dir=$1; shift
  _npm_fetch_locked "$*" npm install --silent --prefix "$dir" --no-audit --no-fund "$@"
}

npm_fetch_pack() {
  local dir=$1 package=$2
  mkdir -p "$dir/.pack"
  _npm_fetch_locked "$package" npm pack --silent --pack-destination "$dir/.pack" "$package"
  local tarball=("$dir"/.pack/*.tgz)
  [ -f "${tarball[0]}" ] && tar xzf "${tarball[0]}" -C "$dir" && rm -rf "$dir/.pack" \
    || { echo "FAILED: cannot unpack $package"; exit 1; }
}
