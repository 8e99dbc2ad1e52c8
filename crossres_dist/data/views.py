"""From the configuration to the pipelines: how the views are made (``view_settings``, for
training and for evaluation alike), the degradation ranges as configured, checked against the
registry, and the one loader settings object of a run."""

from __future__ import annotations

import logging

import torch

from crossres_dist.errors import ConfigError
from pipelines import Loader, ViewSettings
from pipelines.degradations import STEPS, Degradations, check_ranges, parse_steps

log = logging.getLogger(__name__)


def view_settings(cfg, spec, evaluation: bool = False) -> ViewSettings:
    """How the run's views are made: data.* sizes and draws, the network's own input
    normalisation (its spec), and the degradation steps of method.*. For `evaluation`, the same
    geometry and normalisation without the training draws (random grayscale, mirroring, the
    degradation steps): a protocol degrades its probes by its own conditions."""
    if evaluation:
        return ViewSettings(
            cfg.data.resize_shorter,
            cfg.data.crop,
            0.0,
            cfg.method.resolutions,
            channels=spec.channels,
            mean=spec.mean,
            scale=spec.scale,
        )
    return ViewSettings(
        cfg.data.resize_shorter,
        cfg.data.crop,
        cfg.data.grayscale_p,
        cfg.method.resolutions,
        cfg.data.hflip_p,
        spec.channels,
        spec.mean,
        spec.scale,
        Degradations(steps=parse_steps(cfg.method.degradations), **configured_ranges(cfg.method)),
    )


def configured_ranges(method_cfg) -> dict[str, list]:
    """Every registered step's range as configured, by its range key: method.resolutions for
    downsample (the method's own list), an entry of method.ranges for every other step."""
    ranges = {f"ranges.{name}": values for name, values in method_cfg.ranges.items()}
    return {"resolutions": method_cfg.resolutions, **ranges}


def loader_for(cfg, views: ViewSettings, device: torch.device) -> Loader:
    """One loader settings object for every stream of batches the run makes."""
    return Loader(
        cfg.data.backend,
        views,
        cfg.data.micro_batch,
        device,
        cfg.data.num_threads,
        cfg.run.seed,
        cfg.method.interpolation,
    )


def check_degradations(cfg) -> None:
    """method.degradations names steps the pipelines know, with probabilities in [0, 1], and
    every step's range is one it allows (method.ranges names registered steps only): checked
    here, where the pipelines' registry is known (the config module does not import them),
    before any process group or file is touched."""
    try:
        parse_steps(cfg.method.degradations)
        check_ranges(configured_ranges(cfg.method))
    except ValueError as err:
        raise ConfigError(f"{cfg.source}: {err}") from None
