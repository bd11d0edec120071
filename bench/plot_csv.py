"""What the bench plot scripts share: the CSV to read (first argument, or a default) and the PNG
to write (second argument, or the CSV's name with .png), and a one-line error for an empty CSV."""
import csv
import sys


def read_rows(name: str, default_src: str):
    """Returns (rows, dst); exits with status 1 and a one-line error when the CSV has no rows."""
    src = sys.argv[1] if len(sys.argv) > 1 else default_src
    dst = sys.argv[2] if len(sys.argv) > 2 else src.rsplit(".", 1)[0] + ".png"
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print(f"{name}: {src} has no rows", file=sys.stderr)
        sys.exit(1)
    return rows, dst
