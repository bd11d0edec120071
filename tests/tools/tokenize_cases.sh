# Shared by the GGUF vocabulary tests (source it): strings to tokenize, one file per case, and the
# comparison of `sepal tokenize` with the ids a reference tokenizer gave.
#
#   write_case_files DIR          DIR/cases.json (a JSON list of strings) -> DIR/caseI.txt, the
#                                 bytes exactly (no newline added or translated)
#   package_ids DIR PACKAGE        DIR/expected.txt: a line of ids for each string of DIR/cases.json,
#                                 as the npm package PACKAGE's encoder (transformers.js's) gives
#                                 them (installed under DIR/node_modules); fails the test when it
#                                 does not run
#   check_cases SEPAL MODEL DIR [tokenize flags...]
#                                 line I of DIR/expected.txt against line I of one `sepal tokenize`
#                                 of every DIR/caseI.txt (--file repeated: the tokenizer loads
#                                 once); prints a line per case, sets `cases` to the number
#                                 compared and `case_failures` to the number that differ

write_case_files() {
  /usr/bin/python3 - "$1" <<'PY'
import json, sys
for i, c in enumerate(json.load(open(f"{sys.argv[1]}/cases.json"))):
    open(f"{sys.argv[1]}/case{i}.txt", "w", encoding="utf-8", newline="").write(c)
PY
}

package_ids() {
  local dir=$1 package=$2
  cat > "$dir/encode.mjs" <<JS
import { fromPreTrained } from '$package';
import fs from 'fs';
const t = fromPreTrained();
for (const c of JSON.parse(fs.readFileSync('cases.json'))) console.log(t.encode(c).join(' '));
JS
  (cd "$dir" && node encode.mjs) > "$dir/expected.txt" 2> "$dir/node.err" \
    || { echo "FAILED: the $package encoder did not run: $(tail -c 300 "$dir/node.err")"; exit 1; }
}

check_cases() {
  local sepal=$1 model=$2 dir=$3; shift 3
  local expected got files=() i
  for ((i = 0; i < $(wc -l < "$dir/expected.txt"); i++)); do files+=(--file "$dir/case$i.txt"); done
  "$sepal" tokenize --model "$model" "${files[@]}" "$@" > "$dir/got.txt" 2> "$dir/tokenize-err.txt" \
    || echo "FAILED: sepal tokenize: $(cat "$dir/tokenize-err.txt")"
  cases=0; case_failures=0
  while IFS= read -r expected; do
    got=$(sed -n "$((cases + 1))p" "$dir/got.txt")
    if [ "$got" = "$expected" ]; then echo "ok: case $cases"
    else echo "FAILED: case $cases: $got (expected $expected)"; case_failures=$((case_failures + 1)); fi
    cases=$((cases + 1))
  done < "$dir/expected.txt"
}
