"""Plots bench/run_sessions.sh's CSV: time for 8 prompts against how many run at once."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows = list(csv.DictReader(open(sys.argv[1])))
rtt = sys.argv[3] if len(sys.argv) > 3 else "?"
at_once = [int(r["at_once"]) for r in rows]
seconds = [float(r["seconds"]) for r in rows]
fig, ax = plt.subplots(figsize=(5.5, 4))
ax.plot(at_once, seconds, "-o", label="measured")
ax.plot(at_once, [seconds[0] / n for n in at_once], ":", color="gray", label="ideal overlap (1/n)")
ax.axhline(0.3 * seconds[0], color="red", linestyle="--", linewidth=0.8, label="goal for 8 (0.3 of one by one)")
ax.set_xscale("log", base=2)
ax.minorticks_off()
ax.set(xticks=at_once, xticklabels=[str(n) for n in at_once], xlabel="sessions at once",
       ylabel="seconds for 8 prompts", title=f"8 prompts through 3 hosts, {rtt} ms RTT links")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=120)
