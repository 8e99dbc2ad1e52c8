"""What the feature-regression term adds: lambda = 0 against lambda = 0.1 over several seeds.

    python bench/lambda_ablation.py [--seeds 0 1 2 3 4] [--lambdas 0 0.1] [--nproc 2]

Needs the demo's teacher (``make demo`` first). Each point trains the demo's student
(configs/demo.yaml, 2 processes) with the given lambda and seed, then evaluates it with
crossres_dist.evaluate: rank-1 identification and verification with probes at 8, 16 and 32 px
against a full-resolution gallery (cross-resolution matching), and same-resolution matching.
Prints per-seed rows and mean (standard deviation) per lambda; the teacher is the reference row.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METRICS = [
    ("8", "rank1"),
    ("16", "rank1"),
    ("32", "rank1"),
    ("full", "rank1"),
    ("8", "tar@far=0.01"),
]


def evaluate(checkpoint: Path, out: Path, teacher: Path) -> dict:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "crossres_dist.evaluate",
            "--config",
            "configs/demo.yaml",
            f"teacher.checkpoint={teacher}",
            "--checkpoint",
            str(checkpoint),
            "--name",
            "m",
            "--resolutions",
            "8",
            "16",
            "32",
            "full",
            "--tsne-identities",
            "0",
            "--cross",
            "--out",
            str(out),
        ],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    model = json.loads((out / "results.json").read_text())["models"]["m"]
    rows = model["probe_vs_full_gallery"]
    values = {
        f"{r} {k}": rows[r]["identification" if k == "rank1" else "verification"][k]
        for r, k in METRICS
    }
    values["8 vs 8 rank1"] = model["cross_matrix_rank1"]["8"]["8"]
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--out", default="runs/ablation")
    args = parser.parse_args()
    out = REPO / args.out
    if out.exists():  # a run directory that exists would be resumed, not retrained
        shutil.rmtree(out)
    teacher = REPO / "runs" / "demo" / "teacher" / "checkpoints" / "best.pt"
    if not teacher.is_file():
        sys.exit(f"error: {teacher} not found; run `make demo` first")
    rows = {"teacher": [evaluate(teacher, out / "teacher-eval", teacher)]}
    for lam in args.lambdas:
        for seed in args.seeds:
            name = f"lambda{lam:g}-seed{seed}"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    f"--nproc_per_node={args.nproc}",
                    "-m",
                    "crossres_dist.train",
                    "--config",
                    "configs/demo.yaml",
                    f"teacher.checkpoint={teacher}",
                    f"run.output_dir={out}",
                    f"run.name={name}",
                    f"run.seed={seed}",
                    f"method.lambda_feat={lam}",
                    "train.progress_bar=false",
                ],
                cwd=REPO,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            values = evaluate(out / name / "checkpoints" / "best.pt", out / f"{name}-eval", teacher)
            rows.setdefault(f"lambda={lam:g}", []).append(values)
            print(name, json.dumps({k: round(v, 4) for k, v in values.items()}), file=sys.stderr)
    keys = list(rows["teacher"][0])
    print(
        f"\nORL validation split (120 images, 40 identities), gallery 1 full-resolution image per identity, "
        f"{len(args.seeds)} seeds; mean (standard deviation)\n"
    )
    print("| model | " + " | ".join(f"probe {k}" for k in keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, values in rows.items():
        cells = []
        for k in keys:
            xs = [v[k] for v in values]
            cells.append(
                f"{statistics.mean(xs):.3f}"
                + (f" ({statistics.stdev(xs):.3f})" if len(xs) > 1 else "")
            )
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
