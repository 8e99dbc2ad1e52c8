"""Per-rank teacher parameter memory and teacher forward time, replicated vs FSDP2-sharded.

    python bench/teacher.py [--ranks 1 2 4] [--layers 3 4 6 3] [--batch 8] [--size 224]

Spawns ``torchrun --nproc_per_node=N`` for each N (gloo on CPU, nccl on GPU) and prints a
markdown table of medians. Both modes must give the same features (checked, float32).
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


def worker(args) -> None:
    from crossres_dist import distributed
    from crossres_dist.distributed.parallelize import local_parameter_bytes, shard_teacher
    from crossres_dist.models import ModelSpec, build_model
    from crossres_dist.training.objective import freeze

    info = distributed.detect()
    device = distributed.pick_device("auto", info.local_rank)
    distributed.init(info, device, "auto", 600)
    spec = ModelSpec(layers=tuple(args.layers), width=args.width, num_classes=args.classes)
    torch.manual_seed(0)
    reference = build_model(spec)
    x = torch.randn(
        args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)
    ).to(device)
    result = {}
    features = {}
    for mode in ("none", "full"):
        teacher = build_model(spec)
        teacher.load_state_dict(reference.state_dict())
        teacher = shard_teacher(freeze(teacher), mode, device, "fp32")
        times = []
        for i in range(args.repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.no_grad():
                features[mode], _ = teacher(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:  # the first call warms up
                times.append(time.perf_counter() - t0)
        result[mode] = {
            "param_bytes": local_parameter_bytes(teacher),
            "forward_s": statistics.median(times),
        }
        del teacher
    result["max_abs_diff"] = float((features["none"] - features["full"]).abs().max())
    everyone = [None] * distributed.world_size()
    if distributed.is_initialized():
        torch.distributed.all_gather_object(everyone, result)
    else:
        everyone = [result]
    if info.rank == 0:
        Path(args.out).write_text(json.dumps(everyone))
    distributed.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 4, 6, 3])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--classes", type=int, default=8631)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    rows = []
    for n in args.ranks:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={n}",
                __file__,
                "--worker",
                "--out",
                out.name,
                "--layers",
                *map(str, args.layers),
                "--width",
                str(args.width),
                "--classes",
                str(args.classes),
                "--batch",
                str(args.batch),
                "--size",
                str(args.size),
                "--repeats",
                str(args.repeats),
            ]
            env = {
                **os.environ,
                "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // n)),
                "PYTHONWARNINGS": "ignore",
            }
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            per_rank = json.loads(Path(out.name).read_text())
        rows.append((n, per_rank))
    print(
        f"SE-ResNet {args.layers} width {args.width}, {args.classes} classes, batch {args.batch} "
        f"at {args.size} px, float32, median of {args.repeats} forwards per rank\n"
    )
    print(
        "| ranks | mode | teacher params per rank (MiB) | vs none | forward (s, rank 0) | max abs diff vs none |"
    )
    print("|---|---|---|---|---|---|")
    for n, per_rank in rows:
        for mode in ("none", "full"):
            mib = max(r[mode]["param_bytes"] for r in per_rank) / 2**20
            ratio = (
                max(r[mode]["param_bytes"] for r in per_rank) / per_rank[0]["none"]["param_bytes"]
            )
            diff = max(r["max_abs_diff"] for r in per_rank) if mode == "full" else 0.0
            print(
                f"| {n} | {mode} | {mib:.1f} | {ratio:.2f} | {per_rank[0][mode]['forward_s']:.3f} | {diff:.1e} |"
            )


if __name__ == "__main__":
    main()
