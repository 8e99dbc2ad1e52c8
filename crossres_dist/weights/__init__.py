"""Weights: the released forms and arcface backbones (``forms``), loading without running file
code (``loading``, re-exported here), ``convert`` and ``export``."""

from crossres_dist.weights.loading import (
    WeightsError,
    assign,
    lineage_of,
    load_into,
    read_state,
)

__all__ = [
    "WeightsError",
    "assign",
    "lineage_of",
    "load_into",
    "read_state",
]
