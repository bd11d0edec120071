"""Plots bench/run_batching.sh's CSV: aggregate decode tokens/s against clients at once, with the
hosts batching sessions' steps and without."""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from plot_csv import read_rows

rows, dst = read_rows("plot_batching", "bench/results/batching-f32.csv")
hosts = sorted({r["hosts"] for r in rows}, key=int)
fig, axes = plt.subplots(1, len(hosts), figsize=(5 * len(hosts), 4), sharey=True, squeeze=False)
for ax, h in zip(axes[0], hosts):
    for batching, style in (("on", "-o"), ("off", "--s")):
        picked = [r for r in rows if r["batching"] == batching and r["hosts"] == h]
        clients = [int(r["clients"]) for r in picked]
        ax.plot(clients, [float(r["tokens_per_s"]) for r in picked], style,
                label="steps batched on the hosts" if batching == "on" else "each step alone (--no-step-batching)")
    one = [float(r["tokens_per_s"]) for r in rows if r["batching"] == "on" and r["clients"] == "1" and r["hosts"] == h]
    if one:
        ax.axhline(4 * one[0], color="red", linestyle=":", linewidth=0.8, label="goal at 16: 4 x one client")
    ax.set_xscale("log", base=2)
    ax.minorticks_off()
    ax.set(xticks=[1, 4, 16], xticklabels=["1", "4", "16"], xlabel="clients at once",
           ylabel="aggregate decode tokens/s", title=f"{h} host(s) on loopback, 768-wide, {rows[0]['dtype']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(dst, dpi=120)
