#!/usr/bin/python3
"""Plots bench/results/gemm.csv (from gemm_bench): GFLOP/s of the register-tile GEMMs and of the
baseline path, per shape and dtype, with the machine's peak."""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from plot_csv import read_rows  # noqa: E402


def main() -> int:
    rows, dst = read_rows("plot_gemm", "bench/results/gemm.csv")
    labels = [f'{r["preset"]}\n{r["dtype"]}' for r in rows]
    native = [float(r["gflops"]) for r in rows]
    baseline = [float(r["baseline_gflops"]) for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.bar([i - 0.2 for i in x], baseline, width=0.4, label="baseline (avx2 level: OpenBLAS)", color="#cccccc")
    ax.bar([i + 0.2 for i in x], native, width=0.4, label="register tiles (AVX-512 / VNNI)", color="#3a7bd5")
    for i, r in enumerate(rows):
        ax.text(i + 0.2, native[i], f'{float(r["fraction_of_peak"]):.2f}', ha="center", va="bottom", fontsize=8)
    f32_peak = next(float(r["peak_gflops"]) for r in rows if r["dtype"] != "int8")
    ax.axhline(f32_peak, color="#d55e00", linestyle="--", linewidth=1, label=f"f32 peak {f32_peak:.0f} GFLOP/s")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("GFLOP/s (int8: GOP/s)")
    ax.set_title(f'Prompt products of one block, {rows[0]["tokens"]} tokens, {rows[0]["threads"]} threads '
                 "(labels: fraction of peak; int8: of the VNNI peak)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dst, dpi=120)
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
