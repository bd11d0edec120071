#!/usr/bin/env bash
# Transport benchmark, everything measured in this one run:
#  1. raw UCX (ucx_perftest, with and without peer error handling) against `sepal ping` over UCX:
#     8-byte round trip and 1 MiB bandwidth, printed as differences and ratios;
#  2. `sepal ping` under WAN emulation against the configured link (round trip and throughput);
#  3. the full `sepal ping` tables for mpi and ucx.
# Writes bench/results/ping.csv and ping.png.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/bin/sepal ] || scripts/build.sh
source scripts/mpi_env.sh
out=bench/results
mkdir -p "$out"
port=$((20000 + RANDOM % 20000))

# ucx_perftest: server in the background, client prints "Final: iters p50 avg overall bw_avg bw_overall ...".
perftest() {  # perftest TEST SIZE ITERS EXTRA... -> prints the Final line's fields
  local test=$1 size=$2 iters=$3; shift 3
  port=$((port + 1))
  UCX_MM_ERROR_HANDLING=y ucx_perftest -t "$test" -s "$size" -n "$iters" -p "$port" "$@" > /dev/null 2>&1 &
  local server=$!
  sleep 0.5
  UCX_MM_ERROR_HANDLING=y timeout 60 ucx_perftest 127.0.0.1 -t "$test" -s "$size" -n "$iters" -p "$port" "$@" 2>&1 | awk '/Final:/ {print $3, $6}'
  wait "$server" 2>/dev/null || true
}

echo "== raw UCX (ucx_perftest, shared memory on loopback) =="
read -r lat_plain _ < <(perftest ucp_am_lat 8 50000)
read -r lat_peer _ < <(perftest ucp_am_lat 8 50000 -e)
read -r _ bw_plain < <(perftest ucp_am_bw 1048576 2000)
read -r _ bw_peer < <(perftest ucp_am_bw 1048576 2000 -e)
echo "8 B one-way latency: ${lat_plain} us (no error handling), ${lat_peer} us (peer error handling)"
echo "1 MiB bandwidth:     ${bw_plain} MB/s (no error handling), ${bw_peer} MB/s (peer error handling)"

echo "== sepal ping over ucx =="
mpirun -np 2 build/bin/sepal ping --transport ucx --json > "$out/ping_ucx.json"
mpirun -np 2 build/bin/sepal ping --transport mpi --json > "$out/ping_mpi.json"
/usr/bin/python3 - "$out" "$lat_plain" "$lat_peer" "$bw_plain" "$bw_peer" <<'PY'
import json, sys
out, lat_plain, lat_peer, bw_plain, bw_peer = sys.argv[1], *map(float, sys.argv[2:])
rows = {r["bytes"]: r for r in json.load(open(f"{out}/ping_ucx.json"))}
rtt8, bw1m = rows[8]["rtt_us"], rows[1048576]["bandwidth_gbps"] * 1e3 / 8  # MB/s
print(f"8 B round trip: sepal {rtt8:.2f} us; raw UCX {2*lat_plain:.2f} us (+{rtt8-2*lat_plain:.2f} us), "
      f"raw UCX with error handling {2*lat_peer:.2f} us (+{rtt8-2*lat_peer:.2f} us); goal: within 10 us")
print(f"1 MiB bandwidth: sepal {bw1m:.0f} MB/s = {bw1m/bw_peer:.2f} of raw UCX with peer error handling "
      f"({bw_peer:.0f} MB/s), {bw1m/bw_plain:.2f} of raw UCX without it ({bw_plain:.0f} MB/s); goal: 0.9")
PY

echo "== WAN emulation (sepal ping over ucx+wan) against the configured link =="
for link in "rtt_ms=5,bandwidth_mbps=1000" "rtt_ms=100,bandwidth_mbps=100"; do
  mpirun -np 2 build/bin/sepal ping --transport ucx --wan "$link" --sizes 64 1048576 --json > "$out/ping_wan.json"
  /usr/bin/python3 - "$out/ping_wan.json" "$link" <<'PY'
import json, sys
rows = {r["bytes"]: r for r in json.load(open(sys.argv[1]))}
cfg = dict(kv.split("=") for kv in sys.argv[2].split(","))
rtt_ms, mbps = float(cfg["rtt_ms"]), float(cfg["bandwidth_mbps"])
frame = 64 + 128  # payload plus frame header and fields, both ways
expected_rtt = rtt_ms * 1e3 + 2 * frame * 8 / mbps
measured_rtt = rows[64]["rtt_us"]
bw = rows[1048576]["bandwidth_gbps"] * 1e3
print(f"{sys.argv[2]}: round trip {measured_rtt/1e3:.2f} ms vs {expected_rtt/1e3:.2f} ms configured "
      f"({measured_rtt/expected_rtt:.3f}); throughput {bw:.1f} Mbit/s vs {mbps:.0f} ({bw/mbps:.3f}); goal: within 10%")
PY
done

/usr/bin/python3 - "$out" <<'PY'
import csv, json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out = sys.argv[1]
rows = json.load(open(f"{out}/ping_ucx.json")) + json.load(open(f"{out}/ping_mpi.json"))
with open(f"{out}/ping.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["transport", "bytes", "rtt_us", "bandwidth_gbps"])
    w.writeheader()
    w.writerows(rows)
fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
for t in sorted({r["transport"] for r in rows}):
    rs = [r for r in rows if r["transport"] == t]
    a.loglog([r["bytes"] for r in rs], [r["rtt_us"] for r in rs], "o-", label=t)
    b.semilogx([r["bytes"] for r in rs], [r["bandwidth_gbps"] for r in rs], "o-", label=t)
a.set_xlabel("message bytes"); a.set_ylabel("median round trip (us)"); a.legend()
b.set_xlabel("message bytes"); b.set_ylabel("bandwidth (Gbit/s)"); b.legend()
fig.suptitle("sepal ping, 2 ranks on one node")
fig.tight_layout()
fig.savefig(f"{out}/ping.png", dpi=110)
print(f"wrote {out}/ping.csv and {out}/ping.png")
PY
