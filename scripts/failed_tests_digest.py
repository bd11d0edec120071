#!/usr/bin/env python3
"""What each failed test printed, in short, for the end of a long test log.

CI keeps the beginning and the end of a failed run's output and drops the middle, where ctest
--output-on-failure puts a failed test's output. This prints, after ctest's summary, each failed
test's lines that say FAILED (or error) and its last lines, a few hundred bytes a test.

  failed_tests_digest.py BUILD_DIR [MAX_LINES_PER_TEST]
"""
import os
import re
import sys


def outputs(log_text):
    """{test name: its output lines} from ctest's Testing/Temporary/LastTest.log."""
    found = {}
    for block in re.finditer(r'^\d+/\d+ Test: (.+?)\n.*?^Output:\n-+\n(.*?)^<end of output>', log_text,
                             re.MULTILINE | re.DOTALL):
        found[block.group(1)] = block.group(2).splitlines()
    return found


def digest(lines, limit):
    """The lines that say what failed, then the last lines, at most `limit` in all, in order."""
    keep = [i for i, line in enumerate(lines) if re.search(r'FAILED|[Ee]rror|Assertion|Failure', line)]
    keep = keep[:limit // 2]
    tail = range(max(0, len(lines) - (limit - len(keep))), len(lines))
    chosen = sorted(set(keep) | set(tail))
    out, previous = [], -1
    for i in chosen:
        if previous >= 0 and i != previous + 1:
            out.append('    ...')
        out.append('    ' + lines[i][:160])
        previous = i
    return out


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit('usage: failed_tests_digest.py BUILD_DIR [MAX_LINES_PER_TEST]')
    temporary = os.path.join(sys.argv[1], 'Testing', 'Temporary')
    limit = int(sys.argv[2]) if len(sys.argv) == 3 else 8
    try:
        failed = [line.split(':', 1)[1].strip() for line in open(os.path.join(temporary, 'LastTestsFailed.log'))
                  if ':' in line]
        log_text = open(os.path.join(temporary, 'LastTest.log'), errors='replace').read()
    except OSError as e:
        sys.exit(f'failed_tests_digest.py: no ctest log to read ({e})')
    found = outputs(log_text)
    for name in failed:
        print(f'failed test {name}:')
        print('\n'.join(digest(found.get(name, ['(no output in LastTest.log)']), limit)))


if __name__ == '__main__':
    main()
