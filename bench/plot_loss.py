#!/usr/bin/python3
"""Draws the loss curve of a `sepal tune --log` file: the training loss per step and the
evaluation losses, beside the learning rate. Usage: bench/plot_loss.py LOG.jsonl [OUT.png]
(default: the log's name with .png)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    if len(sys.argv) < 2:
        print("usage: plot_loss.py LOG.jsonl [OUT.png]", file=sys.stderr)
        sys.exit(2)
    src = sys.argv[1]
    dst = sys.argv[2] if len(sys.argv) > 2 else src.rsplit(".", 1)[0] + ".png"
    steps, eval_rows = [], []
    with open(src) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                print(f"plot_loss: {src}:{number}: not valid JSON", file=sys.stderr)
                sys.exit(1)
            (eval_rows if "eval_loss" in row else steps).append(row)
    if not steps:
        print(f"plot_loss: {src} has no step rows", file=sys.stderr)
        sys.exit(1)
    # A resumed run appends to the log: keep the last row of each step.
    by_step = {r["step"]: r for r in steps}
    xs = sorted(by_step)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(xs, [by_step[s]["loss"] for s in xs], label="training loss (batch mean)", color="tab:blue")
    if eval_rows:
        ev = {r["step"]: r["eval_loss"] for r in eval_rows}
        ax.plot(sorted(ev), [ev[s] for s in sorted(ev)], "o-", label="evaluation loss", color="tab:orange")
    ax.set_xlabel("step")
    ax.set_ylabel("nats per scored token")
    lr = ax.twinx()
    lr.plot(xs, [by_step[s]["lr"] for s in xs], ":", color="gray", label="learning rate")
    lr.set_ylabel("learning rate")
    lines = ax.get_legend_handles_labels()[0] + lr.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + lr.get_legend_handles_labels()[1]
    ax.legend(lines, labels, loc="upper right")
    ax.set_title(src.rsplit("/", 1)[-1])
    fig.tight_layout()
    fig.savefig(dst, dpi=120)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
