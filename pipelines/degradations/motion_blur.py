"""motion_blur: a linear motion blur (the camera or the face moved during the exposure), the
image averaged along a line of length L pixels at data.resize_shorter's scale, at an angle drawn
uniformly in [0, 180) degrees; L is drawn uniformly from method.ranges.motion_blur.

The kernel is a pure function of (L, angle), made the same way on both backends: on a square
grid of side KERNEL_SIDE, a pixel's weight is its closeness to the line (1 on it, 0 one pixel
away) times how much of it lies within L/2 of the centre along the line, normalised to sum 1.
Each image gets its own kernel: DALI's ``fn.filter`` takes one per sample, the twin a
``conv2d``. Borders repeat the edge pixel (DALI's "clamp", torch's "replicate"): a blur up to
KERNEL_SIDE pixels long reaches further than a mirror of a small image allows.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.degradations.base import GraphStep, uniform_in
from pipelines.streams import stream, uniform

MAX_LENGTH = 31.0  # pixels: the longest blur a range may ask for
KERNEL_SIDE = 31  # odd, and long enough for MAX_LENGTH along any angle's axis
# An evaluation condition's blur angles: each probe its own, the same at every evaluation.
CONDITION_SEED = 12345


def _grid() -> tuple[np.ndarray, np.ndarray]:
    half = KERNEL_SIDE // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    return x, y


def kernel(length: float, angle_degrees: float) -> torch.Tensor:
    """The blur's KERNEL_SIDE x KERNEL_SIDE kernel (float32, sums to 1), the twin's and the
    reference for DALI's."""
    x, y = (torch.from_numpy(a) for a in _grid())
    theta = math.radians(angle_degrees)
    along = x * math.cos(theta) + y * math.sin(theta)
    across = y * math.cos(theta) - x * math.sin(theta)
    weight = (1 - across.abs()).clamp(min=0) * (length / 2 + 0.5 - along.abs()).clamp(0, 1)
    return weight / weight.sum()


class MotionBlur(GraphStep):
    name = "motion_blur"
    meaning = "camera or face motion: an average along a line of L pixels, at a random angle"
    field = "motion_length"
    default = (3.0, 9.0)
    bounds = (1.0, MAX_LENGTH)
    label = "motion"
    extra_fields = {"motion_angle": (np.float32, "FLOAT")}

    def draw(self, u, applied, value_range, shorter, uniform):
        angle = uniform("motion_blur.angle") * 180.0
        return {
            self.field: np.where(applied, uniform_in(u, value_range), 0).astype(np.float32),
            "motion_angle": np.where(applied, angle, 0).astype(np.float32),
        }

    def condition(self, value: float) -> dict[str, float]:
        return {self.field: value, "motion_angle": 0.0}

    def for_probes(self, fields, positions):
        if fields[self.field].any():
            draws = uniform(CONDITION_SEED, 0, positions, stream("motion_blur.angle"))
            fields["motion_angle"] = (draws * 180.0).astype(np.float32)

    def twin(self, image, value, frame):
        weights = kernel(float(value), float(frame["fields"]["motion_angle"])).to(image.dtype)
        c, half = image.shape[0], KERNEL_SIDE // 2
        padded = F.pad(image[None], (half, half, half, half), mode="replicate")
        return F.conv2d(padded, weights.expand(c, 1, -1, -1), groups=c)[0]

    def dali(self, image, value, frame):
        import nvidia.dali.math as dmath
        from nvidia.dali import fn, types

        x, y = (types.Constant(a, device="cpu") for a in _grid())
        theta = frame["fields"]["motion_angle"] * (math.pi / 180.0)
        along = x * dmath.cos(theta) + y * dmath.sin(theta)
        across = y * dmath.cos(theta) - x * dmath.sin(theta)
        near = dmath.max(1.0 - dmath.abs(across), 0.0)
        inside = dmath.clamp(value / 2.0 + 0.5 - dmath.abs(along), 0.0, 1.0)
        weight = near * inside
        weights = weight / fn.reductions.sum(weight)
        return fn.filter(image, weights, border="clamp")


STEP = MotionBlur()
