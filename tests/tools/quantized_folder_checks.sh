# Sourced by the tests of quantized checkpoint folders (run_fp8_test.sh,
# run_int_quantized_test.sh): their checks, given $sepal, $dir (a scratch folder) and $data (a
# JSONL file to score). Each check prints "ok: WHAT" or "FAILED: WHAT" and counts failures in
# $failed.
failed=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAILED: $1"; failed=$((failed + 1)); return 1; fi; }
nll() { "$sepal" perplexity --data "$data" --json "$@" 2> "$dir/err" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["nll"])'; }
gen() { "$sepal" generate --prompt "Once upon a time" --max-new-tokens 24 --json "$@" 2> "$dir/err" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])'; }
# FOLDER WHAT: over 2 hosts FOLDER generates one process's text; `sepal quantize` turns it into
# an int8 checkpoint without a quantization_config that scores what --dtype int8 on FOLDER does.
swarm_and_int8_checks() {
  local folder=$1 what=$2 one swarm a b
  one=$(gen --model "$folder"); swarm=$(gen --model "$folder" --hosts 2)
  check "over 2 hosts the $what folder generates one process's text" '[ -n "$one" ] && [ "$one" = "$swarm" ]'
  rm -rf "$dir/int8"
  "$sepal" quantize --model "$folder" --out "$dir/int8" 2> "$dir/err" || { echo "FAILED: sepal quantize"; cat "$dir/err"; failed=$((failed + 1)); }
  check "the int8 copy has no quantization_config" '! grep -q quantization_config "$dir/int8/config.json"'
  a=$(nll --model "$dir/int8" --dtype int8); b=$(nll --model "$folder" --dtype int8)
  check "the int8 checkpoint scores what --dtype int8 on the $what folder scores ($a)" '[ -n "$a" ] && [ "$a" = "$b" ]'
}
# WHAT EXPECTED: scoring $dir/bad fails with one line on stderr that holds EXPECTED.
refused() {
  local want=$2
  "$sepal" perplexity --model "$dir/bad" --data "$data" > /dev/null 2> "$dir/err"
  check "$1 refused in one line" 'grep -qF "$want" "$dir/err" && [ "$(wc -l < "$dir/err")" -eq 1 ]' || cat "$dir/err"
}
# ORIGINAL NLL PERCENT: NLL differs from ORIGINAL, by less than PERCENT %.
close() { /usr/bin/python3 -c "import sys; o, f, p = map(float, sys.argv[1:]); sys.exit(0 if o != f and abs(f / o - 1) < p / 100 else 1)" "$@"; }
