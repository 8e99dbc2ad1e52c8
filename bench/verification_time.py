"""How long validation on a 12,000-image .bin set at six resolutions takes, on 1 and 2 ranks.

    python bench/verification_time.py [--ranks 1 2] [--pairs 6000] [--work DIR]

Makes (once, under --work) an insightface .bin of LFW-style pairs of the LFW 2-9 people in
../shared at 112 x 112 (6,000 pairs: the size of lfw.bin, agedb_30.bin, calfw.bin), then launches
``torchrun --nproc_per_node=N`` workers that score it as training's validation does
(``VerificationSuite`` with ``embed_mirrored``: every rank embeds its share of the images and
their mirror images, rank 0 gathers and scores ten folds), with DALI, at full resolution and
8, 12, 16, 24, 32 px (the probes only at those). Each network's time is the median of
--repeats, with the time rank 0 spends scoring alone. The demo's network (SE-ResNet [1,1,1,1]
width 16 at 56 px) runs the whole set; iResNet-50 at 112 px (configs/arcface_r50.yaml) runs
--r50-pairs pairs and its time is scaled to the whole set by image count, and said so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
UNSEEN = REPO.parent / "shared" / "data" / "lfw_deepfunneled_2to9"
NETWORKS = {
    "demo SE-ResNet (56 px)": ("configs/demo.yaml", 0),
    "iResNet-50 (112 px)": ("configs/arcface_r50.yaml", 1),
}
RESOLUTIONS = [8, 12, 16, 24, 32]


def make_set(work: Path, pairs: int) -> Path:
    from crossres_dist.data.pack import centre_square
    from crossres_dist.verification import write_bin
    from crossres_dist.verification.pairs import lfw_style_pairs

    path = work / f"lfw_style_{pairs}.bin"
    if not path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        made = lfw_style_pairs(UNSEEN, pairs, seed=0)
        cache: dict[str, bytes] = {}
        images = []
        for a, b, _ in made:
            for p in (a, b):
                if p not in cache:
                    cache[p] = centre_square(Path(p).read_bytes(), 112)
                images.append(cache[p])
        write_bin(path, images, [s for _, _, s in made])
    return path


def worker(args) -> None:
    import torch

    from crossres_dist import distributed
    from crossres_dist.config import load_config
    from crossres_dist.data.views import view_settings
    from crossres_dist.models import build_model, spec_from_config
    from crossres_dist.precision import autocast_for, resolve_precision
    from crossres_dist.verification import VerificationSuite, embed_mirrored, read_bin
    from pipelines import Loader

    info = distributed.detect()
    device = distributed.pick_device("auto", info.local_rank)
    distributed.init(info, device, "auto", 3600)
    cfg = load_config(args.config, [], purpose="evaluation")
    spec = spec_from_config(cfg.model, 100, input_size=cfg.data.crop)
    torch.manual_seed(0)
    model = build_model(spec).to(device).eval()
    views = view_settings(cfg.data, cfg.method, spec, evaluation=True)
    loader = Loader("dali", views, args.batch, device, cfg.data.num_threads, 0)
    autocast = autocast_for(resolve_precision("auto", device), device)
    vset = read_bin(args.bin)
    if args.limit:
        vset.images, vset.issame = vset.images[: 2 * args.limit], vset.issame[: args.limit]
    suite = VerificationSuite([vset], RESOLUTIONS)
    embedding = []

    def embed(samples, condition):
        t0 = time.perf_counter()
        rows = embed_mirrored(model, loader, samples, condition, autocast)
        embedding.append(time.perf_counter() - t0)
        return rows

    times, scored = [], []
    for _ in range(args.repeats):
        distributed.broadcast_object(None)  # start together
        embedding.clear()
        t0 = time.perf_counter()
        metrics = suite(embed)
        times.append(time.perf_counter() - t0)
        scored.append(times[-1] - sum(embedding))  # rank 0's ten folds, the others waiting
    if info.rank == 0:
        images = sum(len(suite.samples(vset, r)) for r in suite.resolutions)
        print(json.dumps({"seconds": times, "scoring": scored, "images": images,
                          "pairs": vset.pairs, "accuracy": metrics["val/verification/accuracy"]}))  # fmt: skip
    distributed.shutdown()


def launch(args, config: str, ranks: int, limit: int) -> dict:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
        __file__, "--worker", "--config", config, "--bin", str(args.bin),
        "--repeats", str(args.repeats), "--limit", str(limit), "--batch", str(args.batch),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // ranks))}
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pairs", type=int, default=6000)
    parser.add_argument("--r50-pairs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-verification")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--bin", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    args.bin = make_set(args.work, args.pairs)
    full_images = args.pairs * 2 + args.pairs * len(RESOLUTIONS)
    rows = []
    for name, (config, scaled) in NETWORKS.items():
        limit = args.r50_pairs if scaled else 0
        for ranks in args.ranks:
            got = launch(args, config, ranks, limit)
            median = statistics.median(got["seconds"])
            factor = full_images / got["images"]
            whole = median * factor
            rows.append(
                f"| {name} | {ranks} | {got['pairs']} | {got['images']:,} | {median:.1f} | "
                f"{whole:,.0f}{' (scaled)' if scaled else ''} | "
                f"{got['images'] / median:.0f} | {statistics.median(got['scoring']):.3f} |"
            )
    print(
        f"One {args.pairs:,}-pair .bin set ({2 * args.pairs:,} images), validated at full "
        f"resolution and {', '.join(map(str, RESOLUTIONS))} px (probes only at those: "
        f"{full_images:,} images, each with its mirror image), DALI on the CPU, median of "
        f"{args.repeats}:\n"
    )
    print("| network | ranks | pairs run | images run | seconds | seconds for the whole set "
          "| images/s | rank 0 scoring alone (s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
