# Sourced by the command-line tests (run_moe_test.sh, run_cohere_glm_test.sh,
# run_prompts_file_test.sh): `check CMD...` runs a command and, where it fails, prints
# "FAILED: CMD" and sets $failed to 1; readers of `sepal ... --json` output on stdin (`ids`: the
# generated ids, `ppl`: the perplexity); `losses FILE`: the losses of a `sepal tune --log` file;
# and `plain_env`, a command prefix that runs with only PATH and HOME set (as mpirun's ranks see a
# clean environment).
failed=0
check() { if "$@"; then :; else echo "FAILED: $*"; failed=1; fi; }
ids() { /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["generated_ids"])'; }
ppl() { /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["perplexity"])'; }
losses() { /usr/bin/python3 -c 'import json,sys; print([json.loads(l)["loss"] for l in open(sys.argv[1]) if "loss" in l])' "$1"; }
plain_env=(env -i PATH="$PATH" HOME="${HOME:-/root}")

# The checks of a model folder that every architecture's command-line test runs; $sepal and $out
# (a scratch folder) set by the caller.
# FOLDER DTYPE: greedy ids over `--hosts 2` (f32 on the wire) are one process's.
check_hosts_generate() {
  local one swarm
  one=$("$sepal" generate --model "$1" --prompt "Once upon a time" --max-new-tokens 16 --dtype "$2" --json 2> /dev/null | ids)
  swarm=$(timeout 300 "${plain_env[@]}" "$sepal" generate --model "$1" --prompt "Once upon a time" --max-new-tokens 16 \
    --dtype "$2" --hosts 2 --no-wire-compression --json 2> "$out/swarm.err" | ids)
  check test -n "$one"
  check test "$one" = "$swarm" || { echo "$1 $2: one process $one, two hosts $swarm"; tail -3 "$out/swarm.err"; }
}
# FOLDER: `sepal quantize` writes FOLDER-int8, which generates what `--dtype int8` of FOLDER does,
# at under a third of the size.
check_int8_checkpoint() {
  local want got
  "$sepal" quantize --model "$1" --out "$1-int8" 2> /dev/null
  check test -f "$1-int8/model.safetensors"
  want=$("$sepal" generate --model "$1" --prompt "Lily" --max-new-tokens 12 --dtype int8 --json 2> /dev/null | ids)
  got=$("$sepal" generate --model "$1-int8" --prompt "Lily" --max-new-tokens 12 --dtype int8 --json 2> /dev/null | ids)
  check test -n "$want"
  check test "$want" = "$got" || echo "$1: int8 checkpoint $got, int8 loading $want"
  check test "$(stat -c %s "$1-int8/model.safetensors")" -lt "$(( $(stat -c %s "$1/model.safetensors") / 3 ))"
}
# FOLDER TEXT: the perplexity of TEXT over `--hosts 2` (f32 on the wire) is one process's.
check_hosts_perplexity() {
  local one swarm
  one=$("$sepal" perplexity --model "$1" --text "$2" --json 2> /dev/null | ppl)
  swarm=$(timeout 300 "${plain_env[@]}" "$sepal" perplexity --model "$1" --text "$2" --hosts 2 --no-wire-compression --json 2> /dev/null | ppl)
  check test -n "$one"
  check test "$one" = "$swarm" || echo "$1 perplexity: one process $one, two hosts $swarm"
}
