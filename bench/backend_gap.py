"""How far DALI's views and the torchvision twin's are apart, and what that does to features.

    python bench/backend_gap.py --checkpoint runs/demo/student/checkpoints/best.pt \\
        [--data ../shared/data/lfw_deepfunneled_10to19] [--images 96]

For every evaluation resolution: the mean and largest absolute pixel difference of the two
backends' probe views (0..255 scale), and the cosine between the features a checkpoint gives the
same image through each (median and smallest over the images). Prints a markdown table; `make
bench-backend-gap` publishes it as results/backend-gap/. The views are the checkpoint's config's
(its input side and crop), so the figure is the one evaluation sees.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from crossres_dist.eval.features import load_model  # noqa: E402
from pipelines import Loader, ViewSettings, eval_plans  # noqa: E402
from pipelines.degradations import condition_label  # noqa: E402
from pipelines.sources import load_source  # noqa: E402


def views_of(backend: str, samples, views, resolution) -> torch.Tensor:
    plans = [p for _, p in eval_plans(samples, views, 16, [resolution])]
    loader = Loader(backend, views, 16, torch.device("cpu"), 1, 0)
    return torch.cat([b["student_view"] for b, _ in zip(loader(iter(plans)), plans)])[
        : len(samples)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", default=str(REPO.parent / "shared/data/lfw_deepfunneled_10to19"))
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--resize-shorter", type=int, default=64)
    parser.add_argument("--crop", type=int, default=56)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.checkpoint, torch.device("cpu"))
    spec = model.spec
    views = ViewSettings(
        args.resize_shorter,
        args.crop,
        0.0,
        [8],
        channels=spec.channels,
        mean=spec.mean,
        scale=spec.scale,
    )
    samples = load_source(args.data).samples
    samples = samples[:: max(1, len(samples) // args.images)][: args.images]
    shown = os.path.relpath(Path(args.data).resolve(), REPO)
    print(
        f"{len(samples)} images of {shown} at {args.resize_shorter}/{args.crop} px (the "
        f"demo's views); features of {Path(args.checkpoint).parent.parent.name}'s "
        "`best.pt`; the probe down-sampled to r px and back, as evaluation does\n"
    )
    print("| resolution | mean pixel difference | largest | feature cosine, median | smallest |")
    print("|---|---|---|---|---|")
    for resolution in (8, 12, 16, 24, 32, None):
        dali = views_of("dali", samples, views, resolution)
        twin = views_of("torchvision", samples, views, resolution)
        diff = (dali - twin).abs()
        with torch.no_grad():
            a, _ = model(dali)
            b, _ = model(twin)
        cos = F.cosine_similarity(a.float(), b.float())
        label = condition_label(resolution)
        print(
            f"| {label if label == 'full' else label + ' px'} | {diff.mean():.2f} | "
            f"{diff.max():.0f} | {cos.median():.4f} | {cos.min():.4f} |"
        )


if __name__ == "__main__":
    main()
