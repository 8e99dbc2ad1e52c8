"""A run's learning curve on its validation people: the student trained with validation every
--every steps, then each validation's classifier top-1 and cosine to the teacher by resolution,
as a markdown table. It chooses a study's step budget without looking at the open-set pairs.

    python bench/learning_curve.py --config configs/dlib_faces.yaml --steps 800 --every 100 \\
        --out runs/curve/all-faces [section.key=value ...]

A run that is there already is resumed (or, finished, only read): the curve can be drawn again,
or extended with a larger --steps, without training what is done.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOP1 = re.compile(r"validation at step (\d+) \([\d.]+s\): .* \| (.*)$")
COSINE = re.compile(r"validation at step (\d+): cosine to the teacher (.*) \| mean ([\d.]+)$")


def curve(log_text: str) -> dict[int, dict[str, float]]:
    """{step: {"top1 8px": ..., "cos full": ..., "cos mean": ...}} from a run's train.log (the
    last validation of each step, if a resumed run repeated one)."""
    points: dict[int, dict[str, float]] = {}
    for line in log_text.splitlines():
        if match := COSINE.search(line):
            step = int(match.group(1))
            cells = dict(cell.split("=") for cell in match.group(2).split())
            row = points.setdefault(step, {})
            row.update({f"cos {k}": float(v) for k, v in cells.items()})
            row["cos mean"] = float(match.group(3))
        elif match := TOP1.search(line):
            step = int(match.group(1))
            cells = dict(cell.split("=") for cell in match.group(2).split())
            points.setdefault(step, {}).update({f"top1 {k}": float(v) for k, v in cells.items()})
    return dict(sorted(points.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--every", type=int, required=True, help="validate every N steps")
    parser.add_argument("--out", type=Path, required=True, help="the run's directory")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    command = [
        sys.executable, "-m", "crossres_dist.train", "--config", args.config,
        f"run.output_dir={args.out.parent}", f"run.name={args.out.name}",
        f"train.max_steps={args.steps}", f"val.every={args.every}",
        f"checkpoint.every={args.every}", "train.progress_bar=false",
        "val.report_resolutions=[8,12,16,24,32]", *args.overrides,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with open(args.out.parent / f"{args.out.name}.log", "a") as log:
        subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    points = curve((args.out / "train.log").read_text())
    counts = json.loads((args.out / "splits.json").read_text())["counts"]
    faces = counts["train"] + counts.get("unlabelled", 0)
    first = next(iter(points.values()))
    top1 = [k for k in first if k.startswith("top1")]
    cos = [k for k in first if k.startswith("cos") and k != "cos mean"]
    print(
        f"{args.config} {' '.join(args.overrides)}: validation every {args.every} steps of 32 "
        f"faces on the held-out faces of its labelled people ({counts['val']} faces; "
        f"{faces} training faces, so {faces / 32:.0f} steps an epoch): classifier top-1 and the "
        "cosine of the student's descriptor to the teacher's of the clean face, by resolution.\n"
    )
    header = ["step", "epochs", *top1, *cos, "cos mean"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for step, row in points.items():
        cells = [str(step), f"{step * 32 / faces:.2f}"]
        cells += [f"{row.get(k, float('nan')):.3f}" for k in [*top1, *cos, "cos mean"]]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
