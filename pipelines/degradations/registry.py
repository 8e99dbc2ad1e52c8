"""Degradations of the student view, as registered steps: one module each in this package, and
one ``register`` line each below. This registry is the one list of steps: ``describe`` (in
``--help``, under method.degradations) and ``steps_table`` (docs/recipe.md, spliced by ``make
readme``) are made from it, so neither lists a step by hand.

A degraded view (probability p, the curriculum's) goes through the configured steps, each
applied with its own probability, in the registry's order, as a camera would produce them. The
steps in the image graph act on the whole resized image before the crop (method.md), in DALI
and in the twin; a step on the finished view is the same torch code for both backends. Every
step draws its own named plan fields from random streams of its own (pipelines/streams.py), so
each draw is a pure function of (seed, epoch, position): both backends read the same fields by
name, and resume and world-size changes stay exact. A field of 0 means the step is not applied
to that sample.

A new step is a module here (its fields, draw, twin and DALI operations, label, range and
meaning: see base.GraphStep and base.ViewStep), its two rows in pipelines/streams.py, and one
line below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.degradations import (
    downsample,
    gamma,
    gaussian_blur,
    jpeg,
    motion_blur,
    noise,
)
from pipelines.degradations.base import Step

# The registry, in the order a degraded view goes through the steps.
STEPS: dict[str, Step] = {}


def register(step: Step, after: str | None = None) -> Step:
    """Add `step` to the registry: last, or right after the step named `after`. Refused (one
    line) if its name, field, label or range key is another step's, or its streams are not in
    pipelines/streams.py."""
    for attribute in ("name", "field", "label", "range_key"):
        value = getattr(step, attribute)
        for other in STEPS.values():
            if getattr(other, attribute) == value and (value or attribute != "label"):
                raise ValueError(
                    f"degradation step {step.name!r}: {attribute} {value!r} is {other.name!r}'s"
                )
    step.streams  # noqa: B018 (both rows must exist: stream() names the missing one)
    steps = list(STEPS.values())
    at = len(steps) if after is None else [s.name for s in steps].index(after) + 1
    steps.insert(at, step)
    STEPS.clear()
    STEPS.update((s.name, s) for s in steps)
    return step


def unregister(name: str) -> None:
    """Remove a step (one registered at run time, e.g. by a test)."""
    STEPS.pop(name, None)


register(gamma.STEP)
register(downsample.STEP)
register(gaussian_blur.STEP)
register(motion_blur.STEP)
register(jpeg.STEP)
register(noise.STEP)
DOWNSAMPLE = STEPS["downsample"]  # the method's own step: DALI's crop-window shortcut is its


def order() -> tuple[str, ...]:
    return tuple(STEPS)


def graph_steps() -> tuple[Step, ...]:
    """The registered steps in the image graph (DALI and the twin), in order."""
    return tuple(step for step in STEPS.values() if step.in_graph)


def view_steps() -> tuple[Step, ...]:
    """The registered steps on the finished view, in order."""
    return tuple(step for step in STEPS.values() if not step.in_graph)


def _span(values) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def listing() -> list[dict[str, str]]:
    """Every registered step, in order: its name, where its range is configured, its default
    and allowed range, its report label and its meaning."""
    return [
        {
            "name": step.name,
            "key": f"method.{step.range_key}",
            "default": _span(step.default),
            "allowed": _span(step.bounds),
            "label": step.label or "(the bare number)",
            "meaning": step.meaning,
        }
        for step in STEPS.values()
    ]


def describe() -> str:
    """The steps, in order, as ``--help`` lists them under method.degradations."""
    return (
        "Steps, in the order applied: "
        + "; ".join(
            f"{row['name']} ({row['meaning']}; {row['key']}, default {row['default']})"
            for row in listing()
        )
        + "."
    )


def steps_table() -> str:
    """The steps as docs/recipe.md's table."""
    lines = [
        "| step | what it does | its range | default | allowed | report label, `--degrade` |",
        "|---|---|---|---|---|---|",
    ]
    for row in listing():
        lines.append(
            f"| `{row['name']}` | {row['meaning']} | `{row['key']}` | {row['default']} | "
            f"{row['allowed']} | {row['label']}, `{row['name']}:VALUE` |"
        )
    return "\n".join(lines)


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
            raise ValueError(f"{key}: unknown step {name!r} (known: {', '.join(STEPS)})")
        try:
            p = float(prob) if prob else 1.0
        except ValueError:
            raise ValueError(
                f"{key}: {spec!r}: the probability after ':' is not a number"
            ) from None
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{key}: {spec!r}: {p} is not a probability in [0, 1]")
        steps[name] = p
    return tuple((name, steps[name]) for name in STEPS if name in steps)


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
    `uniform(name)`: the samples' draws from the stream of that name (pipelines/streams.py);
    `shorter`: the resized shorter side."""
    n = len(degraded)
    fields = {name: np.zeros(n, dtype) for name, dtype in plan_fields().items()}
    for name, probability in degradations.steps:
        step = STEPS[name]
        applied = degraded.copy()
        if probability < 1.0:
            applied &= uniform(f"{name}.applies") < probability
        fields.update(
            step.draw(
                uniform(f"{name}.value"), applied, degradations.range_of(step), shorter, uniform
            )
        )
    return fields


def in_graph(fields: dict[str, np.ndarray]) -> np.ndarray:
    """The samples the image graph must degrade (any of its steps applies)."""
    return np.logical_or.reduce([fields[step.field] > 0 for step in graph_steps()])


# ------------------------------------------------------------------ evaluation conditions
def parse_condition(text: str) -> dict[str, float]:
    """``jpeg:20`` / ``gaussian_blur:2`` / ``noise:8`` / ``downsample:16`` / ``gamma:2`` -> plan
    fields, for degrading evaluation probes the way training does; ``downsample:16+motion_blur:5``
    applies several (in the registry's order, as in training)."""
    fields: dict[str, float] = {}
    for part in text.split("+"):
        name, _, value = part.partition(":")
        if name not in STEPS or not value:
            raise ValueError(
                f"--degrade {text!r}: expected STEP:VALUE[+STEP:VALUE] with STEP one of "
                f"{', '.join(STEPS)} (jpeg:20, gaussian_blur:2, downsample:16+motion_blur:5)"
            )
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"--degrade {text!r}: {value!r} is not a number") from None
        fields.update(STEPS[name].condition(number))
    return fields


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
