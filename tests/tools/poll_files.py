#!/usr/bin/python3
"""Waits on files that a running swarm writes, polling every 2 ms in this one process: a shell
loop that runs grep or wc as often spends a core of its own on the forks, beside the swarm it
watches (the fault tests' recovery times are measured to a few ms).
  poll_files.py size FILE BYTES SECONDS          exits 0 once FILE holds BYTES bytes, 1 after SECONDS
  poll_files.py match FILE REGEX SECONDS         prints the first match's groups (space-separated),
                                                 or its text without groups; 1 after SECONDS
  poll_files.py recovery OUT ERR REGEX T0 PID [AFTER]
      Seconds from T0 (Unix time) to the first growth of OUT past AFTER bytes. Without AFTER, the
      size OUT has when REGEX first appears in ERR (the fault was handled) is taken as AFTER.
      Prints nothing when process PID ends first."""
import os
import re
import sys
import time


def size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # A zombie (exited, not yet waited for by its shell) is gone too.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main(argv):
    mode = argv[1] if len(argv) > 1 else ""
    if mode == "size" and len(argv) == 5:
        path, want, deadline = argv[2], int(argv[3]), time.monotonic() + float(argv[4])
        while size(path) < want:
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.002)
        return 0
    if mode == "match" and len(argv) == 5:
        path, pattern, deadline = argv[2], re.compile(argv[3], re.M), time.monotonic() + float(argv[4])
        while True:
            m = pattern.search(text(path))
            if m:
                print(" ".join(m.groups()) if m.groups() else m.group(0))
                return 0
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.002)
    if mode == "recovery" and len(argv) in (7, 8):
        out, err, pattern, t0, pid = argv[2], argv[3], re.compile(argv[4], re.M), float(argv[5]), int(argv[6])
        after = int(argv[7]) if len(argv) == 8 else None
        while alive(pid):
            if after is None and pattern.search(text(err)):
                after = size(out)
            if after is not None and size(out) > after:
                print(f"{time.time() - t0:.3f}")
                return 0
            time.sleep(0.002)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
