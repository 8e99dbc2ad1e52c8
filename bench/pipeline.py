"""Input-pipeline throughput: images/s making the two 224 px views of real 250 px JPEG faces.

    python bench/pipeline.py [--data ../shared/data/lfw_deepfunneled_10to19] [--batches 20] [--repeats 5]

Loaders, all on the same faces, batch 32, p = 0.1, grayscale 0.2:
- the DALI graph on CPU operators (device_id=None), as the trainer builds it: several
  single-threaded pipelines dealt whole batches in turn (one per `data.num_threads`);
- the same DALI graph as one pipeline with 2 threads (the arrangement before that change);
- the torchvision/PIL twin, a DataLoader with 2 workers;
- the research code's loader, re-created from its published source (VGGFace2Dataset and
  get_transforms): each sample read twice with cv2.imread into PIL images, the student image
  degraded with probability p before any transform (r = 2^int(3 + 5u), PIL bilinear down and
  back up), then for each view independently Resize(256), RandomGrayscale(0.2),
  RandomCrop(224), ToTensor and the mean subtraction; a DataLoader with 2 workers;
- a reference floor: DALI decoding plus the one 224 px resize the teacher view needs, nothing
  else, in the same pipeline arrangement.
Each repeat runs every loader once, in turn, so that a slow spell of the machine hits all of them;
the table gives the median over repeats.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines import Loader, TrainPlanner, ViewSettings  # noqa: E402
from pipelines.dali_pipeline import MEAN_BGR, DaliViews, deal  # noqa: E402
from pipelines.sources import load_source  # noqa: E402

RESOLUTIONS = [8, 16, 32, 64, 128]
RESEARCH = "research-code loader (re-created), 2 workers"


def subtract_mean(x: torch.Tensor) -> torch.Tensor:
    # As the research code: ToTensor scaled to 0..1, so scale back, then the BGR means.
    x *= 255.0
    for channel, mean in enumerate(MEAN_BGR):
        x[channel] -= mean
    return x


class ResearchLoaderDataset(torch.utils.data.Dataset):
    """What the research code does per sample (re-created from its source, not copied)."""

    def __init__(self, samples, p: float = 0.1):
        import torchvision.transforms as T

        self.samples, self.p = samples, p
        self.transforms = T.Compose(
            [
                T.Resize(256),
                T.RandomGrayscale(p=0.2),
                T.RandomCrop(224),
                T.ToTensor(),
                T.Lambda(subtract_mean),
            ]
        )

    def __len__(self) -> int:
        return len(self.samples)

    @staticmethod
    def _lower_resolution(image):
        from PIL import Image

        w, h = image.size
        r = 2 ** int(3 + 5 * torch.rand(1).item())
        if r >= w or r >= h:
            return image
        small = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
        return image.resize(small, Image.BILINEAR).resize((w, h), Image.BILINEAR)

    def __getitem__(self, index: int):
        import cv2
        from PIL import Image

        path, label = self.samples[index].path, self.samples[index].label
        student = Image.fromarray(cv2.imread(path))  # BGR kept as is: the Caffe convention
        teacher = Image.fromarray(cv2.imread(path))
        if torch.rand(1).item() < self.p:
            student = self._lower_resolution(student)
        return (
            self.transforms(student),
            self.transforms(teacher),
            label,
            torch.tensor(0),
            torch.tensor(self.p),
        )


class DecodeResizeFloor:
    """DALI decoding plus one 224 px region-of-interest resize per image, in the same pipeline
    arrangement as the trainer's: what no loader that makes the teacher view can beat."""

    def __init__(self, plans, batch: int, pipelines: int):
        from nvidia.dali import fn, pipeline_def, types

        @pipeline_def
        def graph(source):
            encoded = fn.external_source(source=source, batch=True, dtype=types.UINT8)
            image = fn.decoders.image(encoded, device="cpu", output_type=types.BGR)
            return fn.resize(
                image, size=[224.0, 224.0], roi_start=[13.0, 13.0], roi_end=[232.0, 232.0]
            )

        def files(stream):
            for plan in stream:
                yield [np.fromfile(p, dtype=np.uint8) for p in plan.paths]

        self.pipes = []
        for i, stream in enumerate(deal(plans, pipelines)):
            pipe = graph(files(stream), batch_size=batch, num_threads=1, device_id=None, seed=i)
            pipe.build()
            self.pipes.append(pipe)
        self.served = 0

    def __next__(self):
        (images,) = self.pipes[self.served % len(self.pipes)].run()
        self.served += 1
        return {"labels": np.zeros(len(images))}


def measure(iterator, batches: int, warmup: int = 3) -> float:
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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    samples = load_source(args.data).samples
    views = ViewSettings(256, 224, 0.2, RESOLUTIONS)
    cpu = torch.device("cpu")
    threads = args.threads

    def plans(seed):
        planner = TrainPlanner(samples, views, args.batch, 0, 1, seed, lambda n: 0.1)
        return planner.stream(0)

    def research(seed):
        torch.manual_seed(seed)
        loader = torch.utils.data.DataLoader(
            ResearchLoaderDataset(samples),
            batch_size=args.batch,
            shuffle=True,
            num_workers=threads,
            drop_last=True,
        )

        def endless():
            while True:
                yield from loader

        return endless()

    pipelines = threads
    loaders = {
        f"DALI, CPU operators, {pipelines} pipelines x 1 thread (trainer default)": lambda s: (
            Loader("dali", views, args.batch, cpu, threads, s)(plans(s))
        ),
        f"DALI, CPU operators, 1 pipeline x {threads} threads": lambda s: DaliViews(
            plans(s), views, args.batch, cpu, threads, s, pipelines=1
        ),
        f"torchvision twin, {threads} workers": lambda s: Loader(
            "torchvision", views, args.batch, cpu, threads, s
        )(plans(s)),
        RESEARCH: research,
        f"floor: DALI decode + one 224 px resize, {pipelines} pipelines": lambda s: (
            DecodeResizeFloor(plans(s), args.batch, pipelines)
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for seed in range(args.repeats):
        for name, make in loaders.items():
            rates[name].append(measure(make(seed), args.batches))
    for name, runs in rates.items():
        print(f"{name}: runs {', '.join(f'{r:.0f}' for r in runs)}", file=sys.stderr)
    base = statistics.median(rates[RESEARCH])
    print(
        f"\n{len(samples)} LFW JPEG faces (250x250), two 224 px views, batch {args.batch}, "
        f"{os.cpu_count()} cores; median of {args.repeats} rounds of {args.batches} batches\n"
    )
    print("| loader | images/s | vs research loader |\n|---|---|---|")
    for name, runs in rates.items():
        rate = statistics.median(runs)
        print(f"| {name} | {rate:.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
