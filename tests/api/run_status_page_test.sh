#!/usr/bin/env bash
# The live status page of `sepal serve-api` over a 3-host swarm, loaded in headless Chromium: it
# shows every host with its blocks; after one host is killed it shows the others only, and the
# failure among the recent changes, without a reload. /metrics answers in Prometheus' format. The
# page and /metrics show each host's numerics.
#   run_status_page_test.sh SEPAL_BINARY MODELS_DIR [SCREENSHOT.png]
set -uo pipefail
sepal=$1 models=$2 screenshot=${3:-}
source "$(dirname "$0")/serve_api.sh"
browser=$(command -v chromium || command -v chromium-browser) || { echo "FAILED: chromium is needed (scripts/install-deps.sh)"; exit 1; }
dom() {  # the page's DOM once its script has polled /status
  timeout 60 "$browser" --headless --disable-gpu --no-sandbox --user-data-dir="$dir/profile" \
    --virtual-time-budget=3000 --dump-dom "http://127.0.0.1:$port/" 2> /dev/null
}
hosts_shown() { grep -o 'id="host-[0-9]*">host [0-9]*: blocks \[[0-9]*, [0-9]*)' | sed 's/.*">//' | sort; }
start_server "$sepal" --model "$models/stories260K" --hosts 3
status=0
fail() { echo "FAILED: $*"; status=1; }
dom > "$dir/before.html"
hosts_shown < "$dir/before.html" > "$dir/before.txt"
cat "$dir/before.txt"
[ "$(wc -l < "$dir/before.txt")" -eq 3 ] || fail "the page shows $(wc -l < "$dir/before.txt") hosts, not 3"
for peer in 1 2 3; do grep -q "^host $peer: blocks" "$dir/before.txt" || fail "host $peer is not on the page"; done
curl -s "http://127.0.0.1:$port/metrics" > "$dir/metrics"
grep -q '^sepal_swarm_hosts 3$' "$dir/metrics" || fail "/metrics: sepal_swarm_hosts is not 3"
grep -q '^# TYPE sepal_api_requests_total counter$' "$dir/metrics" || fail "/metrics: no typed request counter"
[ "$(grep -c '^sepal_block_replicas{block="[0-9]*"} [1-9]' "$dir/metrics")" -eq 5 ] || fail "/metrics: a block without a replica"
# Every host announces its numerics: on the page and as a labelled gauge.
[ "$(grep -o '<td>f32 weights, f32 caches, cpu [a-z0-9]*</td>' "$dir/before.html" | wc -l)" -eq 3 ] || fail "the page does not show 3 hosts' numerics"
[ "$(grep -c '^sepal_host_numerics{peer="[0-9]*",numerics="f32 weights, f32 caches, cpu [a-z0-9]*"} 1$' "$dir/metrics")" -eq 3 ] ||
  fail "/metrics: not 3 hosts' numerics"
[ -n "$screenshot" ] && timeout 60 "$browser" --headless --disable-gpu --no-sandbox --user-data-dir="$dir/profile" \
  --hide-scrollbars --virtual-time-budget=3000 --window-size=1100,760 --screenshot="$screenshot" "http://127.0.0.1:$port/" 2> /dev/null
# Host 1 dies: the page follows the block map.
victim=$(sed -n 's/^sepal: host 1 (pid \([0-9]*\)).*/\1/p' "$dir/server.err")
[ -n "$victim" ] || fail "no pid for host 1"
kill -9 "$victim"
for _ in $(seq 1 80); do curl -s "http://127.0.0.1:$port/status" | grep -q '"failure 1"' && break; sleep 0.25; done
dom > "$dir/after.html"
hosts_shown < "$dir/after.html" > "$dir/after.txt"
cat "$dir/after.txt"
grep -q "^host 1: blocks" "$dir/after.txt" && fail "the dead host 1 is still on the page"
[ "$(wc -l < "$dir/after.txt")" -eq 2 ] || fail "the page shows $(wc -l < "$dir/after.txt") hosts after the failure, not 2"
grep -q 'class="failure"[^>]*>[^<]*failure 1' "$dir/after.html" || fail "the failure is not among the recent changes"
stop_server || status=1
[ $status -eq 0 ] && echo "PASSED" || { echo "--- server log"; cat "$dir/server.err"; }
exit $status
