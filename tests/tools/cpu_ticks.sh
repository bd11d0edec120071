# CPU use of processes, for the tests that check a swarm stays near idle (source it).
#   busiest_ticks PID...   the most CPU ticks (user and system, of getconf CLK_TCK a second) that
#                          any of the processes used over the next second; a process that ends
#                          meanwhile counts as 0
busiest_ticks() {
  local pids=("$@") before after i used busiest=0
  _ticks() { local p; for p in "${pids[@]}"; do awk '{printf "%d ", $14 + $15}' "/proc/$p/stat" 2>/dev/null || printf '0 '; done; }
  before=($(_ticks)); sleep 1; after=($(_ticks))
  for i in "${!before[@]}"; do
    used=$(( ${after[$i]:-0} - ${before[$i]} )); [ "$used" -gt "$busiest" ] && busiest=$used
  done
  echo "$busiest"
}
