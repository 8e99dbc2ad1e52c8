"""Input-pipeline throughput: images/s making the two 224 px views of real 250 px JPEG faces.

    python bench/pipeline.py [--data ../shared/data/lfw_deepfunneled_10to19] [--batches 20] [--repeats 3]

(a) the DALI pipeline on CPU operators (device_id=None), 2 threads;
(b) the torchvision/PIL twin, DataLoader with 2 workers;
(c) a re-creation of the research code's loader: each sample read twice with cv2 and turned into
    PIL images, independent torchvision transforms for the two views (resize 256, random
    grayscale 0.2, random crop 224, PIL bilinear down/up-sampling with p = 0.1), 2 workers.
All make batches of 32 with p = 0.1 and r in {8, 16, 32, 64, 128}. Medians over repeats.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines import TrainPlanner, ViewSettings, build_views  # noqa: E402
from pipelines.dali_pipeline import MEAN_BGR  # noqa: E402
from pipelines.sources import load_source  # noqa: E402

RESOLUTIONS = [8, 16, 32, 64, 128]


class ResearchLoaderDataset(torch.utils.data.Dataset):
    """What the research code does per sample (a faithful re-creation, not its code)."""

    def __init__(self, samples, p: float = 0.1):
        import torchvision.transforms as T

        self.samples, self.p = samples, p
        self.transform = T.Compose([T.Resize(256), T.RandomGrayscale(0.2), T.RandomCrop(224)])
        self.mean = np.array(MEAN_BGR, np.float32)

    def _to_tensor(self, image) -> torch.Tensor:
        array = np.asarray(image, np.float32)[:, :, ::-1] - self.mean
        return torch.from_numpy(array.transpose(2, 0, 1).copy())

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        import cv2
        from PIL import Image

        path = self.samples[index].path
        teacher = Image.fromarray(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB))
        student = Image.fromarray(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB))
        teacher, student = self.transform(teacher), self.transform(student)
        if random.random() < self.p:
            r = random.choice(RESOLUTIONS)
            w, h = student.size
            if r < min(w, h):
                small = (max(1, round(w * r / min(w, h))), max(1, round(h * r / min(w, h))))
                student = student.resize(small, Image.BILINEAR).resize((w, h), Image.BILINEAR)
        return self._to_tensor(teacher), self._to_tensor(student), self.samples[index].label


def measure(make_iterator, seed: int, batches: int, warmup: int = 3) -> float:
    iterator = make_iterator(seed)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    images = 0
    for _ in range(batches):
        batch = next(iterator)
        images += len(batch["labels"] if isinstance(batch, dict) else batch[2])
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", default=str(REPO.parent / "shared" / "data" / "lfw_deepfunneled_10to19")
    )
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    samples = load_source(args.data).samples
    views = ViewSettings(256, 224, 0.2, RESOLUTIONS)
    cpu = torch.device("cpu")

    def planner_stream(seed):
        planner = TrainPlanner(samples, views, args.batch, 0, 1, seed, lambda n: 0.1)
        return planner.stream(0)

    def research(seed):
        torch.manual_seed(seed)
        loader = torch.utils.data.DataLoader(
            ResearchLoaderDataset(samples),
            batch_size=args.batch,
            shuffle=True,
            num_workers=2,
            drop_last=True,
            persistent_workers=False,
        )

        def endless():
            while True:
                yield from loader

        return endless()

    loaders = {
        "DALI, CPU operators, 2 threads": lambda s: build_views(
            "dali", planner_stream(s), views, args.batch, cpu, 2, s
        ),
        "torchvision twin, 2 workers": lambda s: build_views(
            "torchvision", planner_stream(s), views, args.batch, cpu, 2, s
        ),
        "research-code loader (re-created), 2 workers": research,
    }
    results = {}
    for name, make in loaders.items():
        rates = [measure(make, seed, args.batches) for seed in range(args.repeats)]
        results[name] = statistics.median(rates)
        print(
            f"{name}: {results[name]:.0f} images/s (runs: {', '.join(f'{r:.0f}' for r in rates)})",
            file=sys.stderr,
        )
    base = results["research-code loader (re-created), 2 workers"]
    print(
        f"\n{len(samples)} LFW JPEG faces (250x250), two 224 px views, batch {args.batch}, "
        f"{os.cpu_count()} cores; median of {args.repeats} runs of {args.batches} batches\n"
    )
    print("| loader | images/s | vs research loader |\n|---|---|---|")
    for name, rate in results.items():
        print(f"| {name} | {rate:.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
