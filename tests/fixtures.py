"""Helpers that more than one test module uses, imported from here rather than from another
test module."""

import torch

from pipelines import Loader, ViewSettings, eval_plans

# The degradation tests' views: 128 px shorter side, centre crop 112, never degraded at random.
DEGRADED_VIEWS = ViewSettings(128, 112, 0.0, [8])


def degraded_views(backend: str, samples, condition) -> dict:
    """One batch of up to 16 `samples` through `backend`, the student view under `condition`
    (None, a resolution, or plan fields by name: pipelines/degradations/)."""
    plans = [p for _, p in eval_plans(samples, DEGRADED_VIEWS, 16, [condition])]
    return next(Loader(backend, DEGRADED_VIEWS, 16, torch.device("cpu"), 1, 0)(iter(plans)))
