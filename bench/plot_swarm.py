"""Plots bench/run_swarm.sh's CSV: decode tokens/s and cost against the physical floor by hosts,
and each swarm token split into the client's work, the hosts' forwards and the links.
  plot_swarm.py CSV PNG [SHAPE_LABEL]"""
import csv
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows = list(csv.DictReader(open(sys.argv[1])))
label = sys.argv[3] if len(sys.argv) > 3 else "1.1B shape, bf16"
fig, (speed, floor, split) = plt.subplots(1, 3, figsize=(16, 4.2))
for network in dict.fromkeys(r["network"] for r in rows):
    for mode, style in (("push", "-o"), ("relay", "--s")):
        sel = [r for r in rows if r["network"] == network and r["mode"] == mode]
        hosts = [int(r["hosts"]) for r in sel]
        speed.plot(hosts, [float(r["decode_tokens_per_s"]) for r in sel], style, label=f"{network} {mode}")
        floor.plot(hosts, [float(r["ratio_to_floor"]) for r in sel], style, label=f"{network} {mode}")
single = 1000 / float(rows[0]["single_token_ms"])
speed.axhline(single, color="gray", linestyle=":", label="single process")
speed.set(xlabel="block hosts", ylabel="decode tokens/s", title=f"Swarm decode ({label})")
floor.axhline(1.1, color="gray", linestyle=":", label="goal (1.1x)")
floor.set(xlabel="block hosts", ylabel="token time / physical floor", title="Against the physical floor")
# The split of the first network's push rows (loopback where it ran), next to one process's token.
network = rows[0]["network"]
sel = [r for r in rows if r["network"] == network and r["mode"] == "push" and r.get("links_ms")
       and not math.isnan(float(r["hosts_forward_ms"]))]
names = ["one process"] + [f"{r['hosts']} host{'' if r['hosts'] == '1' else 's'}" for r in sel]
bottom = [0.0] * len(names)
parts = (("client_ms", "client: embedding, head, sampling"), ("hosts_forward_ms", "hosts' forwards"),
         ("links_ms", "links and hand-offs"))
for key, what in parts:
    values = [0.0] + [max(float(r[key]), 0.0) for r in sel]
    split.bar(names, values, bottom=bottom, label=what)
    bottom = [b + v for b, v in zip(bottom, values)]
split.bar(names[:1], [float(rows[0]["single_token_ms"])], color="gray", label="one process's token")
split.set(ylabel="ms a token", title=f"Where a swarm token goes ({network}, push)")
for ax in (speed, floor, split):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=120)
