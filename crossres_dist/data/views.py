"""From the configuration to the pipelines: how the views are made (``view_settings``, for
training and for evaluation alike) and the one loader settings object of a run. The
degradation steps and their ranges were checked with the rest of the configuration (the
method section, training/settings.py)."""

from __future__ import annotations

import torch

from crossres_dist.data.settings import DataConfig
from crossres_dist.models import ModelSpec
from pipelines import Loader, ViewSettings
from pipelines.degradations import Degradations, parse_steps


def view_settings(
    data_cfg: DataConfig, method_cfg, spec: ModelSpec, evaluation: bool = False
) -> ViewSettings:
    """How the run's views are made: data.* sizes and draws, the network's own input
    normalisation (its spec), and the degradation steps of method.* (`method_cfg`, the method
    section: its resolutions, steps and ranges). For `evaluation`, the same geometry and
    normalisation without the training draws (random grayscale, mirroring, the degradation
    steps): a protocol degrades its probes by its own conditions."""
    if evaluation:
        return ViewSettings(
            data_cfg.resize_shorter,
            data_cfg.crop,
            0.0,
            method_cfg.resolutions,
            channels=spec.channels,
            mean=spec.mean,
            scale=spec.scale,
        )
    return ViewSettings(
        data_cfg.resize_shorter,
        data_cfg.crop,
        data_cfg.grayscale_p,
        method_cfg.resolutions,
        data_cfg.hflip_p,
        spec.channels,
        spec.mean,
        spec.scale,
        Degradations(steps=parse_steps(method_cfg.degradations), **method_cfg.ranges_by_key()),
    )


def loader_for(
    data_cfg: DataConfig, views: ViewSettings, device: torch.device, seed: int, interpolation: str
) -> Loader:
    """One loader settings object for every stream of batches the run makes (`seed`: run.seed,
    `interpolation`: method.interpolation)."""
    return Loader(
        data_cfg.backend,
        views,
        data_cfg.micro_batch,
        device,
        data_cfg.num_threads,
        seed,
        interpolation,
    )
