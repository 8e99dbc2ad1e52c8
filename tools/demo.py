"""``make demo``: the whole method on the embedded ORL faces, on this machine's CPUs.

1. pretrain a small teacher at full resolution (torchrun, 2 processes);
2. train the student against it (torchrun, 2 processes);
3. evaluate both on the test split (never trained on, never used for selection): classifier
   top-1, and cross-resolution identification and verification, at 8 to 32 px and full
   resolution, with plots.
Everything lands in runs/demo/; the table is printed and written to runs/demo/results.md in the
README's format (``--readme`` publishes it as results/demo/, with its provenance, and splices it
into the README).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tools import published as results

REPO = Path(__file__).resolve().parent.parent
RESOLUTIONS = ["8px", "12px", "16px", "24px", "32px", "full"]


def torchrun(nproc: int, *args: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "crossres_dist.train",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    subprocess.run(cmd, cwd=REPO, env=env, check=True)


DEMO_DATA = ("embedded:orl",)


def table(report: dict) -> str:
    """The README's demo table: both models on the test split, one row per metric and model."""
    labels = [r.removesuffix("px") for r in RESOLUTIONS]
    lines = [
        "| test split | model | "
        + " | ".join(f"{r} px" if r != "full" else r for r in labels)
        + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    metrics = [
        ("top-1 (classifier)", lambda m, r: m["classifier_top1"][r]),
        (
            "rank-1, probe at r vs full-resolution gallery",
            lambda m, r: m["probe_vs_full_gallery"][r]["identification"]["rank1"],
        ),
        (
            "TAR at FAR = 1e-2, probe at r vs full gallery",
            lambda m, r: m["probe_vs_full_gallery"][r]["verification"]["tar@far=0.01"],
        ),
    ]
    for title, value in metrics:
        for i, name in enumerate(("teacher", "student")):
            model = report["models"][name]
            cells = [value(model, r) for r in labels]
            text = " | ".join("n/a" if c is None else f"{c:.3f}" for c in cells)
            lines.append(f"| {title if i == 0 else ''} | {name} | {text} |")
    return "\n".join(lines)


def results_block(report: dict) -> str:
    return "\n".join(
        [
            f"Test split of the ORL faces: {report['images']} images (3 of each of 40 people), "
            "never trained on and never used to choose a checkpoint. The student's input, or the "
            "probe, is degraded to r px (shorter side); the gallery is one full-resolution image "
            "per person.",
            "",
            table(report),
        ]
    )


def publish(out: Path, report: dict, provenance: dict) -> None:
    folder = results.publish("demo", (out / "results.md").read_text(), report, provenance)
    for target in (
        folder / "accuracy_vs_resolution.png",
        REPO / "docs" / "demo_accuracy_vs_resolution.png",
    ):
        shutil.copyfile(out / "eval" / "accuracy_vs_resolution.png", target)
    print(f"wrote {folder}, spliced README.md, updated docs/demo_accuracy_vs_resolution.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument(
        "--keep", action="store_true", help="resume an existing runs/demo instead of starting over"
    )
    parser.add_argument(
        "--readme",
        action="store_true",
        help="afterwards, publish the results as results/demo/ and splice them into README.md",
    )
    parser.add_argument("--allow-dirty", action="store_true", help="with --readme: see results.py")
    args = parser.parse_args(argv)
    provenance = None
    if args.readme:
        try:
            provenance = results.capture(
                "make demo-readme", DEMO_DATA, args.allow_dirty, nproc=args.nproc
            )
        except results.DirtyTree as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    out = REPO / args.out
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    timings = {}

    start = time.perf_counter()
    torchrun(args.nproc, "--config", "configs/demo_teacher.yaml", f"run.output_dir={out}")
    timings["teacher pretraining"] = time.perf_counter() - start

    start = time.perf_counter()
    teacher_ckpt = out / "teacher" / "checkpoints" / "best.pt"
    torchrun(
        args.nproc,
        "--config",
        "configs/demo.yaml",
        f"run.output_dir={out}",
        f"teacher.checkpoint={teacher_ckpt}",
    )
    timings["cross-resolution training"] = time.perf_counter() - start

    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "crossres_dist.evaluate",
            "--config",
            "configs/demo.yaml",
            f"teacher.checkpoint={teacher_ckpt}",
            "--checkpoint",
            str(teacher_ckpt),
            "--name",
            "teacher",
            "--checkpoint",
            str(out / "student" / "checkpoints" / "best.pt"),
            "--name",
            "student",
            "--out",
            str(out / "eval"),
        ],
        cwd=REPO,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    timings["evaluation"] = time.perf_counter() - start

    report = json.loads((out / "eval" / "results.json").read_text())
    text = results_block(report)
    (out / "results.md").write_text(text + "\n")
    print("\n" + text)
    print("\nTime per part (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    if provenance is not None:
        publish(out, report, {**provenance, "timings_s": {k: round(v) for k, v in timings.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
