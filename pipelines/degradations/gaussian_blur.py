"""gaussian_blur: optical blur, sigma in pixels at the resized scale (data.resize_shorter),
drawn uniformly from method.ranges.gaussian_blur. Window 2*ceil(3 sigma)+1, mirrored borders (as DALI)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.degradations.base import GraphStep, uniform_in


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian of `sigma` pixels on CHW as two 1-D passes."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = image.shape[0]
    padded = F.pad(image[None], (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


class GaussianBlur(GraphStep):
    name = "gaussian_blur"
    meaning = "optical blur: a Gaussian of sigma pixels at data.resize_shorter's scale"
    field = "blur_sigma"
    default = (0.5, 2.0)
    bounds = (0.0, 50.0)
    label = "blur"

    def draw(self, u, applied, value_range, shorter, uniform):
        return {self.field: np.where(applied, uniform_in(u, value_range), 0).astype(np.float32)}

    def twin(self, image, value, frame):
        return gaussian_blur(image, value)

    def dali(self, image, value, frame):
        from nvidia.dali import fn

        return fn.gaussian_blur(image, sigma=value)


STEP = GaussianBlur()
