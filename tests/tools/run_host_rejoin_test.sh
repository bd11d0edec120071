#!/usr/bin/env bash
# Hosts that the swarm dropped join again by themselves, in the same process, as new members:
# one that joined through the swarm's port file (sepal serve --join) and one that mpirun started
# as a rank of the swarm's job, each stopped past the failure timeout in turn. Each must say it
# was dropped and serve again. While each is stopped, past the failure timeout, the swarm's other
# processes stay near idle (UCX's queue to a stopped process fills, and its progress thread once
# spun at 60% of a core in each of them). Then an API completion through them must give the
# reference text, sepal status must list them alone, and both must still end cleanly: the joiner
# on SIGTERM with status 0, the mpirun rank (its MPI world left as it was) with the job.
#   run_host_rejoin_test.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$2
source "$(dirname "$0")/../../scripts/mpi_env.sh"
source "$(dirname "$0")/cpu_ticks.sh"
dir=$(mktemp -d)
swarm="" joiner="" pid=""
cleanup() {
  [ -n "$pid" ] && kill -CONT "$pid" 2>/dev/null
  [ -n "$joiner" ] && kill -TERM "$joiner" 2>/dev/null
  [ -n "$swarm" ] && kill -TERM "$swarm" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$dir"; clean_mpi_leftovers
}
trap cleanup EXIT
model="$models/stories260K"
ref="$models/reference/stories260K.greedy.json"
printf 'sepal-test-swarm-secret-0123456789\n' > "$dir/secret"
failed=0
fail() { echo "FAILED: $*"; failed=$((failed + 1)); }
# Waits up to $2 seconds for a line matching $1 in file $3.
wait_line() { for _ in $(seq $(($2 * 20))); do grep -q "$1" "$3" 2>/dev/null && return 0; sleep 0.05; done; return 1; }
# Stops process $1 for 4 s, twice the failure timeout; over its 4th second, each of processes
# $2... may use a quarter of a core at most.
stop_and_watch() {
  local stopped=$1; shift
  [ $# -gt 0 ] || { fail "no other process of the swarm found to watch while pid $stopped is stopped"; return; }
  kill -STOP "$stopped"; sleep 2.8
  local busiest; busiest=$(busiest_ticks "$@")
  sleep 0.2; kill -CONT "$stopped"
  [ $((busiest * 4)) -le "$(getconf CLK_TCK)" ] \
    && echo "ok: while pid $stopped was stopped, the busiest of the others ($*) used $busiest of $(getconf CLK_TCK) ticks in a second" \
    || fail "while pid $stopped was stopped, one of the others ($*) used $busiest of $(getconf CLK_TCK) ticks in a second"
}

# The swarm: an API server (rank 0) and one host of every block (rank 1); a 2 s failure timeout;
# f32 hidden states on the wire, so that the text is the reference.
timeout 300 mpirun -np 2 --enable-recovery "$sepal" serve-api --model "$model" --port 0 --failure-timeout 2 --no-wire-compression \
  --listen "$dir/port" --listen-host 127.0.0.1 --secret-file "$dir/secret" > "$dir/api.out" 2> "$dir/api.err" &
swarm=$!
wait_line "^sepal: serving .* at http://" 120 "$dir/api.err" || { cat "$dir/api.err"; exit 1; }
url=$(sed -n 's/^sepal: serving .* at \(http:[^ ]*\) .*/\1/p' "$dir/api.err")
first_host=$(sed -n 's/^sepal: host [0-9]* (pid \([0-9]*\)) serves.*/\1/p' "$dir/api.err" | head -1)

# The joiner, holding every block too.
timeout 240 "$sepal" serve --join "$dir/port" --secret-file "$dir/secret" --model "$model" --max-blocks 5 \
  --failure-timeout 2 > "$dir/joiner.out" 2> "$dir/joiner.err" &
joiner=$!
wait_line "serves blocks" 60 "$dir/joiner.err" || fail "the host did not join"
first_id=$(sed -n 's/^sepal: host \([0-9]*\) (pid [0-9]*) serves.*/\1/p' "$dir/joiner.err" | head -1)
pid=$(sed -n 's/^sepal: host [0-9]* (pid \([0-9]*\)) serves.*/\1/p' "$dir/joiner.err" | head -1)

# Stopped for 4 s, twice the failure timeout.
stop_and_watch "$pid" $(pgrep -f -- "--listen $dir/port")
if wait_line "^sepal: joining the swarm again through $dir/port" 30 "$dir/joiner.err" \
   && grep -q "^sepal: host $first_id done (this host did not run for [0-9.]* s, longer than the failure timeout, and the swarm dropped it)" "$dir/joiner.err"
then echo "ok: the stopped host knew the swarm had dropped it, and joined again"
else fail "the stopped host did not say it was dropped and join again"; fi
for _ in $(seq 600); do [ "$(grep -c "serves blocks" "$dir/joiner.err")" -ge 2 ] && break; sleep 0.05; done
second_id=$(sed -n 's/^sepal: host \([0-9]*\) (pid [0-9]*) serves.*/\1/p' "$dir/joiner.err" | sed -n 2p)
second_pid=$(sed -n 's/^sepal: host [0-9]* (pid \([0-9]*\)) serves.*/\1/p' "$dir/joiner.err" | sed -n 2p)
if [ -n "$second_id" ] && [ "$second_id" != "$first_id" ] && [ "$second_pid" = "$pid" ]
then echo "ok: host $first_id serves again as host $second_id, in the same process"
else fail "the host did not serve again (ids: $first_id, ${second_id:-none})"; fi

# The mpirun rank's host, stopped for 4 s too: it joins again through the swarm's port file.
stop_and_watch "$first_host" $(pgrep -f -- "--listen $dir/port" | grep -vx "$first_host") "$pid"
if wait_line "^sepal: joining the swarm again through $dir/port" 30 "$dir/api.err" \
   && grep -q "this host did not run for [0-9.]* s, longer than the failure timeout, and the swarm dropped it" "$dir/api.err"
then echo "ok: the stopped mpirun rank knew the swarm had dropped it, and joined again"
else fail "the stopped mpirun rank did not say it was dropped and join again"; fi
for _ in $(seq 600); do [ "$(grep -c "^sepal: host [0-9]* (pid $first_host) serves" "$dir/api.err")" -ge 2 ] && break; sleep 0.05; done
rank_id=$(sed -n "s/^sepal: host \([0-9]*\) (pid $first_host) serves.*/\1/p" "$dir/api.err" | sed -n 2p)
[ -n "$rank_id" ] && echo "ok: the mpirun rank serves again as host $rank_id, in the same process" \
  || fail "the mpirun rank did not serve again"

# Both hosts the swarm now has joined again: a completion through them is the reference.
if /usr/bin/python3 - "$url" "$ref" <<'PY'
import json, sys, urllib.request
url, ref = sys.argv[1], json.load(open(sys.argv[2]))
body = {"model": "stories260K", "prompt": ref["prompt"], "max_tokens": len(ref["generated_ids"]), "temperature": 0}
req = urllib.request.Request(url + "/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
try:
    text = json.load(urllib.request.urlopen(req, timeout=120))["choices"][0]["text"]
except Exception as e:
    sys.exit(f"the request failed: {e}: {getattr(e, 'read', lambda: b'')().decode()}")
if ref["prompt"] + text != ref["text"]:
    sys.exit(f"the text differs: {text[:80]!r}")
PY
then echo "ok: the completion through the rejoined hosts is the reference"
else fail "the completion through the rejoined hosts is not the reference"; fi
timeout 60 "$sepal" status --join "$dir/port" --secret-file "$dir/secret" > "$dir/status.txt" 2> "$dir/status.err"
if grep -q "^ *$second_id  \[0, 5)  " "$dir/status.txt" && grep -q "^ *$rank_id  \[0, 5)  " "$dir/status.txt" \
   && grep -q "^stories260K: 5 blocks, 2 hosts (map" "$dir/status.txt"
then echo "ok: sepal status lists hosts $second_id and $rank_id alone, each serving every block"
else fail "sepal status:"; cat "$dir/status.txt" "$dir/status.err"; fi

# A graceful leave still ends the rejoined joiner with status 0, and the job's end the rank.
kill -TERM "$pid"; wait "$joiner"; rc=$?
joiner=""
[ "$rc" = 0 ] && echo "ok: the rejoined joiner left on SIGTERM with status 0" || fail "the rejoined joiner's exit status on SIGTERM: $rc"
# The job ends on SIGTERM within 30 s, the rejoined rank with it: none hangs on the MPI world
# it left as it was, and none fails. (mpirun itself exits with 1 after it forwards a SIGTERM, and
# the ranks' last lines may not reach its output.)
kill -TERM "$swarm"
for _ in $(seq 300); do kill -0 "$swarm" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$swarm" 2>/dev/null; then
  fail "the job did not end within 30 s of a SIGTERM"
else
  wait "$swarm"; rc=$?
  if [ "$rc" != 124 ] && [ "$rc" != 137 ] && ! grep -qiE "exited on signal|non-zero exit|abort" "$dir/api.err"
  then echo "ok: the job ended on SIGTERM with the rejoined rank, and no rank failed"
  else fail "the job's end on SIGTERM (mpirun exit $rc)"; fi
fi
swarm=""
if [ "$failed" -ne 0 ]; then
  echo "--- swarm stderr"; tail -20 "$dir/api.err"; echo "--- joiner stderr"; tail -20 "$dir/joiner.err"
fi
echo "$((10 - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
