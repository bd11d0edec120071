# What the serve-api tests share (source it): a temporary folder, and a `sepal serve-api` started
# on a free port and stopped by SIGTERM.
#   source serve_api.sh    # sets dir; defines start_server, stop_server, chat_prompt_tokens, post_status, npm_packages
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../../scripts/mpi_env.sh"
source "$here/../tools/npm_fetch.sh"
dir=$(mktemp -d)
server=0
cleanup() {
  [ "$server" -gt 0 ] && kill -9 "$server" 2> /dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

# start_server SEPAL ARGS...: `SEPAL serve-api ARGS --port 0` in the background, its log in
# $dir/server.err (info lines with times, for a failure's post-mortem); sets server (the pid) and
# port, or fails the test.
start_server() {
  local sepal=$1
  shift
  # Emptied here, before the launch: the child's own redirection truncates it only once it runs,
  # and until then the poll below would read the previous server's log (its "serving" line and
  # port; CI saw a test talk to a server already stopped, and SIGTERM one still loading).
  : > "$dir/server.err"
  : > "$dir/server.out"
  SEPAL_LOG=info SEPAL_LOG_TIME=1 "$sepal" serve-api "$@" --port 0 > "$dir/server.out" 2> "$dir/server.err" &
  server=$!
  for _ in $(seq 1 240); do grep -qs "^sepal: serving .* at http://" "$dir/server.err" && break; kill -0 $server 2> /dev/null || break; sleep 0.25; done
  port=$(sed -n 's/.*at http:\/\/127.0.0.1:\([0-9]*\)\/v1.*/\1/p' "$dir/server.err")
  [ -n "$port" ] || { echo "FAILED: the server did not start"; cat "$dir/server.err"; exit 1; }
}

# stop_server: SIGTERM, then the server must end within 20 s and exit 0, and every host process it
# started must end too; prints FAILED lines and returns 1 otherwise.
stop_server() {
  kill -TERM $server
  for _ in $(seq 1 80); do kill -0 $server 2> /dev/null || break; sleep 0.25; done
  if kill -0 $server 2> /dev/null; then echo "FAILED: the server did not end within 20 s of SIGTERM"; return 1; fi
  wait $server
  local code=$?
  server=0
  [ $code -eq 0 ] || { echo "FAILED: the server exited with $code"; return 1; }
  # Its hosts end with it (the ones killed on purpose are gone already).
  local pid
  for pid in $(sed -n 's/^sepal: host [0-9]* (pid \([0-9]*\)).*/\1/p' "$dir/server.err"); do
    for _ in $(seq 1 20); do kill -0 "$pid" 2> /dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2> /dev/null; then echo "FAILED: host process $pid outlived the server"; kill -9 "$pid"; return 1; fi
  done
}

# chat_prompt_tokens MODEL_NAME CHATS.json: each chat of the JSON list sent to the running server's
# chat completions (1 token), its usage.prompt_tokens printed one a line; fails on an HTTP error.
chat_prompt_tokens() {
  /usr/bin/python3 - "$port" "$1" "$2" <<'PY'
import json, sys, urllib.request
for chat in json.load(open(sys.argv[3])):
    body = json.dumps({"model": sys.argv[2], "messages": chat, "max_tokens": 1}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/chat/completions", body, {"Content-Type": "application/json"})
    print(json.load(urllib.request.urlopen(req))["usage"]["prompt_tokens"])
PY
}

# post_status PATH BODY: BODY (JSON) posted to the running server's PATH; prints "200" when it is
# accepted, else the HTTP status and the error's message ("400 the model's chat template ...").
post_status() {
  /usr/bin/python3 - "$port" "$1" "$2" <<'PY'
import json, sys, urllib.error, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}{sys.argv[2]}", sys.argv[3].encode(), {"Content-Type": "application/json"})
try:
    urllib.request.urlopen(req)
    print(200)
except urllib.error.HTTPError as e:
    print(e.code, json.load(e)["error"]["message"])
PY
}

# npm_packages PACKAGE...: node, npm and python3-jinja2 present, and the packages installed into
# $dir; fails the test otherwise.
npm_packages() {
  /usr/bin/python3 -c 'import jinja2' 2> /dev/null || { echo "FAILED: python3-jinja2 is needed (scripts/install-deps.sh)"; exit 1; }
  npm_fetch_install "$dir" "$@"
}
