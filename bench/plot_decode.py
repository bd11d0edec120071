#!/usr/bin/python3
"""Plots bench/results/decode.csv (from decode_bench) as decode tokens/s against the roofline."""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from plot_csv import read_rows  # noqa: E402


def main() -> int:
    rows, dst = read_rows("plot_decode", "bench/results/decode.csv")
    labels = [r["dtype"] for r in rows]
    decode = [float(r["decode_tokens_per_s"]) for r in rows]
    roof = [float(r["roofline_tokens_per_s"]) for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([i - 0.2 for i in x], roof, width=0.4, label="bandwidth roofline", color="#cccccc")
    ax.bar([i + 0.2 for i in x], decode, width=0.4, label="measured decode", color="#3a7bd5")
    for i, r in enumerate(rows):
        label = f'{float(r["roofline_fraction"]):.2f}'
        if "paired_fraction" in r:
            label += f'\n(paired {float(r["paired_fraction"]):.2f})'
        ax.text(i + 0.2, decode[i], label, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("tokens/s at batch 1")
    ax.set_title(f'{rows[0]["preset"]} decode, {rows[0]["threads"]} threads, '
                 f'{float(rows[0]["bandwidth_gbps"]):.1f} GB/s measured')
    ax.legend()
    fig.tight_layout()
    fig.savefig(dst, dpi=120)
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
