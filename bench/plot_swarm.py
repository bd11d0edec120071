"""Plots bench/run_swarm.sh's CSV: decode tokens/s and cost against the physical floor by hosts."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows = list(csv.DictReader(open(sys.argv[1])))
fig, (speed, floor) = plt.subplots(1, 2, figsize=(11, 4.2))
for network in dict.fromkeys(r["network"] for r in rows):
    for mode, style in (("push", "-o"), ("relay", "--s")):
        sel = [r for r in rows if r["network"] == network and r["mode"] == mode]
        hosts = [int(r["hosts"]) for r in sel]
        label = f"{network} {mode}"
        speed.plot(hosts, [float(r["decode_tokens_per_s"]) for r in sel], style, label=label)
        floor.plot(hosts, [float(r["ratio_to_floor"]) for r in sel], style, label=label)
single = 1000 / float(rows[0]["single_token_ms"])
speed.axhline(single, color="gray", linestyle=":", label="single process")
speed.set(xlabel="block hosts", ylabel="decode tokens/s", title="Swarm decode (1.1B shape, bf16)")
floor.axhline(1.1, color="gray", linestyle=":", label="goal (1.1x)")
floor.set(xlabel="block hosts", ylabel="token time / physical floor", title="Against the physical floor")
for ax in (speed, floor):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=120)
