"""gamma: an illumination change (under- or over-exposure), the image raised to a power
drawn log-uniformly from method.ranges.gamma ([0.5, 2.0] by default: gamma > 1 darkens,
< 1 brightens, each as likely), on the 0..1 scale. It acts first, on the scene as the camera
met it, before down-sampling, blur, JPEG and noise."""

from __future__ import annotations

import numpy as np

from pipelines.degradations.base import GraphStep


class Gamma(GraphStep):
    name = "gamma"
    meaning = "illumination: the image to a power, log-uniform (> 1 darkens, < 1 brightens)"
    field = "gamma"
    default = (0.5, 2.0)
    bounds = (0.1, 10.0)
    label = "gamma"

    def draw(self, u, applied, value_range, shorter, uniform):
        low, high = np.log(value_range[0]), np.log(value_range[1])
        value = np.exp(low + (high - low) * u)
        return {self.field: np.where(applied, value, 0).astype(np.float32)}

    def twin(self, image, value, frame):
        return (image.clamp(0, 255) / 255.0).pow(value) * 255.0

    def dali(self, image, value, frame):
        import nvidia.dali.math as dmath
        from nvidia.dali import fn, types

        scaled = fn.cast(image, dtype=types.FLOAT) / 255.0
        return fn.cast(dmath.pow(scaled, value) * 255.0, dtype=types.UINT8)


STEP = Gamma()
