"""Degradation steps, one module each, and their registry (``registry``, re-exported here): the
order a degraded view goes through them, parsing and checking ``method.degradations`` and the
ranges, the per-sample draw."""

from pipelines.degradations.base import Step
from pipelines.degradations.noise import add_noise, gaussian_field
from pipelines.degradations.registry import (
    DOWNSAMPLE,
    STEPS,
    Degradations,
    check_ranges,
    condition_label,
    describe,
    draw,
    graph_steps,
    graph_types,
    in_graph,
    listing,
    order,
    parse_condition,
    parse_steps,
    plan_fields,
    register,
    steps_table,
    unregister,
    view_steps,
)

__all__ = [
    "DOWNSAMPLE",
    "Degradations",
    "STEPS",
    "Step",
    "add_noise",
    "check_ranges",
    "condition_label",
    "describe",
    "draw",
    "gaussian_field",
    "graph_steps",
    "graph_types",
    "in_graph",
    "listing",
    "order",
    "parse_condition",
    "parse_steps",
    "plan_fields",
    "register",
    "steps_table",
    "unregister",
    "view_steps",
]
