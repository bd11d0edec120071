#!/usr/bin/env bash
# A real single-node Slurm for the tests: Debian's slurm-wlm and munge, a slurm.conf written for
# this machine's CPUs and memory, munged, slurmctld and slurmd started by hand (no systemd), and
# everything stopped and removed again.
#   slurm_cluster.sh up DIR     # installs what is missing, starts, waits for the node to be idle;
#                               # prints the SLURM_CONF to export
#   slurm_cluster.sh down DIR   # stops the daemons it started and removes DIR
# Needs root. Jobs run as root too (SlurmUser=root), in DIR's spool.
set -euo pipefail
action=${1:?usage: slurm_cluster.sh up|down DIR}
dir=${2:?usage: slurm_cluster.sh up|down DIR}

down() {
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"; do
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Job steps slurmd started and left behind (a failed test), by their spool path.
  pkill -9 -f "slurmstepd.*" 2>/dev/null || true
  rm -rf "$dir"
}

if [ "$action" = down ]; then down; exit 0; fi
[ "$action" = up ] || { echo "usage: slurm_cluster.sh up|down DIR" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "slurm_cluster.sh: needs root (it starts munged, slurmctld and slurmd)" >&2; exit 1; }
if ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null; then
  echo "slurm_cluster.sh: installing slurm-wlm and munge" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge > /dev/null
fi
mkdir -p "$dir/state" "$dir/spool" "$dir/munge" "$dir/jobs"
host=$(hostname -s)
cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))

# munge: its own key and socket under DIR, so a system munged (if any) is left alone.
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$dir/munge/munge.key"
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
  --pid-file="$dir/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munge.seed"

cat > "$dir/slurm.conf" <<CONF
ClusterName=sepaltest
SlurmctldHost=$host
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
InactiveLimit=0
MinJobAge=600
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 300); do
  state=$(sinfo -h -n "$host" -o '%T' 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 0.2
done
if [ "$state" != idle ]; then
  echo "slurm_cluster.sh: node $host is '${state:-unknown}', not idle; slurmctld log:" >&2
  tail -5 "$dir/slurmctld.log" >&2; tail -5 "$dir/slurmd.log" >&2
  down
  exit 1
fi
echo "$SLURM_CONF"
