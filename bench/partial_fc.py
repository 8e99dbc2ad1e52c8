"""PartialFC: memory per rank for the classifier, and its equality with the unsharded head.

    python bench/partial_fc.py [--ranks 1 2 4] [--classes 100000 1000000] [--dim 512]

For each number of ranks N and of classes C, spawns ``torchrun --nproc_per_node=N`` (gloo on
the CPU) and measures, per rank: the bytes of the classifier slice, and the peak resident memory
of one training step of the classifier alone (a global batch of --batch features, the margin
head, the distributed softmax, backward, SGD with momentum). Prints a markdown table of the
largest rank.

``--worker --check`` (what tests/{unit,integration}/test_heads.py runs) compares, on every rank, PartialFC's loss
and gradients at rate 1 with the unsharded head's on the same global batch and classifier, and
records the classes each rank samples at rate < 1.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def method_settings(head: str) -> SimpleNamespace:
    return SimpleNamespace(
        name=head, margin=None, scale=64.0, adaface_h=0.333, adaface_t_alpha=0.01
    )


def check(args, rank: int, world: int) -> dict:
    """PartialFC at rate 1 against the unsharded head (every rank computes the reference on the
    whole batch), for each margin head; and the classes sampled at rate 0.5."""
    from crossres_dist.heads import build_margin
    from crossres_dist.heads.partial_fc import PartialFC, initial_rows

    generator = torch.Generator().manual_seed(7)
    rows_each, dim, classes = args.batch // world, args.dim, args.classes[0]
    everyone = torch.randn(rows_each * world, dim, generator=generator) * 5
    labels = torch.randint(0, classes, (rows_each * world,), generator=generator)
    mine = slice(rank * rows_each, (rank + 1) * rows_each)
    out = {"heads": {}}
    for head in ("cosface", "arcface", "adaface"):
        # The reference: the whole batch, the whole classifier, one process.
        features = everyone.clone().requires_grad_(True)
        weight = initial_rows(3, 0, classes, dim).requires_grad_(True)
        margin = build_margin(method_settings(head))
        margin.batch_is_global = True
        cos = F.linear(F.normalize(features, dim=1), F.normalize(weight, dim=1))
        loss = F.cross_entropy(margin(cos, labels, features), labels)
        loss.backward()
        # PartialFC over the ranks.
        pfc = PartialFC(classes, dim, build_margin(method_settings(head)), 1.0, seed=3)
        local = everyone[mine].clone().requires_grad_(True)
        result = pfc(local, labels[mine])
        result["ce"].backward()
        out["heads"][head] = {
            "loss": float(result["ce"]),
            "reference_loss": float(loss),
            # The gather's backward scales the features' gradient by N for DDP's average.
            "feature_grad_diff": float((local.grad / world - features.grad[mine]).abs().max()),
            "weight_grad_diff": float(
                (pfc.weight.grad - weight.grad[pfc.start : pfc.end]).abs().max()
            ),
            "grad_scale": float(weight.grad.abs().max()),
            "statistics": [float(b) for b in pfc.margin.buffers()],
            "reference_statistics": [float(b) for b in margin.buffers()],
        }
    sampler = PartialFC(classes, dim, build_margin(method_settings("arcface")), 0.5, seed=3)
    out["sampled"] = {}
    for step in range(3):
        sampler.step = step
        out["sampled"][step] = sampler.sampled(labels).tolist()
    out["labels"] = labels.tolist()
    out["bounds"] = [sampler.start, sampler.end]
    return out


def memory(args, classes: int, rank: int, world: int) -> dict:
    """One step of the classifier alone at `classes` classes: its slice's bytes and the peak
    resident memory of the process (which includes torch itself: compare across N)."""
    from crossres_dist.heads import build_margin
    from crossres_dist.heads.partial_fc import PartialFC

    pfc = PartialFC(classes, args.dim, build_margin(method_settings("arcface")), 1.0, seed=3)
    optimizer = torch.optim.SGD(pfc.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(rank)
    rows = args.batch // world
    local = torch.randn(rows, args.dim, generator=generator).requires_grad_(True)
    labels = torch.randint(0, classes, (rows,), generator=generator)
    pfc(local, labels)["ce"].backward()
    optimizer.step()
    return {
        "classifier_bytes": pfc.weight.numel() * pfc.weight.element_size(),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def worker(args) -> None:
    from crossres_dist import distributed

    info = distributed.detect()
    device = distributed.pick_device("cpu", info.local_rank)
    distributed.init(info, device, "gloo", 600)
    rank, world = distributed.rank(), distributed.world_size()
    result = check(args, rank, world) if args.check else memory(args, args.classes[0], rank, world)
    everyone = distributed.all_gather_objects(result)
    if rank == 0:
        Path(args.out).write_text(json.dumps(everyone))
    distributed.shutdown()


def spawn(ranks: int, *worker_args: str) -> list[dict]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={ranks}",
            __file__,
            "--worker",
            "--out",
            out.name,
            *worker_args,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        return json.loads(Path(out.name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--classes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    print(
        f"PartialFC classifier, {args.dim}-d features, float32, global batch {args.batch}, "
        "arcface, rate 1, gloo on the CPU; per rank, the largest of the ranks\n"
    )
    print("| classes | ranks | classifier per rank (MiB) | vs 1 rank | peak RSS per rank (MiB) |")
    print("|---|---|---|---|---|")
    for classes in args.classes:
        alone = None
        for n in args.ranks:
            common = ["--classes", str(classes), "--dim", str(args.dim)]
            per_rank = spawn(n, *common, "--batch", str(args.batch))
            weight = max(r["classifier_bytes"] for r in per_rank)
            alone = alone or weight
            rss = max(r["peak_rss_bytes"] for r in per_rank)
            print(
                f"| {classes:,} | {n} | {weight / 2**20:,.1f} | {weight / alone:.3f} | "
                f"{rss / 2**20:,.0f} |"
            )


if __name__ == "__main__":
    main()
