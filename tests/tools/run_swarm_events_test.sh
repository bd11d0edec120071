#!/usr/bin/env bash
# A swarm under mpirun loses a host by graceful leave (SIGTERM), gains one that joins from a
# separately launched job (sepal serve --join), and is inspected by sepal status, all during one
# generation: the text must equal the reference, and the balancer's block map (the client's
# --block-map-log) must, after the leave, no longer list the leaver and still serve every block,
# and after the join list the newcomer with a range; a process with the wrong secret is refused.
#   run_swarm_events_test.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$2
source "$(dirname "$0")/../../scripts/mpi_env.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"; clean_mpi_leftovers' EXIT
ref="$models/reference/stories260K.greedy.json"
/usr/bin/python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["text"])' "$ref" > "$dir/expected.txt"
total=$(wc -c < "$dir/expected.txt")
printf 'sepal-test-swarm-secret-0123456789\n' > "$dir/secret"

wait_bytes() { for _ in $(seq 6000); do [ "$(wc -c < "$dir/out.txt")" -ge "$1" ] && return 0; sleep 0.005; done; return 1; }

: > "$dir/out.txt"
# 3 hosts of 3 blocks each: [0,3), [2,5) and a replica of [0,3); a 20 ms round trip on every link;
# f32 hidden states, so that the text is the reference's. The port file names the swarm by the
# address --listen-host gives.
timeout 240 mpirun -np 4 --enable-recovery "$sepal" generate \
  --model "$models/stories260K" --prompt "Once upon a time" --max-new-tokens 200 --max-blocks 3 \
  --wan rtt_ms=20 --no-wire-compression --listen "$dir/port" --listen-host 127.0.0.1 --secret-file "$dir/secret" --block-map-log "$dir/map.jsonl" \
  > "$dir/out.txt" 2> "$dir/err.txt" &
job=$!
failed=0
# 0. A process with the wrong secret is refused: exit status 1 (not 75: trying again cannot help),
# the reason on its last line, and the swarm logs whom it refused. Early and in the background:
# after the steps below, on a busy machine, the generation had sometimes ended and the port file
# was gone (the check then waited out its 60 s for an address).
wait_bytes $((total / 10))
printf 'not-the-swarm-secret-0123456789\n' > "$dir/wrong"
timeout 60 mpirun -np 1 "$sepal" status --join "$dir/port" --secret-file "$dir/wrong" \
  > /dev/null 2> "$dir/wrong.err" &
wrong=$!
# 1. Graceful leave of the route's last host, at 30% of the text.
wait_bytes $((total * 3 / 10))
leaver=$(sed -n 's/^sepal: route ([a-z]*): .*host \([0-9]*\) \[[0-9]*, [0-9]*)$/\1/p' "$dir/err.txt")
pid=$(sed -n "s/^sepal: host $leaver (pid \([0-9]*\)).*/\1/p" "$dir/err.txt" | head -1)
echo "leave: host $leaver (pid $pid) at $(wc -c < "$dir/out.txt") bytes"
[ -n "$pid" ] && kill -TERM "$pid"
# 2. A host joins from another job, at 50%.
wait_bytes $((total * 5 / 10))
echo "join: at $(wc -c < "$dir/out.txt") bytes"
port_line=$(head -1 "$dir/port" 2>/dev/null)
timeout 120 mpirun -np 1 "$sepal" serve --join "$dir/port" --secret-file "$dir/secret" \
  --model "$models/stories260K" --max-blocks 2 --wan rtt_ms=20 > "$dir/joiner.out" 2> "$dir/joiner.err" &
joiner=$!
# 3. sepal status once the newcomer serves, started without mpirun (joins need none).
for _ in $(seq 3000); do grep -q "serves blocks" "$dir/joiner.err" 2>/dev/null && break; sleep 0.01; done
timeout 60 "$sepal" status --join "$dir/port" --secret-file "$dir/secret" \
  > "$dir/status.txt" 2> "$dir/status.err"
echo "--- sepal status"; cat "$dir/status.txt"
wait $wrong
wrong_rc=$?
wait $job
wait $joiner

if cmp -s <(head -c -1 "$dir/out.txt") "$dir/expected.txt"; then echo "ok: text identical to the reference"
else echo "FAILED: the text changed"; failed=$((failed + 1)); fi
grep -q "blocks \[.*) move from host $leaver" "$dir/err.txt" && echo "ok: the leaver's blocks were re-routed" \
  || { echo "FAILED: no re-route away from host $leaver"; failed=$((failed + 1)); }
if /usr/bin/python3 - "$dir/map.jsonl" "$leaver" "$dir/status.txt" <<'PY'
import json, re, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
leaver = int(sys.argv[2])
def covers(m):
    return all(any(h["serving_first"] <= b < h["serving_last"] for h in m["hosts"]) for b in range(m["num_blocks"]))
def settled(m):
    return all(h["first"] == h["serving_first"] and h["last"] == h["serving_last"] for h in m["hosts"])
events = [l["event"] for l in lines]
print("balancer events:", events)
leave = next(i for i, l in enumerate(lines) if l["event"].startswith(f"leave {leaver}"))
assert all(h["peer"] != leaver for h in lines[leave]["hosts"]), "the leaver is still in the map"
after_leave = [l for l in lines[leave:] if settled(l)]
assert after_leave and covers(after_leave[0]), "after the leave, the settled map does not serve every block"
join = next(i for i, l in enumerate(lines) if i > leave and l["event"].startswith("join "))
newcomer = int(lines[join]["event"].split()[1].rstrip(";"))
entry = [h for h in lines[join]["hosts"] if h["peer"] == newcomer]
assert entry and entry[0]["last"] - entry[0]["first"] == 2, "the newcomer has no 2-block range"
final = lines[-1]
assert covers(final) and any(h["peer"] == newcomer for h in final["hosts"]), "final map wrong"
status = open(sys.argv[3]).read()
assert "stories260K: 5 blocks" in status and f"{newcomer:6d}  " in status, "sepal status does not show the newcomer"
newcomer_line = next(l for l in status.splitlines() if l.startswith(f"{newcomer:6d}  "))
assert re.search(r"f32 weights, f32 caches, cpu [a-z0-9]+$", newcomer_line), "sepal status does not show the newcomer's numerics"
print(f"ok: block map after the leave of {leaver} and the join of {newcomer}")
PY
then :; else echo "FAILED: block map checks"; failed=$((failed + 1)); fi
if [[ "$port_line" =~ ^tcp://127\.0\.0\.1:[0-9]+$ ]]; then echo "ok: the port file holds $port_line"
else echo "FAILED: the port file holds '$port_line', not --listen-host's address"; failed=$((failed + 1)); fi
if [ "$wrong_rc" = 1 ] && grep -q "^sepal status: error: cannot join the swarm: refused: wrong swarm secret" "$dir/wrong.err" \
  && grep -q "refused the join of .*: wrong swarm secret" "$dir/err.txt"; then
  echo "ok: a process with the wrong secret was refused (exit status 1) and the swarm logged it"
else
  echo "FAILED: the wrong secret: exit status $wrong_rc"; grep sepal "$dir/wrong.err"; failed=$((failed + 1))
fi
if [ "$failed" -ne 0 ]; then
  echo "--- client stderr"; tail -30 "$dir/err.txt"; echo "--- joiner stderr"; tail -10 "$dir/joiner.err"
  echo "--- status stderr"; grep -v "^ *$" "$dir/status.err" | head -5
fi
echo "$((5 - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
