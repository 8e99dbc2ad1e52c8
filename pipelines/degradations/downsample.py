"""downsample: to r pixels on the shorter side and back up (the paper's degradation).

r is drawn uniformly from method.resolutions; a resolution not below the resized shorter side
leaves the image unchanged (method.md), so such samples are not marked as down-sampled.
"""

from __future__ import annotations

import numpy as np
import torch

from pipelines.degradations.base import GraphStep


def resize_chw(image: torch.Tensor, height: int, width: int, interpolation: str) -> torch.Tensor:
    mode = {"linear": "bilinear", "cubic": "bicubic", "nearest": "nearest"}[interpolation]
    kwargs = {"antialias": True, "align_corners": False} if mode != "nearest" else {}
    return torch.nn.functional.interpolate(image[None], size=(height, width), mode=mode, **kwargs)[
        0
    ]


class Downsample(GraphStep):
    name = "downsample"
    meaning = "the paper's step: down to r px on the shorter side, and back up"
    field = "resolution"
    range_key = "resolutions"
    default = (8, 16, 32, 64, 128)
    bounds = (1, float("inf"))
    label = ""  # "16": a bare number is a resolution

    def draw(self, u, applied, value_range, shorter, uniform):
        choices = np.asarray(value_range, np.float32)
        r = choices[np.minimum((u * len(choices)).astype(int), len(choices) - 1)]
        applied = applied & (r < shorter)
        return {self.field: np.where(applied, r, 0).astype(np.float32)}

    def check_range(self, values) -> str | None:
        if not values or any(r < 1 for r in values):
            return f"{list(values)}: needs at least one resolution, each >= 1 pixel"
        return None

    def twin(self, image, value, frame):
        size, full_h, full_w = frame["size"], frame["full_h"], frame["full_w"]
        small_h = max(int(np.floor(full_h * value / size + 0.5)), 1)
        small_w = max(int(np.floor(full_w * value / size + 0.5)), 1)
        small = resize_chw(image, small_h, small_w, frame["interpolation"])
        return resize_chw(small, full_h, full_w, frame["interpolation"])

    def _small(self, image, value, frame):
        import nvidia.dali.math as dmath
        from nvidia.dali import fn

        size, full_h, full_w = frame["size"], frame["full_h"], frame["full_w"]
        small_h = dmath.max(dmath.floor(full_h * value / size + 0.5), 1.0)
        small_w = dmath.max(dmath.floor(full_w * value / size + 0.5), 1.0)
        small = fn.resize(
            image, size=fn.stack(small_h, small_w), interp_type=frame["interp"], antialias=True
        )
        return small, small_h, small_w

    def dali(self, image, value, frame):
        from nvidia.dali import fn

        small, _, _ = self._small(image, value, frame)
        size = fn.stack(frame["full_h"], frame["full_w"])
        return fn.resize(small, size=size, interp_type=frame["interp"], antialias=True)

    def dali_window(self, image, value, frame, window):
        """Down-sampling alone: the up-sampling writes only the crop window (`window(image,
        scale_y, scale_x)` resizes a region of interest to the crop)."""
        small, small_h, small_w = self._small(image, value, frame)
        return window(small, small_h / frame["full_h"], small_w / frame["full_w"])


STEP = Downsample()
