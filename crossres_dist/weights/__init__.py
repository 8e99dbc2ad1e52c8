"""Weights: the released forms and arcface backbones (``forms``), dlib's networks
(``dlib_dat``), loading without running file code (``loading``, re-exported here), ``convert``
and ``export``."""

from crossres_dist.weights.loading import (
    WeightsError,
    assign,
    lineage_of,
    load_into,
    preflight,
    read_state,
    resolve_path,
)

__all__ = [
    "WeightsError",
    "assign",
    "lineage_of",
    "load_into",
    "preflight",
    "read_state",
    "resolve_path",
]
