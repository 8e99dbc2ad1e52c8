"""How long the test tiers take on a fresh clone of this commit (the README's timing figures).

    python bench/test_timing.py [--targets test-fast test]

Clones HEAD beside this checkout (so that ../shared is beside the clone too), times the set-up
(`make .venv/.installed-dev deps`: the virtual environment, pip and Debian packages), then each
make target in turn, and prints a markdown table with pytest's own summary line. `make
test-timing` publishes it as results/test-timing/.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(command: list[str], cwd: Path) -> tuple[float, int, str]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - start, done.returncode, done.stdout + done.stderr


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", nargs="+", default=["test-fast", "test"])
    args = parser.parse_args()
    clone = REPO.parent / ".test-timing-clone"
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    rows = []
    seconds, code, _ = timed(["make", ".venv/.installed-dev", "deps"], clone)
    rows.append(("set-up (`make .venv/.installed-dev deps`)", seconds, "", code))
    for target in args.targets:
        seconds, code, output = timed(["make", target], clone)
        # make test runs pytest twice (the parallel phase, then the timed tests): both lines.
        summary = [
            line.strip("= ") for line in output.splitlines() if re.search(r"\d+ passed", line)
        ]
        rows.append((f"`make {target}`", seconds, "; then ".join(summary), code))
        print(output[-3000:], file=sys.stderr)
    shutil.rmtree(clone, ignore_errors=True)
    print("A fresh clone of the commit below, on this machine, one target after the other.\n")
    print("| what | wall time | pytest | exit |")
    print("|---|---|---|---|")
    for what, secs, summary, code in rows:
        print(f"| {what} | {minutes(secs)} | {summary} | {code} |")
    return max(code for *_, code in rows)


if __name__ == "__main__":
    sys.exit(main())
