"""Plots bench/run_speculation.sh's CSV: the speed-up of speculative decoding against tree size
(a panel per network, a line per draft), and the distribution of tokens per tree step (each
draft at its largest tree, on the slowest network)."""
import sys

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from plot_csv import read_rows

rows, dst = read_rows("plot_speculation.py", "bench/results/speculation.csv")
accepted_dst = sys.argv[3] if len(sys.argv) > 3 else dst.rsplit(".", 1)[0] + "-accepted.png"
networks = list(dict.fromkeys(r["network"] for r in rows))
drafts = [d for d in dict.fromkeys(r["draft"] for r in rows) if d != "none"]

def network_title(network):
    return "loopback" if network == "loopback" else f"{network.split(':')[0]} ms RTT"


fig, axes = plt.subplots(1, len(networks), figsize=(4.2 * len(networks), 3.8), squeeze=False)
for ax, network in zip(axes[0], networks):
    for draft in drafts:
        sel = [r for r in rows if r["network"] == network and r["draft"] == draft]
        ax.plot([int(r["tree_size"]) for r in sel], [float(r["speedup"]) for r in sel], "-o", label=draft)
    ax.axhline(1.0, color="gray", linestyle=":", label="no draft")
    title = network_title(network)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set(xlabel="tree size (tokens)", ylabel="decode speed-up", title=f"3 hosts, {title}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(dst, dpi=120)

slowest = networks[-1]
fig, ax = plt.subplots(figsize=(6, 3.8))
width = 0.8 / max(1, len(drafts))
for k, draft in enumerate(drafts):
    sel = [r for r in rows if r["network"] == slowest and r["draft"] == draft]
    if not sel:
        continue
    r = max(sel, key=lambda r: int(r["tree_size"]))
    counts = [int(c) for c in r["tokens_per_step"].split(";") if c]
    total = sum(counts) or 1
    xs = [i + (k - (len(drafts) - 1) / 2) * width for i in range(len(counts))]
    ax.bar(xs, [c / total for c in counts], width=width,
           label=f"{draft}, tree {r['tree_size']} (mean {float(r['mean_accepted_tokens']):.2f})")
ax.set(xlabel="tokens per tree step", ylabel="share of steps", title=f"Accepted tokens per step, 3 hosts, {network_title(slowest)}")
ax.grid(alpha=0.3, axis="y")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(accepted_dst, dpi=120)
