"""jpeg: compression artefacts, quality drawn uniformly (whole numbers) from
method.ranges.jpeg. The twin goes through PIL's encoder and decoder, DALI through its
jpeg_compression_distortion; both on the image as 8 bits."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from pipelines.degradations.base import GraphStep


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Through PIL's JPEG encoder and decoder at `quality` (the image as 8-bit)."""
    array = image.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="JPEG", quality=int(quality))
    decoded = np.asarray(Image.open(buffer), dtype=np.float32)
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1)


class Jpeg(GraphStep):
    name = "jpeg"
    meaning = "JPEG compression at a quality from 1 (worst) to 100"
    field = "jpeg_quality"
    default = (20, 80)
    bounds = (1, 100)
    label = "jpeg"
    dali_type = "INT32"

    def draw(self, u, applied, value_range, shorter, uniform):
        low, high = value_range
        quality = np.floor(low + (high - low + 1) * u).clip(low, high)
        return {self.field: np.where(applied, quality, 0).astype(np.float32)}

    def twin(self, image, value, frame):
        return jpeg(image, int(value))

    def dali(self, image, value, frame):
        from nvidia.dali import fn

        return fn.jpeg_compression_distortion(image, quality=value)


STEP = Jpeg()
