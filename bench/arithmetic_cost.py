"""What run.reproducible costs (crossres_dist/arithmetic.py): the demo teacher's first 60 steps
(configs/demo_teacher.yaml, one process, one thread) with this CPU's own arithmetic, with
cross_cpu and with cross_cpu_strict, each timed REPEATS times (the median is published), and the
digest of each mode's final weights (twice the same within a mode: each mode is deterministic).

    python bench/arithmetic_cost.py [--readme]     (make bench-arithmetic; about 4 minutes)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools import published as results  # noqa: E402
from tools.cross_cpu import weights_digest  # noqa: E402

MODES = {"this CPU's own": "", "cross_cpu": "cross_cpu", "cross_cpu_strict": "cross_cpu_strict"}
STEPS = 60
REPEATS = 3


def timed_run(mode: str) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as scratch:
        cmd = [
            sys.executable,
            "-m",
            "crossres_dist.train",
            "--config",
            "configs/demo_teacher.yaml",
            f"run.output_dir={scratch}",
            f"run.reproducible={mode}",
            f"train.max_steps={STEPS}",
            f"checkpoint.every={STEPS}",
            "val.every=100000",
            "train.progress_bar=false",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
        took = time.perf_counter() - start
        return took, weights_digest(
            Path(scratch) / "teacher" / "checkpoints" / f"step_{STEPS:08d}.pt"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", action="store_true", help="publish as results/arithmetic-cost/")
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args(argv)
    provenance = None
    if args.readme:
        try:
            provenance = results.capture("make bench-arithmetic", [], args.allow_dirty)
        except results.DirtyTree as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    rows = {}
    for name, mode in MODES.items():
        runs = [timed_run(mode) for _ in range(REPEATS)]
        digests = {d for _, d in runs}
        rows[name] = {
            "median_s": statistics.median(t for t, _ in runs),
            "times_s": [round(t, 2) for t, _ in runs],
            "digest": sorted(digests)[0][:16],
            "deterministic": len(digests) == 1,
        }
    own = rows["this CPU's own"]["median_s"]
    lines = [
        f"The demo teacher's first {STEPS} steps, one process, one thread, median of {REPEATS} "
        "runs (the process's whole life, start-up included); the digest of the final weights.",
        "",
        "| run.reproducible | median (s) | against the CPU's own | final weights | same bits each run |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['median_s']:.1f} | {row['median_s'] / own:.2f} x | "
            f"`{row['digest']}` | {'yes' if row['deterministic'] else 'no'} |"
        )
    text = "\n".join(lines)
    print(text)
    if provenance is not None:
        folder = results.publish("arithmetic-cost", text, rows, provenance)
        print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
