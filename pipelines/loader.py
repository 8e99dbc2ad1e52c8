"""The loader: one settings object from which every stream of batches is made, on DALI or the
twin (``choose_backend``), with the steps that act on finished views and the retry that names a
file that fails to decode (``ResilientViews``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import torch

from pipelines.dali_pipeline import DALI_AVAILABLE, DaliViews
from pipelines.degradations import view_steps
from pipelines.plans import BatchPlan, TrainPlanner, ViewSettings
from pipelines.sources import DataError
from pipelines.torchvision_twin import TwinViews

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loader:
    """How batches are made, decided once from the config: the backend, the views, the batch
    size, the device, the input threads, the seed and the interpolation. Calling it on plans
    gives their batches (build_views)."""

    backend: str
    views: ViewSettings
    batch_size: int
    device: torch.device
    num_threads: int
    seed: int
    interpolation: str = "linear"

    def __call__(self, plans: Iterable[BatchPlan]) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of {teacher_view, student_view, labels, resolution, ...} for the plans. The
        image steps run in the backend's graph; the steps on the finished student view (noise)
        here: the same code (and numbers) for both backends."""
        views = self.views
        if choose_backend(self.backend) == "dali":
            batches = DaliViews(
                plans,
                views,
                self.batch_size,
                self.device,
                self.num_threads,
                self.seed,
                self.interpolation,
            )
        else:
            batches = TwinViews(
                plans,
                views,
                self.device,
                num_workers=self.num_threads,
                interpolation=self.interpolation,
            )
        return _on_view_steps(batches, views)

    def reseeded(self, seed: int) -> Loader:
        return replace(self, seed=seed)


def choose_backend(requested: str) -> str:
    if requested == "dali" and not DALI_AVAILABLE:
        raise DataError(
            "data.backend=dali but nvidia-dali is not installed (pip install nvidia-dali-cuda130)"
        )
    if requested == "auto":
        if DALI_AVAILABLE:
            return "dali"
        log.warning("nvidia-dali is not installed: using the torchvision twin of the pipeline")
        return "torchvision"
    return requested


def _on_view_steps(batches, views: ViewSettings):
    """The steps that act on the finished view (noise), for the samples whose plan field says
    so (host tensors: no device synchronisation for the batches they skip)."""
    for batch in batches:
        for step in view_steps():
            if (batch[step.field] > 0).any():
                batch["student_view"] = step.on_view(batch, views.mean, views.scale)
        yield batch


class ResilientViews:
    """Training batches of a planner from `start` on that survive files the decoder cannot read.

    When a batch fails, the files of that plan (and, if none of them is at fault, of the plans
    the pipeline may have prefetched) are checked one by one with `find_bad`; the bad ones join
    ``planner.excluded`` (reported through `on_excluded`), and the views are rebuilt at the same
    plan position. The batches that follow are exactly those of a run that had excluded the
    files from the start, whichever rank met them and whenever. An error that no file explains
    is raised as it is.
    """

    def __init__(
        self,
        planner: TrainPlanner,
        start: int,
        build: Callable[[Iterator[BatchPlan]], Iterator[dict[str, torch.Tensor]]],
        find_bad: Callable[[list[str]], dict[str, str]],
        on_excluded: Callable[[dict[str, str], int], None],
        lookahead: int = 8,
    ) -> None:
        self.planner, self.position = planner, start
        self.build, self.find_bad, self.on_excluded = build, find_bad, on_excluded
        self.lookahead = lookahead
        self.views = build(planner.stream(start))
        self.excluded_when_built = len(planner.excluded)

    def __iter__(self):
        return self

    def _rebuild(self) -> None:
        self.views = None  # drop the old pipeline before building its successor
        self.views = self.build(self.planner.stream(self.position))
        self.excluded_when_built = len(self.planner.excluded)

    def __next__(self) -> dict[str, torch.Tensor]:
        while True:
            if len(self.planner.excluded) != self.excluded_when_built:
                # Another reader of the same files (BatchNorm re-estimation) left one out since
                # this pipeline was built: the plans it has prefetched may still hold it.
                self._rebuild()
            try:
                batch = next(self.views)
            except StopIteration:
                raise
            except Exception:
                bad = self._locate()
                if not bad:
                    raise
                self.planner.excluded.update(bad)
                self.on_excluded(bad, self.position)
                self._rebuild()
                continue
            # Which samples, in which (grey, mirrored) view: the plan the pipeline served, for
            # readers keyed by sample (the teacher feature cache).
            plan = self.planner.plan(self.position)
            batch["sample"] = torch.from_numpy(plan.sample)
            batch["gray"] = torch.from_numpy(plan.gray)
            batch["flip"] = torch.from_numpy(plan.flip)
            self.position += 1
            return batch

    def _locate(self) -> dict[str, str]:
        for k in range(self.position, self.position + self.lookahead):
            paths = [p for p in dict.fromkeys(self.planner.plan(k).paths)]
            bad = self.find_bad([p for p in paths if p not in self.planner.excluded])
            if bad:
                return bad
        return {}
