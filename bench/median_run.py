"""Copies the run with the median decode_tokens_per_s among sepal generate --json outputs to OUT
(and its stderr, RUN_JSON.err, to OUT.err where there is one): on a shared machine one run can
lose a core to another process.
  median_run.py OUT RUN_JSON..."""
import json
import os
import shutil
import sys

out, runs = sys.argv[1], sys.argv[2:]
runs.sort(key=lambda f: json.load(open(f))["stats"]["decode_tokens_per_s"])
median = runs[len(runs) // 2]
shutil.copy(median, out)
if os.path.exists(median + ".err"):
    shutil.copy(median + ".err", out + ".err")
