"""The trainer end to end: images/s of the real training step path on real faces, with the input
pipeline, the sync points and everything else the trainer does, for N steps after a warm-up.

    torchrun --nproc_per_node=1 bench/e2e.py --config configs/vggface2_senet50.yaml \\
        --data ../shared/data/lfw_deepfunneled_10to19 [--steps 40 --warmup 10] [section.key=value]

The teacher is a random network of the config's architecture unless teacher.checkpoint is
given (throughput does not depend on the weights). Validation and checkpoints are pushed out of
the timed window. Prints (and with --json writes) images/s, the median step time, MFU against the
chip's dense bf16 peak, and peak device memory.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.step import forward_flops, report  # noqa: E402
from crossres_dist import distributed  # noqa: E402
from crossres_dist.config import load_config  # noqa: E402
from crossres_dist.models import build_model, spec_from_config  # noqa: E402
from crossres_dist.training.trainer import Trainer  # noqa: E402
from pipelines.sources import load_source  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--data", required=True, help="an ImageFolder of faces")
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compile)")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="after the timed window, trace N more steps with torch.profiler and write the "
        "largest costs next to --json (the timed figure does not include them)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/e2e"), help="a scratch run dir")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    timed_end = args.warmup + args.steps
    total = timed_end + args.profile
    bench_settings = [
        f"data.train={args.data}",
        "data.val=split:1",
        "data.test=",
        "val.every_nth=1",
        "val.min_images=1",
        "data.check=header",
        "model.num_classes=0",
        f"run.output_dir={out}",
        "run.name=e2e",
        "checkpoint.resume=never",
        f"train.max_steps={total}",
        f"val.every={total}",
        f"checkpoint.every={total}",
        "train.progress_bar=false",
    ]
    cfg_probe = load_config(args.config, [*bench_settings, "teacher.checkpoint=x", *args.overrides])
    user_teacher = any(o.startswith("teacher.checkpoint=") for o in args.overrides)
    info = distributed.detect()
    overrides = [*bench_settings, *args.overrides]
    if not user_teacher and cfg_probe.run.stage == "crossres":
        # A random teacher of the config's architecture for the data's identities, the same
        # (seeded) on every rank, each in its own file: no rank waits for another's.
        teacher = out / f"random_teacher-rank{info.rank}.pt"
        classes = load_source(args.data).num_classes
        torch.manual_seed(0)
        torch.save(build_model(spec_from_config(cfg_probe.model, classes)).state_dict(), teacher)
        overrides.append(f"teacher.checkpoint={teacher}")
    cfg = load_config(args.config, overrides)

    marks: dict[int, float] = {}
    trainer = Trainer(cfg)
    profiler = None

    def on_step(step: int) -> None:
        nonlocal profiler
        if step in (args.warmup, timed_end):
            if trainer.device.type == "cuda":
                torch.cuda.synchronize(trainer.device)
            marks[step] = time.perf_counter()
        if args.profile and step == timed_end:
            profiler = start_profiler(trainer.device)
        elif profiler is not None and step == total:
            stop_profiler(profiler, trainer.device, args.json, info.rank)
            profiler = None

    trainer.on_step = on_step
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    try:
        trainer.train()
    finally:
        trainer.close()
    elapsed = marks[timed_end] - marks[args.warmup]
    images_per_s = args.steps * cfg.optim.global_batch / elapsed
    device = trainer.device
    spec = trainer.student.spec
    # Student forward + backward (about 3x a forward) and one teacher forward per image.
    flops = 4 * forward_flops(build_model(spec).to(device), cfg.data.crop, device)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "world_size": trainer.world,
        "config": args.config,
        "overrides": args.overrides,
        "backend": cfg.data.backend,
        "precision": trainer.precision,
        "micro_batch": cfg.data.micro_batch,
        "global_batch": cfg.optim.global_batch,
        "teacher_sharding": cfg.teacher.sharding,
        "compile": cfg.compile.student,
        "compile_mode": cfg.compile.mode,
        "steps_timed": args.steps,
        "images_per_s": images_per_s,
        "mean_step_s": elapsed / args.steps,
        "gflops_per_image": flops / 1e9,
    }
    report(result, device, images_per_s, flops, info.rank, args.json)
    distributed.shutdown()


def start_profiler(device: torch.device) -> torch.profiler.profile:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profiler = torch.profiler.profile(activities=activities, record_shapes=False)
    profiler.__enter__()
    return profiler


def stop_profiler(
    profiler: torch.profiler.profile, device: torch.device, json_path: Path | None, rank: int
) -> None:
    """Writes the traced steps' largest costs (by self device time on a GPU, self host time
    otherwise) as a table next to the JSON result (rank 0 only)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    profiler.__exit__(None, None, None)
    if rank != 0:
        return
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = profiler.key_averages().table(sort_by=key, row_limit=30)
    print(table)
    if json_path is not None:
        json_path.with_suffix(".profile.txt").write_text(table)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
