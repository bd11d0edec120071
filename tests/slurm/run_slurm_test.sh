#!/usr/bin/env bash
# The Slurm scripts against a real (single-node) Slurm, started here and stopped afterwards
# (tests/slurm/slurm_cluster.sh), also when a check fails:
#   tune: slurm/tune.sbatch runs deep-ptune; `scontrol requeue` stops it mid-run; Slurm runs it
#         again, it resumes from its checkpoint, and its final checkpoint (h5diff) and the loss of
#         every step equal those of an uninterrupted run.
#   swarm: slurm/generate.sbatch, 4 tasks on the one node (a client and 3 hosts), started by
#         mpirun inside the allocation and by srun --mpi=pmix: the text of one process.
#   join: slurm/swarm.sbatch runs a long-lived swarm; a slurm/join.sbatch host joins it, the
#         slurm/status.sbatch job's block map lists it, `scancel` makes it leave gracefully (the
#         balancer logs a leave, not a failure), and the swarm's text is that of one process.
#   run_slurm_test.sh SEPAL_BINARY MODELS_DIR      # SEPAL_SLURM_ONLY=tune|swarm|join: one part
set -uo pipefail
sepal=$(realpath "$1"); models=$(realpath "$2")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=$(mktemp -d /tmp/sepal-slurm.XXXXXX)
shm=$(mktemp -d /dev/shm/sepal-slurm.XXXXXX)
cluster=$dir/cluster
trap '"$here/slurm_cluster.sh" down "$cluster"; rm -rf "$dir" "$shm"' EXIT
# Open MPI's session directories and shared-memory segments go to this test's own folders (the
# jobs inherit them), out of the way of the other MPI tests' clean-up of leftovers: this test runs
# beside those tests, outside ctest's "mpi" lock.
mkdir -p "$dir/tmp"
export TMPDIR=$dir/tmp OMPI_MCA_btl_vader_backing_directory=$shm
conf=$("$here/slurm_cluster.sh" up "$cluster") || { echo "FAILED: no Slurm"; exit 1; }
export SLURM_CONF=$conf
failed=0
job_state() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
# The waits poll four times a second: each scontrol call costs slurmctld and munge about 20 ms of
# CPU, taken from the jobs on a 2-core machine.
wait_state() {  # JOB STATE SECONDS: true once the job is in STATE; false if it ends in another
  for _ in $(seq $(($3 * 4))); do
    case "$(job_state "$1")" in
      "$2") return 0 ;;
      COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) return 1 ;;
    esac
    sleep 0.25
  done
  return 1
}
losses() {  # the last row of each step, in step order
  /usr/bin/python3 -c '
import json, sys
rows = {}
for line in open(sys.argv[1]):
    row = json.loads(line)
    if "loss" in row: rows[row["step"]] = row["loss"]
print(" ".join(repr(rows[s]) for s in sorted(rows)))' "$1"
}

slurm_story() {  # JOB: what Slurm says of it, for a failure's message
  scontrol show job "$1" 2>/dev/null | grep -oE '(JobState|Reason|ExitCode|Restarts|BatchFlag|Requeue)=[^ ]*' | tr '\n' ' '; echo
  grep -h -E "JobId=$1( |$)|job_?id[ =]$1\b|[Jj]ob $1 |\b$1\b.*(fail|error|requeue)" "$cluster/slurmctld.log" "$cluster/slurmd.log" 2>/dev/null | tail -12
}
part() { [ -z "${SEPAL_SLURM_ONLY:-}" ] || [ "$SEPAL_SLURM_ONLY" = "$1" ]; }
cd "$root"
source "$root/scripts/mpi_env.sh"  # root's Open MPI settings, passed into the jobs
source "$here/../tools/cpu_ticks.sh"

# ---- tune: requeued mid-run, resumed, the same run ----
if part tune; then
args=(--model "$models/tinystories-656K" --data "$models/../data/tune-tom/train.jsonl" --method deep-ptune
      --prompt-tokens 4 --steps 30 --batch-size 8 --micro-batch 4 --lr 0.05 --warmup 3 --seed 2 --max-length 96
      --checkpoint-every 5)
"$sepal" tune --out "$dir/ref.h5" --log "$dir/ref.jsonl" "${args[@]}" 2> "$dir/ref.err" \
  || { echo "FAILED: the uninterrupted run"; tail -3 "$dir/ref.err"; exit 1; }
job=$(sbatch --parsable --output="$dir/tune-%j.out" --export="ALL,SEPAL=$sepal" slurm/tune.sbatch "$dir/job.h5" \
  "${args[@]}" --log "$dir/job.jsonl")
for _ in $(seq 1200); do
  [ -f "$dir/job.jsonl" ] && [ "$(wc -l < "$dir/job.jsonl")" -ge 8 ] && break
  sleep 0.1
done
at=$(wc -l < "$dir/job.jsonl" 2>/dev/null || echo 0)
scontrol requeue "$job"
# Slurm holds a requeued job for about two minutes (EligibleTime) before it may start again; an
# administrator may release it at once, as here, so the test does not wait for it. Released only
# once the first run's batch script has written its requeue line, the job is pending (the node
# has finished with the first run), and the clock has passed into the next whole second: slurmd
# revoked the first run's credential when the requeue stopped it, and refuses to launch any
# credential of that job made in the same second or before ("Job 1 already killed, do not launch
# batch job"; slurmctld then fails the job with exit code 1). Released within that second, the
# job failed, in CI and here.
for _ in $(seq 600); do grep -q "^sepal-tune: checkpointed in" "$dir/tune-$job.out" 2>/dev/null && break; sleep 0.1; done
for _ in $(seq 600); do [ "$(job_state "$job")" = PENDING ] && break; sleep 0.1; done
pending_at=$(date +%s)
while [ "$(date +%s)" -le "$pending_at" ]; do sleep 0.05; done
scontrol update JobId="$job" StartTime=now
if wait_state "$job" COMPLETED 300; then
  runs=$(grep -c "^sepal-tune: job $job, run" "$dir/tune-$job.out")
  if [ "$runs" -ge 2 ] && [ "$(losses "$dir/ref.jsonl")" = "$(losses "$dir/job.jsonl")" ] && h5diff -q "$dir/ref.h5" "$dir/job.h5"; then
    echo "ok: tune job $job requeued after $at steps, resumed (runs: $runs): 30 losses and the checkpoint equal the uninterrupted run's"
  else
    echo "FAILED: tune job $job: runs $runs, losses equal? $([ "$(losses "$dir/ref.jsonl")" = "$(losses "$dir/job.jsonl")" ] && echo yes || echo no), checkpoint equal? $(h5diff -q "$dir/ref.h5" "$dir/job.h5" && echo yes || echo no)"
    tail -5 "$dir/tune-$job.out"; failed=$((failed + 1))
  fi
else
  echo "FAILED: tune job $job did not complete (state $(job_state "$job"))"; tail -8 "$dir/tune-$job.out"
  slurm_story "$job"
  failed=$((failed + 1))
fi

fi

# ---- swarm: the whole swarm in one job, both launchers ----
if part swarm; then
expected=$("$sepal" generate --model "$models/stories260K" --prompt "Once upon a time" --max-new-tokens 60 --json 2>/dev/null \
  | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])')
for launch in mpirun srun; do
  # stderr apart: the hosts' lines at exit would land inside the client's JSON on stdout.
  job=$(sbatch --parsable -O -N 1 -n 4 --output="$dir/generate-$launch-%j.out" --error="$dir/generate-$launch-%j.err" \
    --export="ALL,SEPAL=$sepal,SEPAL_MAP_BY=ppr:4:node,SEPAL_LAUNCH=$launch" slurm/generate.sbatch \
    "$models/stories260K" "Once upon a time" --max-new-tokens 60)
  if wait_state "$job" COMPLETED 180; then
    got=$(/usr/bin/python3 - "$dir/generate-$launch-$job.out" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
start = text.index("{")
out = json.JSONDecoder().raw_decode(text[start:])[0]
print(out["stats"]["host_ranks"], out["text"])
PY
)
    if [ "$got" = "3 $expected" ]; then
      echo "ok: swarm job $job ($launch, a client and 3 hosts): the text of one process"
    else
      echo "FAILED: swarm job $job ($launch): got '$got'"; failed=$((failed + 1))
    fi
  else
    echo "FAILED: swarm job $job ($launch) did not complete (state $(job_state "$job"))"
    tail -5 "$dir/generate-$launch-$job.out" "$dir/generate-$launch-$job.err"; failed=$((failed + 1))
  fi
done
fi

# ---- join: a host job joins a running swarm job, shows in a status job, leaves on scancel ----
if part join; then
model=$models/stories260K
# 480 tokens (the model's context is 512) at a 120 ms round trip on every link (about 90 s):
# long enough for four more jobs to come and go, two of them trying twice, on a busy machine.
gen=(--max-new-tokens 480 --wan rtt_ms=120 --no-wire-compression)
expected=$("$sepal" generate --model "$model" --prompt "Once upon a time" "${gen[@]:0:2}" --json 2>/dev/null \
  | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])')
shared=$dir/shared; mkdir -p "$shared"
head -c 48 /dev/urandom | base64 > "$shared/secret"
# --oversubscribe (sharing CPUs) overrides the scripts' --exclusive: here four jobs share 2 CPUs.
swarm=$(sbatch --parsable --oversubscribe -O -N 1 -n 3 --output="$dir/swarm-%j.out" --error="$dir/swarm-%j.err" \
  --export="ALL,SEPAL=$sepal,SEPAL_MAP_BY=ppr:3:node" slurm/swarm.sbatch "$shared" "$model" "Once upon a time" "${gen[@]}")
log=$dir/swarm-$swarm.err  # the text alone goes to swarm-JOB.out
wait_for() {  # FILE PATTERN SECONDS
  for _ in $(seq $(($3 * 4))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.25; done; return 1
}
jobs_seen=()
host_job() {  # [--array=1-N]: sets join and newcomers (one per element); false if one did not join
  join=$(sbatch --parsable --oversubscribe "$@" --output="$dir/join-%j.out" \
    --export="ALL,SEPAL=${host_sepal:-$sepal},SEPAL_JOIN_RETRY_SECONDS=1" \
    slurm/join.sbatch "$shared" "$model" --max-blocks 2 --wan rtt_ms=120)
  jobs_seen+=("$join")
  local want=1 outs=()
  [ $# -gt 0 ] && want=${1##*-}
  newcomers=()
  for _ in $(seq 240); do
    outs=($(grep -l "serves blocks" "$dir"/join-*.out 2>/dev/null))
    newcomers=($(sed -n 's/^sepal: host \([0-9]*\) (pid .*serves blocks.*/\1/p' "${outs[@]}" /dev/null | sort -u \
      | comm -23 - <(printf '%s\n' "${left[@]}" | sort)))
    [ "${#newcomers[@]}" -ge "$want" ] && return 0
    sleep 0.25
  done
  return 1
}
left=()
left_gracefully() {  # all newcomers logged as leaving within 60 s
  for _ in $(seq 240); do
    local all=1
    for n in "${newcomers[@]}"; do grep -q "\"leave $n[;\"]" "$shared/block-map.jsonl" 2>/dev/null || all=0; done
    [ $all = 1 ] && { left+=("${newcomers[@]}"); return 0; }
    sleep 0.25
  done
  return 1
}
step=""
if ! wait_for "$log" "^sepal: route" 120; then step="the swarm job did not start generating"
elif SEPAL_JOIN_TRIES=0 bash slurm/join.sbatch "$shared" "$model" 2> "$dir/tries.err" \
     || ! grep -q "SEPAL_JOIN_TRIES must be a whole number from 1 to 999, not '0'" "$dir/tries.err"; then
  step="join.sbatch did not refuse SEPAL_JOIN_TRIES=0 ($(cat "$dir/tries.err"))"
elif ! host_job; then step="the host job $join did not join"
else
  newcomer=${newcomers[0]}
  status=$(sbatch --parsable --oversubscribe --output="$dir/status-%j.out" --export="ALL,SEPAL=$sepal" slurm/status.sbatch "$shared")
  jobs_seen+=("$status")
  if ! wait_state "$status" COMPLETED 60; then step="the status job $status did not complete"
  elif ! grep -q "^ *$newcomer  " "$dir/status-$status.out"; then step="the status job's block map does not list host $newcomer"
  else
    echo "ok: host job $join joined the swarm job $swarm as host $newcomer; status job $status lists it:"
    grep -v "^ *$" "$dir/status-$status.out" | sed 's/^/    /'
    # scancel: SIGTERM to every process of the job.
    scancel "$join"
    if ! left_gracefully; then step="host $newcomer did not leave on scancel"
    else
      echo "ok: on scancel, host $newcomer left gracefully (the balancer logged a leave, not a failure)"
      # Its process lingers as a zombie until its job step ends; UCX's keepalives to it over
      # shared memory once set every swarm rank's progress thread spinning (70% of a core each),
      # from about 4 s after the leave. Between tokens (120 ms apart) the ranks must stay near
      # idle: a quarter of a core at most, over the 7th second after the leave.
      sleep 6
      ranks=$(pgrep -f -- "generate .*--block-map-log $shared/block-map.jsonl")
      busiest=$(busiest_ticks $ranks)
      if [ -n "$ranks" ] && [ $((busiest * 4)) -le "$(getconf CLK_TCK)" ]; then
        echo "ok: after the leave, the busiest of the swarm job's $(echo $ranks | wc -w) processes (mpirun and its ranks) used $busiest of $(getconf CLK_TCK) ticks in a second"
      else
        echo "FAILED: after the leave, a process of the swarm job used $busiest of $(getconf CLK_TCK) ticks in a second (processes: ${ranks:-none found})"
        failed=$((failed + 1))
      fi
      # Two hosts as a job array; the time limit's warning (--signal=B:TERM@60) goes to each
      # batch shell alone, as here. The first try of each looks for the port in a file that is
      # not there and gives up after a second (exit status 75, as a join that timed out on a busy
      # node): join.sbatch must start it again.
      host_sepal=$dir/sepal-first-try-fails
      cat > "$host_sepal" <<EOF
#!/usr/bin/env bash
mark=$dir/first-try-\${SLURM_ARRAY_TASK_ID:?}
if [ -e "\$mark" ]; then exec "$sepal" "\$@"; fi
touch "\$mark"
args=()
for a in "\$@"; do [ "\$a" = "$shared/swarm.port" ] && a=$shared/no-such.port; args+=("\$a"); done
exec "$sepal" "\${args[@]}" --join-timeout 1
EOF
      chmod +x "$host_sepal"
      if ! host_job --array=1-2; then step="the host job array $join did not join (hosts: ${newcomers[*]})"
      elif [ "$(grep -l "^sepal: joining failed (try 1 of 3)" "$dir"/join-*.out | wc -l)" != 2 ]; then
        step="the hosts of job array $join did not try again after a failed first try"
      else
        echo "ok: both hosts of job array $join joined at their second try, after a first that timed out"
        scancel --batch --signal=TERM "$join"
        if ! left_gracefully; then step="hosts ${newcomers[*]} did not leave on the warning signal"
        elif ! wait_state "${join}_1" COMPLETED 60 || ! wait_state "${join}_2" COMPLETED 60; then
          step="job array $join did not complete after its hosts left (states $(job_state "${join}_1") $(job_state "${join}_2"))"
        else echo "ok: on the time limit's warning signal, the hosts ${newcomers[*]} of job array $join left gracefully and both jobs completed"
        fi
      fi
    fi
  fi
fi
if [ -n "$step" ]; then
  echo "FAILED: $step"; failed=$((failed + 1)); scancel "$swarm" "${jobs_seen[@]}" 2>/dev/null
  for f in "$log" "$dir"/join-*.out "$dir"/status-*.out; do
    # sepal's own lines (its errors come before mpirun's closing banner), then the last lines.
    [ -f "$f" ] && { echo "--- $f"; grep "^sepal" "$f" | tail -12; echo "..."; tail -8 "$f"; }
  done
elif ! wait_state "$swarm" COMPLETED 240; then
  echo "FAILED: the swarm job $swarm did not complete (state $(job_state "$swarm"))"; tail -8 "$log"; failed=$((failed + 1))
elif [ "$(cat "$dir/swarm-$swarm.out")" = "$expected" ]; then
  echo "ok: the swarm job's text is that of one process"
else
  echo "FAILED: the swarm job's text changed"; tail -8 "$log"; failed=$((failed + 1))
fi
fi

exit $failed
