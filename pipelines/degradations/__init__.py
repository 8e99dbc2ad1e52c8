"""Degradation steps, one module each, and their registry (``registry``, re-exported here): the
order a degraded view goes through them, parsing and checking ``method.degradations`` and the
ranges, the per-sample draw."""

from pipelines.degradations.base import Step
from pipelines.degradations.noise import add_noise, gaussian_field
from pipelines.degradations.registry import (
    DOWNSAMPLE,
    GRAPH_STEPS,
    ORDER,
    STEPS,
    VIEW_STEPS,
    Degradations,
    check_ranges,
    condition_label,
    draw,
    graph_types,
    in_graph,
    parse_condition,
    parse_steps,
    plan_fields,
)

__all__ = [
    "DOWNSAMPLE",
    "Degradations",
    "GRAPH_STEPS",
    "ORDER",
    "STEPS",
    "Step",
    "VIEW_STEPS",
    "add_noise",
    "check_ranges",
    "condition_label",
    "draw",
    "gaussian_field",
    "graph_types",
    "in_graph",
    "parse_condition",
    "parse_steps",
    "plan_fields",
]
