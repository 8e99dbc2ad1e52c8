"""noise: Gaussian sensor noise, sigma in levels of 0..255 drawn uniformly from
method.ranges.noise, on the finished view in torch from a counter-based hash of (the sample's
seed, the pixel index): the same numbers on any device and either backend."""

from __future__ import annotations

import math

import numpy as np
import torch

from pipelines.degradations.base import ViewStep, uniform_in

# The seed of an evaluation condition's noise (each probe adds its index: its own noise, the
# same at every evaluation).
CONDITION_SEED = 12345.0


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


class Noise(ViewStep):
    name = "noise"
    meaning = "sensor noise: Gaussian, sigma in levels of 0..255, on the finished view"
    field = "noise_sigma"
    default = (2.0, 10.0)
    bounds = (0.0, 255.0)
    label = "noise"
    extra_fields = {"noise_seed": (np.int64, "INT64")}

    def draw(self, u, applied, value_range, shorter, uniform):
        seed = (uniform("noise.seed") * 2**31).astype(np.int64)
        return {
            self.field: np.where(applied, uniform_in(u, value_range), 0).astype(np.float32),
            "noise_seed": np.where(applied, seed, 0),
        }

    def condition(self, value: float) -> dict[str, float]:
        return {self.field: value, "noise_seed": CONDITION_SEED}

    def for_probes(self, fields, positions):
        if fields[self.field].any():
            # Each probe its own noise, the same at every evaluation.
            fields["noise_seed"] = fields["noise_seed"] + positions

    def on_view(self, batch, mean, scale):
        view = batch["student_view"]
        sigma = batch["noise_sigma"].to(view.device)
        return add_noise(view, sigma, batch["noise_seed"].to(view.device), mean, scale)


STEP = Noise()
