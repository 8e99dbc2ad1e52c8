"""Degradations of the student view, as registered steps: one module each in this package.

A degraded view (probability p, the curriculum's) goes through the configured steps, each
applied with its own probability, in the registry's order, as a camera would produce them:
``gamma`` (illumination), ``downsample`` (to r px on the shorter side and back up),
``gaussian_blur``, ``jpeg``, then ``noise``. The steps in the image graph act on the whole
resized image before the crop (method.md), in DALI and in the twin; a step on the finished view
(``noise``) is the same torch code for both backends. Every step draws its own named plan field
from streams of its own, so each draw is a pure function of (seed, epoch, position): both
backends read the same fields by name, and resume and world-size changes stay exact. A field of
0 means the step is not applied to that sample.

A new step is a module here (its fields, streams, draw, twin and DALI operations, label, range
and config key: see base.GraphStep and base.ViewStep) and one line in STEPS below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.degradations import downsample, gamma, gaussian_blur, jpeg, noise
from pipelines.degradations.base import Step

# The registry, in the order a degraded view goes through the steps.
STEPS: dict[str, Step] = {
    step.name: step
    for step in (gamma.STEP, downsample.STEP, gaussian_blur.STEP, jpeg.STEP, noise.STEP)
}
ORDER = tuple(STEPS)
GRAPH_STEPS = tuple(step for step in STEPS.values() if step.in_graph)
VIEW_STEPS = tuple(step for step in STEPS.values() if not step.in_graph)
DOWNSAMPLE = STEPS["downsample"]  # the method's own step: DALI's crop-window shortcut is its


def plan_fields() -> dict[str, type]:
    """Every plan field the steps draw, with its NumPy dtype."""
    return {name: types[0] for step in STEPS.values() for name, types in step.fields.items()}


def graph_types() -> dict[str, str]:
    """Every plan field the steps draw, with its DALI type in the image graph."""
    return {name: types[1] for step in STEPS.values() for name, types in step.fields.items()}


@dataclass(frozen=True, init=False)
class Degradations:
    """Which steps a degraded view goes through, with what probability, and their ranges (by
    range key: ``resolutions``, ``ranges.gaussian_blur``, ``ranges.gamma`` ...; a step's default where
    none is given)."""

    steps: tuple[tuple[str, float], ...]
    ranges: tuple[tuple[str, tuple], ...]

    def __init__(self, steps=(("downsample", 1.0),), **ranges) -> None:
        keys = {step.range_key: step for step in STEPS.values()}
        for key in ranges:
            if key not in keys:
                raise ValueError(f"unknown degradation range {key!r} (known: {', '.join(keys)})")
        merged = {key: tuple(ranges.get(key, step.default)) for key, step in keys.items()}
        object.__setattr__(self, "steps", tuple(steps))
        object.__setattr__(self, "ranges", tuple(merged.items()))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.steps)

    def range_of(self, step: Step) -> tuple:
        return dict(self.ranges)[step.range_key]


def parse_steps(
    specs: list[str], key: str = "method.degradations"
) -> tuple[tuple[str, float], ...]:
    """``["downsample", "gaussian_blur:0.5", "jpeg:0.3"]`` -> ordered (name, probability)."""
    steps = {}
    for spec in specs:
        name, _, prob = spec.partition(":")
        if name not in STEPS:
            raise ValueError(f"{key}: unknown step {name!r} (known: {', '.join(ORDER)})")
        try:
            p = float(prob) if prob else 1.0
        except ValueError:
            raise ValueError(
                f"{key}: {spec!r}: the probability after ':' is not a number"
            ) from None
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{key}: {spec!r}: {p} is not a probability in [0, 1]")
        steps[name] = p
    return tuple((name, steps[name]) for name in ORDER if name in steps)


def check_ranges(ranges: dict[str, list], section: str = "method") -> None:
    """Every step's configured range (by range key) within what the step allows; one line
    naming the key otherwise."""
    keys = {step.range_key: step for step in STEPS.values()}
    for key, values in ranges.items():
        if key not in keys:
            known = ", ".join(k.split(".", 1)[1] for k in keys if k.startswith("ranges."))
            raise ValueError(f"{section}.{key}: no registered step has this range (known: {known})")
        why = keys[key].check_range(values)
        if why:
            raise ValueError(f"{section}.{key}: {why}")


def draw(
    degradations: Degradations,
    degraded: np.ndarray,
    uniform,
    shorter: int,
) -> dict[str, np.ndarray]:
    """Every step's fields for a plan's samples. `degraded`: the samples drawn for degradation;
    `uniform(stream)`: the samples' draws from a stream; `shorter`: the resized shorter side."""
    n = len(degraded)
    fields = {name: np.zeros(n, dtype) for name, dtype in plan_fields().items()}
    for name, probability in degradations.steps:
        step = STEPS[name]
        whether, value = step.streams
        applied = degraded.copy()
        if probability < 1.0:
            applied &= uniform(whether) < probability
        fields.update(
            step.draw(uniform(value), applied, degradations.range_of(step), shorter, uniform)
        )
    return fields


def in_graph(fields: dict[str, np.ndarray]) -> np.ndarray:
    """The samples the image graph must degrade (any of its steps applies)."""
    return np.logical_or.reduce([fields[step.field] > 0 for step in GRAPH_STEPS])


# ------------------------------------------------------------------ evaluation conditions
def parse_condition(text: str) -> dict[str, float]:
    """``jpeg:20`` / ``gaussian_blur:2`` / ``noise:8`` / ``downsample:16`` / ``gamma:2`` -> plan
    fields, for degrading evaluation probes the way training does."""
    name, _, value = text.partition(":")
    if name not in STEPS or not value:
        raise ValueError(
            f"--degrade {text!r}: expected STEP:VALUE with STEP one of {', '.join(ORDER)} "
            "(jpeg:20, gaussian_blur:2, noise:8, downsample:16)"
        )
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"--degrade {text!r}: {value!r} is not a number") from None
    return STEPS[name].condition(number)


def condition_label(condition: dict[str, float] | int | None) -> str:
    """How a condition is named in reports: 'full', '8' (pixels), 'jpeg20', 'blur2', ..."""
    if condition is None:
        return "full"
    if isinstance(condition, int):
        return str(condition)
    parts = [
        f"{step.label}{condition[step.field]:g}"
        for step in STEPS.values()
        if condition.get(step.field, 0)
    ]
    return "+".join(parts) or "full"
