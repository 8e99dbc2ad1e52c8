"""Images/s of a full cross-resolution training step at 224 px (student forward + backward,
teacher forward, optimizer step), with the project's own modules, on whatever device is present.

    python bench/step.py [--layers 3 4 6 3] [--batch 64] [--steps 20] [--sharding full]
    torchrun --nproc_per_node=1 bench/step.py ...     (NCCL process group, DDP student, FSDP2 teacher)

Inputs are random tensors already on the device, so the figure is the model's, not the loader's.
On a GPU it also reports the model FLOPs utilisation against the chip's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossres_dist import distributed  # noqa: E402
from crossres_dist.distributed.parallelize import local_parameter_bytes, shard_teacher  # noqa: E402
from crossres_dist.models import ModelSpec, build_model  # noqa: E402
from crossres_dist.precision import autocast_for, resolve_precision  # noqa: E402
from crossres_dist.training.objective import (  # noqa: E402
    CrossResolutionLoss,
    CrossResolutionObjective,
    freeze,
)
from crossres_dist.training.optimizer import build_optimizer  # noqa: E402
from crossres_dist.training.settings import OptimConfig  # noqa: E402

# Dense bf16 tensor-core peaks (FLOP/s) for the chips we report on.
PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def forward_flops(model: torch.nn.Module, size: int, device: torch.device) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size, device=device))
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 4, 6, 3])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--classes", type=int, default=8631)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--sharding", default="full", choices=["none", "full"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument(
        "--bucket-view",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="DDP gradient_as_bucket_view (the trainer's setting)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    info = distributed.detect()
    device = distributed.pick_device("auto", info.local_rank)
    distributed.init(info, device, "auto", 600)
    precision = resolve_precision(args.precision, device)
    autocast = autocast_for(precision, device)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    torch.backends.cudnn.benchmark = True

    spec = ModelSpec(layers=tuple(args.layers), width=args.width, num_classes=args.classes)
    student = build_model(spec).to(device, memory_format=memory_format)
    if args.compile:
        student.compile()
    teacher = freeze(build_model(spec))
    teacher.load_state_dict(build_model(spec).state_dict())
    teacher = shard_teacher(teacher, args.sharding, device, precision, memory_format)
    model = (
        DDP(
            student,
            device_ids=[device.index] if device.type == "cuda" else None,
            gradient_as_bucket_view=args.bucket_view,
        )
        if distributed.is_initialized()
        else student
    )
    task = CrossResolutionLoss(model, teacher, CrossResolutionObjective(0.1))
    optimizer = build_optimizer(student, torch.nn.Identity(), OptimConfig(), device)

    views = torch.randn(2, args.batch, 3, args.size, args.size, device=device)
    views = views.contiguous(memory_format=memory_format) if views.dim() == 4 else views
    teacher_view = views[0].contiguous(memory_format=memory_format)
    student_view = views[1].contiguous(memory_format=memory_format)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)

    def step() -> None:
        with autocast:
            losses = task(teacher_view, student_view, labels)
        losses["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    images_per_s = args.batch / median
    # Student forward + backward (about 3x a forward) and one teacher forward per image.
    flops_per_image = 4 * forward_flops(build_model(spec).to(device), args.size, device)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "world_size": distributed.world_size(),
        "precision": precision,
        "teacher_sharding": args.sharding,
        "compile": args.compile,
        "bucket_view": args.bucket_view,
        "layers": args.layers,
        "batch": args.batch,
        "size": args.size,
        "median_step_s": median,
        "images_per_s": images_per_s,
        "teacher_param_bytes_per_rank": local_parameter_bytes(teacher),
        "gflops_per_image": flops_per_image / 1e9,
        "achieved_tflops": images_per_s * flops_per_image / 1e12,
    }
    report(result, device, images_per_s, flops_per_image, info.rank, args.json)
    distributed.shutdown()


def report(
    result: dict, device: torch.device, images_per_s: float, flops: float, rank: int, out
) -> None:
    """Add MFU (against the chip's dense bf16 peak) and peak memory on a GPU; rank 0 prints the
    result and writes it to `out` (a path or None)."""
    if device.type == "cuda":
        peak = next((v for k, v in PEAKS.items() if k in result["device"]), None)
        result["mfu"] = images_per_s * flops / peak if peak else None
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if rank == 0:
        print(json.dumps(result, indent=1))
        if out:
            out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
