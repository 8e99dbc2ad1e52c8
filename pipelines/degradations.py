"""Degradations of the student view, as named steps.

A degraded view (probability p, the curriculum's) goes through the configured steps, each
applied with its own probability. Every step draws its own named parameter into the batch plan
from streams of its own, so each draw is a pure function of (seed, epoch, position): both
backends read the same fields by name, and resume and world-size changes stay exact.

The order is fixed, as a camera pipeline would produce it: ``downsample`` (to r px on the
shorter side and back up), ``gaussian_blur`` (sigma in pixels at the resized scale), ``jpeg``
(quality), then ``noise`` (Gaussian, sigma in 0..255 levels). The first three act on the whole
resized image before the crop (method.md), in the DALI graph and in the twin; ``noise`` acts on
the finished view in torch, from a counter-based hash, so it is the same numbers on any device
and backend. A field of 0 means the step is not applied to that sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

ORDER = ("downsample", "gaussian_blur", "jpeg", "noise")
# Plan field of each step's parameter, and the stream its draws start at (two streams each:
# whether the step applies, and its parameter). downsample keeps the streams it always had.
FIELDS = {
    "downsample": "resolution",
    "gaussian_blur": "blur_sigma",
    "jpeg": "jpeg_quality",
    "noise": "noise_sigma",
}
STREAMS = {"downsample": (15, 4), "gaussian_blur": (16, 17), "jpeg": (18, 19), "noise": (20, 21)}
NOISE_SEED_STREAM = 22
# In the image graph (DALI and the twin) rather than on the finished view.
IN_GRAPH = ("downsample", "gaussian_blur", "jpeg")


@dataclass(frozen=True)
class Degradations:
    """Which steps a degraded view goes through, with what probability, and their ranges."""

    steps: tuple[tuple[str, float], ...] = (("downsample", 1.0),)
    resolutions: tuple[int, ...] = (8, 16, 32, 64, 128)
    blur_sigma: tuple[float, float] = (0.5, 2.0)
    jpeg_quality: tuple[int, int] = (20, 80)
    noise_sigma: tuple[float, float] = (2.0, 10.0)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.steps)


def parse_steps(
    specs: list[str], key: str = "method.degradations"
) -> tuple[tuple[str, float], ...]:
    """``["downsample", "gaussian_blur:0.5", "jpeg:0.3"]`` -> ordered (name, probability)."""
    steps = {}
    for spec in specs:
        name, _, prob = spec.partition(":")
        if name not in ORDER:
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


def draw(
    degradations: Degradations,
    degraded: np.ndarray,
    uniform,
    shorter: int,
) -> dict[str, np.ndarray]:
    """Every step's field for a plan's samples. `degraded`: the samples drawn for degradation;
    `uniform(stream)`: the samples' draws from a stream; `shorter`: the resized shorter side
    (a resolution not below it leaves the image unchanged)."""
    n = len(degraded)
    fields = {field: np.zeros(n, np.float32) for field in FIELDS.values()}
    fields["noise_seed"] = np.zeros(n, np.int64)
    for name, probability in degradations.steps:
        whether, value = STREAMS[name]
        applied = degraded.copy()
        if probability < 1.0:
            applied &= uniform(whether) < probability
        u = uniform(value)
        if name == "downsample":
            choices = np.asarray(degradations.resolutions, np.float32)
            r = choices[np.minimum((u * len(choices)).astype(int), len(choices) - 1)]
            applied &= r < shorter
            fields["resolution"] = np.where(applied, r, 0).astype(np.float32)
        elif name == "gaussian_blur":
            lo, hi = degradations.blur_sigma
            fields["blur_sigma"] = np.where(applied, lo + (hi - lo) * u, 0).astype(np.float32)
        elif name == "jpeg":
            lo, hi = degradations.jpeg_quality
            quality = np.floor(lo + (hi - lo + 1) * u).clip(lo, hi)
            fields["jpeg_quality"] = np.where(applied, quality, 0).astype(np.float32)
        elif name == "noise":
            lo, hi = degradations.noise_sigma
            fields["noise_sigma"] = np.where(applied, lo + (hi - lo) * u, 0).astype(np.float32)
            seed = (uniform(NOISE_SEED_STREAM) * 2**31).astype(np.int64)
            fields["noise_seed"] = np.where(applied, seed, 0)
    return fields


def in_graph(fields: dict[str, np.ndarray]) -> np.ndarray:
    """The samples the image graph must degrade (any of its steps applies)."""
    return np.logical_or.reduce([fields[FIELDS[step]] > 0 for step in IN_GRAPH])


# ------------------------------------------------------------------ evaluation conditions
def parse_condition(text: str) -> dict[str, float]:
    """``jpeg:20`` / ``gaussian_blur:2`` / ``noise:8`` / ``downsample:16`` -> plan fields, for
    degrading evaluation probes the way training does."""
    name, _, value = text.partition(":")
    if name not in ORDER or not value:
        raise ValueError(
            f"--degrade {text!r}: expected STEP:VALUE with STEP one of {', '.join(ORDER)} "
            "(jpeg:20, gaussian_blur:2, noise:8, downsample:16)"
        )
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"--degrade {text!r}: {value!r} is not a number") from None
    fields = {FIELDS[name]: number}
    if name == "noise":
        fields["noise_seed"] = 12345.0
    return fields


def condition_label(condition: dict[str, float] | int | None) -> str:
    """How a condition is named in reports: 'full', '8' (pixels), 'jpeg20', 'blur2', ..."""
    if condition is None:
        return "full"
    if isinstance(condition, int):
        return str(condition)
    parts = []
    for name in ORDER:
        value = condition.get(FIELDS[name], 0)
        if value:
            short = {"downsample": "", "gaussian_blur": "blur", "jpeg": "jpeg", "noise": "noise"}
            parts.append(f"{short[name]}{value:g}")
    return "+".join(parts) or "full"


# ------------------------------------------------------------------ noise on finished views
def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 (wrapping arithmetic), vectorised."""
    x = x ^ (x >> 30) & 0x3FFFFFFFF
    x = x * -4658895280553007687  # 0xBF58476D1CE4E5B9 as a signed int64
    x = x ^ (x >> 27) & 0x1FFFFFFFFF
    x = x * -7723592293110705685  # 0x94D049BB133111EB
    return x ^ (x >> 31) & 0x1FFFFFFFF


def gaussian_field(seeds: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal values for each sample's seed and pixel index (Box-Muller on two
    hash-uniforms): a pure function of (seed, index), the same on every device."""
    n = len(seeds)
    count = math.prod(shape)
    index = torch.arange(count, device=seeds.device, dtype=torch.int64)
    base = (seeds.to(torch.int64) * 0x9E3779B9)[:, None] + 2 * index[None, :]
    u1 = ((_mix(base) >> 40) & 0xFFFFFF).to(torch.float32).add_(1.0).div_(2**24 + 1.0)
    u2 = ((_mix(base + 1) >> 40) & 0xFFFFFF).to(torch.float32).div_(2**24)
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * math.pi * u2)
    return z.view(n, *shape)


def add_noise(
    view: torch.Tensor,
    sigma: torch.Tensor,
    seeds: torch.Tensor,
    mean: tuple[float, ...],
    scale: float,
) -> torch.Tensor:
    """Gaussian noise of `sigma` levels (0..255 scale) on the samples with sigma > 0 of a
    normalised view, clipped to the range a real image can take."""
    chosen = torch.nonzero(sigma > 0).flatten()
    if len(chosen) == 0:
        return view
    noise = gaussian_field(seeds[chosen], tuple(view.shape[1:]))
    noisy = view[chosen] + noise * (sigma[chosen] * scale).view(-1, 1, 1, 1)
    mean_t = torch.tensor(mean, dtype=view.dtype, device=view.device).view(1, -1, 1, 1)
    low, high = (0 - mean_t) * scale, (255 - mean_t) * scale
    view = view.clone()
    view[chosen] = torch.maximum(torch.minimum(noisy, high), low)
    return view
