"""``make demo``: the whole method on the embedded ORL faces, on this machine's CPUs.

1. pretrain a small teacher at full resolution (torchrun, 2 processes);
2. train the student against it (torchrun, 2 processes);
3. evaluate both on the test split (never trained on, never used for selection): classifier
   top-1, and cross-resolution identification and verification, at 8 to 32 px and full
   resolution, with plots.
Everything lands in runs/demo/; the table is printed and written to runs/demo/results.md in the
README's format (``--readme`` publishes it as results/demo/, with its provenance, and splices it
into the README). Beside it, each figure is compared with the README's and with the band it moves
in over seeds (results/demo-band/, ``--band``): equal, inside the band, or outside it.

The demo runs with ``run.reproducible=cross_cpu`` (crossres_dist/arithmetic.py): the same bits
on any x86-64 CPU with AVX2 at the same versions, where the CPU's own arithmetic would move a
figure by several test images (``--arithmetic native`` runs without the pins).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tools import published as results

REPO = Path(__file__).resolve().parent.parent
RESOLUTIONS = ["8px", "12px", "16px", "24px", "32px", "full"]


# The figures of the README's table: (metric, model, resolution) -> value. The report keys a
# resolution as "8" ... "32" and "full".
LABELS = [r.removesuffix("px") for r in RESOLUTIONS]
METRICS = {
    "top-1 (classifier)": lambda m, r: m["classifier_top1"][r],
    "rank-1, probe at r vs full-resolution gallery": lambda m, r: m["probe_vs_full_gallery"][r][
        "identification"
    ]["rank1"],
    "TAR at FAR = 1e-2, probe at r vs full gallery": lambda m, r: m["probe_vs_full_gallery"][r][
        "verification"
    ]["tar@far=0.01"],
}
MODELS = ("teacher", "student")


def figures(report: dict) -> dict[str, float | None]:
    """Every figure of the table, keyed 'metric | model | resolution'."""
    return {
        f"{title} | {name} | {r}": value(report["models"][name], r)
        for title, value in METRICS.items()
        for name in MODELS
        for r in LABELS
    }


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


def table_lines(cell) -> list[str]:
    """The README's table layout, one row per metric and model; `cell(metric, model, r)` is
    the text of a cell."""
    lines = [
        "| test split | model | "
        + " | ".join(f"{r} px" if r != "full" else r for r in LABELS)
        + " |",
        "|---|---|" + "---|" * len(LABELS),
    ]
    for title in METRICS:
        for i, name in enumerate(MODELS):
            text = " | ".join(cell(title, name, r) for r in LABELS)
            lines.append(f"| {title if i == 0 else ''} | {name} | {text} |")
    return lines


def table(report: dict) -> str:
    """The README's demo table: both models on the test split."""
    values = figures(report)
    return "\n".join(table_lines(lambda *key: fmt(values[" | ".join(key)])))


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


def run_demo(out: Path, nproc: int, settings: list[str]) -> tuple[dict, dict[str, float]]:
    """Both stages and the evaluation into `out`, with `settings` (section.key=value) for all
    three; the evaluation report and the time of each part."""
    timings = {}
    start = time.perf_counter()
    torchrun(nproc, "--config", "configs/demo_teacher.yaml", f"run.output_dir={out}", *settings)
    timings["teacher pretraining"] = time.perf_counter() - start

    start = time.perf_counter()
    teacher_ckpt = out / "teacher" / "checkpoints" / "best.pt"
    torchrun(
        nproc,
        "--config",
        "configs/demo.yaml",
        f"run.output_dir={out}",
        f"teacher.checkpoint={teacher_ckpt}",
        *settings,
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
            *settings,
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
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
    )
    timings["evaluation"] = time.perf_counter() - start
    return json.loads((out / "eval" / "results.json").read_text()), timings


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def compare(mine: dict[str, float | None]) -> str:
    """Each figure against the README's (results/demo/) and the band over seeds
    (results/demo-band/): how many are equal, inside the band, outside it."""
    readme_file, band_file = results.RESULTS / "demo", results.RESULTS / "demo-band"
    if not (readme_file / "result.json").is_file():
        return "No README table to compare with (results/demo/ is missing)."
    readme = figures(json.loads((readme_file / "result.json").read_text()))
    band = {}
    if (band_file / "result.json").is_file():
        band = json.loads((band_file / "result.json").read_text())["figures"]
    equal, inside, outside = [], [], []
    for key, value in mine.items():
        if value == readme.get(key):
            equal.append(key)
        elif key in band and value is not None and band[key]["min"] <= value <= band[key]["max"]:
            inside.append(key)
        else:
            outside.append(key)
    lines = [
        f"Against the README's table: {len(equal)} of {len(mine)} figures equal, {len(inside)} "
        f"different but inside the band over seeds (results/demo-band/), {len(outside)} outside it."
    ]
    for key in outside:
        spread = f"band {band[key]['min']:.3f}-{band[key]['max']:.3f}" if key in band else "no band"
        lines.append(
            f"  outside: {key}: {fmt(mine[key])} (README {fmt(readme.get(key))}, {spread})"
        )
    return "\n".join(lines)


def band_block(per_seed: dict[int, dict[str, float | None]]) -> tuple[str, dict]:
    """The band over seeds: each figure's lowest, median and highest value, as a table in the
    README's layout (min-max per cell) and as data."""
    keys = next(iter(per_seed.values())).keys()
    band = {}
    for key in keys:
        values = sorted(v[key] for v in per_seed.values() if v[key] is not None)
        if values:
            band[key] = {"min": values[0], "median": statistics.median(values), "max": values[-1]}

    def cell(*key: str) -> str:
        b = band.get(" | ".join(key))
        return "n/a" if b is None else f"{b['min']:.3f}-{b['max']:.3f}"

    lines = [
        f"The demo over {len(per_seed)} seeds (run.seed {', '.join(map(str, per_seed))}, both "
        "stages), each figure's lowest and highest value: a table that differs from the one above "
        "but lies inside these ranges moved as far as another seed moves it.",
        "",
        *table_lines(cell),
    ]
    return "\n".join(lines), {"seeds": list(per_seed), "figures": band}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--seed", type=int, default=0, help="run.seed of both stages")
    parser.add_argument(
        "--arithmetic",
        choices=["cross_cpu", "cross_cpu_strict", "native"],
        default="cross_cpu",
        help="run.reproducible: cross_cpu (the same bits on any x86-64 CPU) or this CPU's own",
    )
    parser.add_argument(
        "--keep", action="store_true", help="resume an existing runs/demo instead of starting over"
    )
    parser.add_argument(
        "--band",
        type=int,
        nargs="+",
        metavar="SEED",
        help="run the demo once per seed (runs/demo-band/) and publish the band each figure "
        "moves in as results/demo-band/",
    )
    parser.add_argument(
        "--readme",
        action="store_true",
        help="afterwards, publish the results as results/demo/ and splice them into README.md",
    )
    parser.add_argument("--allow-dirty", action="store_true", help="with --readme: see results.py")
    args = parser.parse_args(argv)
    arithmetic = "" if args.arithmetic == "native" else args.arithmetic

    def settings(seed: int) -> list[str]:
        return [f"run.seed={seed}", f"run.reproducible={arithmetic}"]

    provenance = None
    if args.readme or args.band:
        command = "make demo-band" if args.band else "make demo-readme"
        try:
            provenance = results.capture(command, DEMO_DATA, args.allow_dirty, nproc=args.nproc)
        except results.DirtyTree as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.band:
        per_seed = {}
        for seed in args.band:
            out = REPO / "runs" / "demo-band" / f"seed-{seed}"
            shutil.rmtree(out, ignore_errors=True)
            report, _ = run_demo(out, args.nproc, settings(seed))
            per_seed[seed] = figures(report)
        text, payload = band_block(per_seed)
        print("\n" + text)
        folder = results.publish(
            "demo-band", text, payload, {**provenance, "arithmetic": args.arithmetic}
        )
        print(f"wrote {folder}, spliced README.md")
        return 0
    out = REPO / args.out
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    report, timings = run_demo(out, args.nproc, settings(args.seed))
    text = results_block(report)
    (out / "results.md").write_text(text + "\n")
    print("\n" + text)
    print("\nTime per part (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print("\n" + compare(figures(report)))
    if provenance is not None:
        timed = {k: round(v) for k, v in timings.items()}
        publish(out, report, {**provenance, "timings_s": timed, "arithmetic": args.arithmetic})
    return 0


if __name__ == "__main__":
    sys.exit(main())
