#!/usr/bin/env bash
# Many sessions at once: `sepal generate --prompts-file` with 8 prompts (plain lines and JSON
# lines with their own max_new_tokens, temperature and seed) over `--hosts 3` typed as in a plain
# shell (no mpirun, no MPI variables), f32 hidden states. Each prompt's generated_ids must be what
# the prompt gives alone in one process, with speculative decoding too (8 drafts at once in the
# draft decoder); with 8-bit hidden states, all at once must give what one at a time gives. Every
# run ends without an MPI complaint or a 5 s finalize, and leaves no host behind. Bad prompts
# files get one clear line and exit status 2.
#   run_prompts_file_test.sh SEPAL_BINARY MODELS_DIR
set -uo pipefail
sepal=$1; models=$2
model="$models/tinystories-656K"
out=$(mktemp -d)
source "$(dirname "$0")/../../scripts/mpi_env.sh"
trap 'rm -rf "$out"; clean_mpi_leftovers' EXIT
cat > "$out/prompts.txt" <<'TXT'
Once upon a time
{"prompt": "The little dog", "max_new_tokens": 12}
{"prompt": "Lily wanted to", "temperature": 0.8, "seed": 3}

{"prompt": "Tom and his mom", "temperature": 1.0, "top_k": 40, "seed": 11, "max_new_tokens": 30}
One day, a bird
{"prompt": "The sun was", "top_p": 0.9, "temperature": 0.7, "seed": 5}
The big red ball
{"prompt": "", "max_new_tokens": 8}
TXT
source "$(dirname "$0")/cli_checks.sh"
# As a user types it: no MPI variables at all (the spawn must work on a 2-core machine, as root).
timeout 300 "${plain_env[@]}" "$sepal" generate --model "$model" --hosts 3 --prompts-file "$out/prompts.txt" \
  --max-new-tokens 20 --no-wire-compression --json > "$out/together.jsonl" 2> "$out/together.err"
check test $? -eq 0 || tail -5 "$out/together.err"
check grep -q "sepal: 8 prompts, 8 at a time" "$out/together.err"
# Each alone, in one process, from the same JSON line the file gives.
/usr/bin/python3 - "$out/prompts.txt" > "$out/alone.args" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    if not line.strip():
        continue
    p = json.loads(line) if line.startswith("{") else {"prompt": line}
    args = ["--prompt", p["prompt"], "--max-new-tokens", str(p.get("max_new_tokens", 20))]
    for key, flag in (("temperature", "--temperature"), ("top_k", "--top-k"), ("top_p", "--top-p"), ("seed", "--seed")):
        if key in p:
            args += [flag, str(p[key])]
    print(json.dumps(args))
PY
: > "$out/alone.jsonl"
while IFS= read -r args; do
  mapfile -t argv < <(/usr/bin/python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])))' "$args")
  "$sepal" generate --model "$model" "${argv[@]}" --json 2> /dev/null | /usr/bin/python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["generated_ids"]))' >> "$out/alone.jsonl"
done < "$out/alone.args"
check /usr/bin/python3 - "$out/together.jsonl" "$out/alone.jsonl" <<'PY'
import json, sys
together = [json.loads(l) for l in open(sys.argv[1])]
alone = [json.loads(l) for l in open(sys.argv[2])]
assert len(together) == 8 == len(alone), (len(together), len(alone))
for i, (t, a) in enumerate(zip(together, alone)):
    assert t["index"] == i, t["index"]
    assert t["generated_ids"] == a, f"prompt {i}: {t['generated_ids']} != {a}"
print("ok: 8 prompts at once over 3 spawned hosts, each as alone in one process")
PY
# Speculative decoding, 8 sessions at once through the draft decoder (each its own draft, the
# decoder guessing ahead): each prompt's ids as alone in one process without a draft.
timeout 300 "${plain_env[@]}" "$sepal" generate --model "$model" --hosts 3 --prompts-file "$out/prompts.txt" \
  --max-new-tokens 20 --no-wire-compression --json --draft-model "$model" --draft-dtype int8 --tree-size 8 \
  --draft-pipelining > "$out/speculative.jsonl" 2> "$out/speculative.err"
check test $? -eq 0 || tail -5 "$out/speculative.err"
check /usr/bin/python3 - "$out/speculative.jsonl" "$out/alone.jsonl" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
alone = [json.loads(l) for l in open(sys.argv[2])]
assert len(runs) == 8 == len(alone), (len(runs), len(alone))
for i, (t, a) in enumerate(zip(runs, alone)):
    assert t["generated_ids"] == a, f"prompt {i}: {t['generated_ids']} != {a}"
    assert t["stats"]["speculation"]["tree_steps"] > 0 or len(a) <= 1, f"prompt {i} did not speculate"
print("ok: 8 speculative sessions at once over 3 spawned hosts, each as alone in one process")
PY
# 8-bit hidden states: at once, and one at a time, give the same ids.
timeout 300 "${plain_env[@]}" "$sepal" generate --model "$model" --hosts 3 --prompts-file "$out/prompts.txt" \
  --max-new-tokens 20 --json > "$out/c8.jsonl" 2> "$out/c8.err"
check test $? -eq 0
timeout 300 "${plain_env[@]}" "$sepal" generate --model "$model" --hosts 3 --prompts-file "$out/prompts.txt" \
  --max-new-tokens 20 --json --concurrency 1 > "$out/c1.jsonl" 2> "$out/c1.err"
check test $? -eq 0
check grep -q "8 prompts, 1 at a time" "$out/c1.err"
check /usr/bin/python3 - "$out/c8.jsonl" "$out/c1.jsonl" <<'PY'
import json, sys
a = [json.loads(l)["generated_ids"] for l in open(sys.argv[1])]
b = [json.loads(l)["generated_ids"] for l in open(sys.argv[2])]
assert len(a) == 8 and a == b
print("ok: compressed hidden states, 8 at a time == 1 at a time")
PY
# Every run ended cleanly: the client's MPI_Finalize not cut short by its watchdog, no MPI or
# PMIx complaint, and no host outlived the command.
for err in together speculative c8 c1; do
  check test "$(grep -c -i -E "did not return in 5 s|PMIX ERROR|Broken pipe|mca_btl" "$out/$err.err")" -eq 0 \
    || grep -i -E "did not return|PMIX|pipe|mca_btl" "$out/$err.err"
  for pid in $(sed -n 's/^sepal: host [0-9]* (pid \([0-9]*\)).*/\1/p' "$out/$err.err"); do
    check test ! -e "/proc/$pid"
  done
  check test "$(grep -c "^sepal: host [0-9]* (pid" "$out/$err.err")" -ge 3 || grep "(pid" "$out/$err.err"
done
# Bad files: one line, exit 2, nothing started.
printf '{"prompt": "x", "colour": 3}\n' > "$out/bad1.txt"
printf '{"prompt": "x", "max_new_tokens": -1}\n' > "$out/bad2.txt"
printf '{"prompt": 7}\n' > "$out/bad3.txt"
printf '{"prompt": "x"\n' > "$out/bad4.txt"
printf '\n\n' > "$out/bad5.txt"
for bad in bad1 bad2 bad3 bad4 bad5; do
  "$sepal" generate --model "$model" --hosts 3 --prompts-file "$out/$bad.txt" > /dev/null 2> "$out/$bad.err"
  rc=$?
  check test "$rc" -eq 2
  check test "$(wc -l < "$out/$bad.err")" -eq 1
  echo "$bad: $(cat "$out/$bad.err")"
done
[ "$failed" -eq 0 ] && echo "prompts file: all checks passed"
exit $failed
