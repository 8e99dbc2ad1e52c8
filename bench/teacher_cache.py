"""What a training step of the real-teacher recipe costs on the CPU, and what the teacher feature
cache and bf16 change (issue 55): the trainer end to end (bench/e2e.py, the recipe's config on
the aligned LFW sample), each setting run --repeats times in a fresh process, the median
images/s; then where a step's time goes, each part timed on its own.

    python bench/teacher_cache.py --data runs/aligned/lfw_10to19 [--repeats 3 --steps 16]

Prints a markdown table (make bench-teacher-cache publishes it as results/bench-teacher-cache).
Run nothing else meanwhile: a second process on the 2 cores slows a run up to 9 times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from crossres_dist.config import load_config  # noqa: E402
from crossres_dist.data.views import loader_for, view_settings  # noqa: E402
from crossres_dist.models import build_model, spec_from_config  # noqa: E402
from crossres_dist.training.student_teacher import build_teacher  # noqa: E402
from pipelines import TrainPlanner  # noqa: E402
from pipelines.sources import load_source  # noqa: E402

CONFIG = "configs/dlib_recipe.yaml"
TEACHER = "teacher.checkpoint=dlib_face_recognition_resnet_model_v1"
# Each setting's overrides; bf16 runs once, on fewer steps: without bf16 instructions (the AMD
# EPYC here) it is an order of magnitude slower, and three runs would take half an hour.
SETTINGS = {
    "the teacher at every step (fp32)": [],
    "teacher.feature_cache (fp32)": ["teacher.feature_cache={store}"],
    "teacher.feature_cache, model.channels_last_on_cpu (fp32)": [
        "teacher.feature_cache={store}",
        "model.channels_last_on_cpu=true",
    ],
    "teacher.feature_cache, train.precision=bf16": [
        "teacher.feature_cache={store}",
        "train.precision=bf16",
    ],
}
ONCE = {"teacher.feature_cache, train.precision=bf16": 4}  # setting -> timed steps, one run


def e2e(data: str, overrides: list[str], steps: int, warmup: int, out: Path) -> float:
    """images/s of one bench/e2e.py run in a fresh process."""
    result = out / "e2e.json"
    cmd = [
        sys.executable, str(REPO / "bench" / "e2e.py"), "--config", CONFIG, "--data", data,
        "--steps", str(steps), "--warmup", str(warmup), "--json", str(result),
        "--out", str(out / "run"), TEACHER, *overrides,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(result.read_text())["images_per_s"]


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn` over `repeats` calls, after one untimed call."""
    fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def parts(data: str, repeats: int) -> dict[str, float]:
    """Seconds per micro-batch of each part of a step, on its own: the input pipeline (both
    views), the teacher's forward, the student's forward and backward on both views (paired)."""
    torch.set_num_threads(2)
    cfg = load_config(CONFIG, [f"data.train={data}", TEACHER])
    samples = load_source(data).samples
    spec = spec_from_config(cfg.model, 0, input_size=cfg.data.crop)
    views = view_settings(cfg.data, cfg.method, spec)
    loader = loader_for(cfg.data, views, torch.device("cpu"), 0, cfg.method.interpolation)
    planner = TrainPlanner(samples, views, cfg.data.micro_batch, 0, 1, 0, lambda _: cfg.method.p)
    stream = loader(planner.stream())
    batch = next(stream)
    teacher, _ = build_teacher(cfg, spec)
    student = build_model(spec)
    paired = torch.cat([batch["student_view"], batch["teacher_view"]])

    def student_step():
        features, _ = student(paired)
        features.float().pow(2).mean().backward()

    def teacher_forward():
        with torch.no_grad():
            teacher(batch["teacher_view"])

    return {
        "input pipeline (both views, 2 threads)": timed(lambda: next(stream), repeats * 4),
        "student forward + backward, both views": timed(student_step, repeats),
        "teacher forward": timed(teacher_forward, repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="aligned faces (dlib's 150 px chips)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=16, help="timed optimizer steps a run")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    cfg = load_config(CONFIG, [f"data.train={args.data}", TEACHER])
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        store = Path(scratch) / "store"
        for k, (name, overrides) in enumerate(SETTINGS.items()):
            filled = [o.format(store=store) for o in overrides]
            steps, repeats = ONCE.get(name, args.steps), 1 if name in ONCE else args.repeats
            warmup = 1 if name in ONCE else args.warmup
            rates = [
                e2e(args.data, filled, steps, warmup, Path(scratch) / f"{k}-{i}")
                for i in range(repeats)
            ]
            rows.append((name, statistics.median(rates), rates))
            print(f"{name}: {[round(r, 1) for r in rates]}", file=sys.stderr)
    base = rows[0][1]
    print(
        f"The real-teacher recipe's step ({CONFIG}: dlib's ResNet as teacher and student, "
        f"150 px, micro-batch {cfg.data.micro_batch}, global batch {cfg.optim.global_batch}, "
        "paired views, p = 1) end to end on the aligned LFW sample, 2 threads, the median of "
        f"{args.repeats} fresh runs of {args.steps} timed steps (bench/e2e.py; bf16 one run of "
        f"{ONCE['teacher.feature_cache, train.precision=bf16']} steps):\n"
    )
    print("| setting | images/s | runs | vs the teacher at every step |")
    print("|---|---|---|---|")
    for name, rate, rates in rows:
        print(
            f"| {name} | {rate:.1f} | {', '.join(f'{r:.1f}' for r in rates)} | "
            f"{rate / base:.2f} x |"
        )
    timing = parts(args.data, args.repeats)
    total = sum(timing.values())
    print(
        f"\nWhere a micro-batch of {cfg.data.micro_batch} faces goes, each part timed on its "
        "own (median; the pipeline's threads and the network's share the 2 cores in a real "
        "step, so the parts overlap less than they add up):\n"
    )
    print("| part | ms per micro-batch | share of their sum |")
    print("|---|---|---|")
    for name, seconds in timing.items():
        print(f"| {name} | {1000 * seconds:.0f} | {seconds / total:.0%} |")


if __name__ == "__main__":
    main()
