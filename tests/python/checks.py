"""Checks for the test harnesses that hold under `python -O`.

`assert` statements are stripped when Python optimises (`-O`, or `PYTHONOPTIMIZE` in the
environment), and a harness whose checks vanish would pass without checking anything. `check`
is an ordinary call: it always runs, and a failed check ends the process with exit status 1.
"""
import sys


def check(ok, *what):
    """Exits with status 1, naming the caller's line and `what`, unless `ok` is true."""
    if ok:
        return
    caller = sys._getframe(1)
    where = f"{caller.f_code.co_filename}:{caller.f_lineno}"
    detail = " ".join(str(w) for w in what)
    print(f"CHECK FAILED at {where}" + (f": {detail}" if detail else ""), file=sys.stderr, flush=True)
    sys.exit(1)
