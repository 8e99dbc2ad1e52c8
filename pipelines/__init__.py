"""Data pipelines: DALI on GPU or CPU, and a torchvision twin with the same semantics."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import torch

from .dali_pipeline import DALI_AVAILABLE, DaliViews
from .plans import BatchPlan, TrainPlanner, ViewSettings, eval_plans
from .sources import DataError, Dataset, Sample, load_splits
from .twin import TwinViews

__all__ = [
    "DALI_AVAILABLE",
    "BatchPlan",
    "DataError",
    "Dataset",
    "Sample",
    "TrainPlanner",
    "ViewSettings",
    "build_views",
    "choose_backend",
    "eval_plans",
    "load_splits",
]

log = logging.getLogger(__name__)


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


def build_views(
    backend: str,
    plans: Iterable[BatchPlan],
    views: ViewSettings,
    batch_size: int,
    device: torch.device,
    num_threads: int,
    seed: int,
    interpolation: str = "linear",
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of {teacher_view, student_view, labels, resolution} for the given plans."""
    if choose_backend(backend) == "dali":
        return DaliViews(plans, views, batch_size, device, num_threads, seed, interpolation)
    return TwinViews(plans, views, device, num_workers=num_threads, interpolation=interpolation)
