"""Batch plans: which images each rank reads and how each one's views are drawn.

Every random choice of the data path (the epoch's global shuffle, the crop window, the grayscale
draw, whether a student view is degraded and to which resolution) is a pure function of the seed,
the epoch and the image's position in it. Both backends (DALI and the torchvision twin) execute the same plans,
every rank agrees on the shuffle without communicating, the curriculum's p reaches the pipeline
without rebuilding it, and a resumed run only has to remember how many batches it consumed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from pipelines.degradations import STEPS, Degradations, in_graph, plan_fields
from pipelines.degradations import draw as draw_steps
from pipelines.sources import Sample
from pipelines.streams import stream, uniform


@dataclass
class BatchPlan:
    paths: list[str]
    labels: np.ndarray  # int64
    crop_x: np.ndarray  # float32 in [0, 1]: left edge of the crop window, relative
    crop_y: np.ndarray
    gray: np.ndarray  # bool
    valid: np.ndarray  # bool; False for padding that repeats an earlier sample
    flip: np.ndarray | None = None  # bool; both views mirrored left-right (None: none are)
    # int64: each image's index in the planner's samples (-1: not a training plan's).
    sample: np.ndarray | None = None
    # Every degradation step's fields by name (pipelines/degradations/: resolution, blur_sigma,
    # jpeg_quality, ...; 0 = not applied); missing ones are zeros. Read as attributes too.
    steps: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.paths)
        if self.flip is None:
            self.flip = np.zeros(n, bool)
        if self.sample is None:
            self.sample = np.full(n, -1, np.int64)
        for name, dtype in plan_fields().items():
            if name not in self.steps:
                self.steps[name] = np.zeros(n, dtype)

    def __getattr__(self, name: str) -> np.ndarray:
        # Only reached for names that are not dataclass fields: a step's field, by name.
        steps = self.__dict__.get("steps")
        if steps is not None and name in steps:
            return steps[name]
        raise AttributeError(f"BatchPlan has no field {name!r}")

    @property
    def degrade(self) -> np.ndarray:
        """The samples whose student view the image graph degrades (any of its steps)."""
        return in_graph(self.steps)

    def __len__(self) -> int:
        return len(self.paths)


# Caffe / VGGFace2 convention: BGR, 0..255, minus the per-channel mean, no scaling.
MEAN_BGR = (91.4953, 103.8827, 131.0912)


@dataclass
class ViewSettings:
    resize_shorter: int
    crop: int
    grayscale_p: float
    resolutions: list[int]
    # Probability that both views of a training image are mirrored left-right (0: the paper).
    hflip_p: float = 0.0
    # The network's input normalisation (from its ModelSpec): channel order, the mean subtracted
    # on the 0..255 scale (in that order), then the scale multiplied.
    channels: str = "BGR"
    mean: tuple[float, ...] = MEAN_BGR
    scale: float = 1.0
    # The steps a degraded view goes through (their probabilities and ranges); None: downsample
    # alone, to `resolutions`.
    degradations: Degradations | None = None

    def __post_init__(self) -> None:
        if self.degradations is None:
            self.degradations = Degradations(resolutions=tuple(self.resolutions))


class TrainPlanner:
    """Global micro-batch k covers ``world * micro_batch`` images of one epoch's permutation;
    rank r takes its slice. An epoch is a whole number of optimizer steps (global batches): its
    last step wraps around to the start of the permutation (those repeats are marked invalid).
    So which images an optimizer step sees does not depend on the number of ranks, and a run
    resumed on other ranks (an elastic job that lost or regained a node) goes on with the
    run's own order."""

    def __init__(
        self,
        samples: list[Sample],
        views: ViewSettings,
        micro_batch: int,
        rank: int,
        world: int,
        seed: int,
        p_of_images: Callable[[int], float],
        accumulation: int = 1,
    ) -> None:
        if not samples:
            raise ValueError("no training samples")
        self.samples = samples
        self.views = views
        self.micro_batch = micro_batch
        self.rank, self.world = rank, world
        self.seed = seed
        self.p_of_images = p_of_images
        self.accumulation = accumulation
        self.global_micro = micro_batch * world
        steps_per_epoch = math.ceil(len(samples) / (self.global_micro * accumulation))
        self.batches_per_epoch = steps_per_epoch * accumulation
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None
        # Files found undecodable during the run: each one's place in the order is taken by the
        # next readable file of the epoch's permutation, so every other position is unchanged.
        self.excluded: set[str] = set()

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, 1, epoch]).permutation(len(self.samples))
            self._perm_epoch = epoch
        return self._perm

    def p_at(self, batch_index: int) -> float:
        """p is fixed per optimizer step, from the images all ranks saw before it."""
        step = batch_index // self.accumulation
        return float(self.p_of_images(step * self.global_micro * self.accumulation))

    def plan(self, batch_index: int) -> BatchPlan:
        epoch, k = divmod(batch_index, self.batches_per_epoch)
        perm = self.permutation(epoch)
        n = len(perm)
        positions = np.arange(k * self.global_micro, (k + 1) * self.global_micro)
        indices = perm[positions % n]
        mine = slice(self.rank * self.micro_batch, (self.rank + 1) * self.micro_batch)
        chosen, where = indices[mine], positions[mine]
        if self.excluded:
            chosen = np.array([self._readable(perm, int(p)) for p in where])

        # Each image's draws depend on (seed, epoch, its position in the epoch) only: the same
        # whatever the number of ranks or the micro-batch size.
        def draws(name: str) -> np.ndarray:
            return uniform(self.seed, epoch, where, stream(name))

        degraded = draws("degraded") < self.p_at(batch_index)
        # Each step's own fields; a resolution not below the shorter side leaves the image
        # unchanged (method.md).
        fields = draw_steps(self.views.degradations, degraded, draws, self.views.resize_shorter)
        return BatchPlan(
            paths=[self.samples[i].path for i in chosen],
            labels=np.array([self.samples[i].label for i in chosen], np.int64),
            crop_x=draws("crop_x").astype(np.float32),
            crop_y=draws("crop_y").astype(np.float32),
            gray=draws("grayscale") < self.views.grayscale_p,
            valid=where < n,
            flip=draws("hflip") < self.views.hflip_p,
            sample=np.asarray(chosen, np.int64),
            steps=fields,
        )

    def _readable(self, perm: np.ndarray, position: int) -> int:
        n = len(perm)
        for k in range(n):
            index = perm[(position + k) % n]
            if self.samples[index].path not in self.excluded:
                return index
        raise ValueError("every training file is excluded")

    def stream(self, start: int = 0) -> Iterator[BatchPlan]:
        k = start
        while True:
            yield self.plan(k)
            k += 1


def eval_plans(
    samples: list[Sample],
    views: ViewSettings,
    batch: int,
    conditions: list[int | dict | None],
    rank: int = 0,
    world: int = 1,
) -> list[tuple[int | dict | None, BatchPlan]]:
    """Centre crops in a fixed order, for each condition: None (undegraded), a resolution in
    pixels, or a dict of step fields (``{"jpeg_quality": 20}``, pipelines/degradations/).
    With several ranks each takes a strided shard padded to equal length; padding is marked
    invalid so that every image is counted exactly once."""
    n = len(samples)
    per_rank = math.ceil(n / world)
    positions = np.arange(rank, per_rank * world, world)
    valid = positions < n
    positions = np.where(valid, positions, positions % max(n, 1))
    plans = []
    for condition in conditions:
        fields = condition if isinstance(condition, dict) else {}
        if isinstance(condition, int) and condition < views.resize_shorter:
            fields = {"resolution": condition}
        for start in range(0, len(positions), batch):
            chosen = positions[start : start + batch]
            m = len(chosen)
            step_fields = {
                name: np.full(m, fields.get(name, 0), dtype)
                for name, dtype in plan_fields().items()
            }
            for step in STEPS.values():
                step.for_probes(step_fields, chosen)
            plans.append(
                (
                    condition,
                    BatchPlan(
                        paths=[samples[i].path for i in chosen],
                        labels=np.array([samples[i].label for i in chosen], np.int64),
                        crop_x=np.full(m, 0.5, np.float32),
                        crop_y=np.full(m, 0.5, np.float32),
                        gray=np.zeros(m, bool),
                        valid=valid[start : start + batch],
                        steps=step_fields,
                    ),
                )
            )
    return plans
