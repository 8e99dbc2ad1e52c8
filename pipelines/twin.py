"""The torchvision/PIL twin of the DALI graph: the same plans, the same semantics, a DataLoader.

Used where DALI is not installed or when ``data.backend=torchvision``. It follows method.md
literally (resize the whole image to shorter side S, degrade the whole image, then crop), which
the golden test compares with DALI's region-of-interest shortcuts.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .plans import BatchPlan, ViewSettings

MODES = {"linear": "bilinear", "cubic": "bicubic", "nearest": "nearest"}


def decode(path: str, gray: bool, channels: str = "BGR") -> torch.Tensor:
    """HWC float32 0..255 in `channels` order. Grayscale uses ITU-R 601 luma, as DALI and PIL
    do."""
    with Image.open(path) as img:
        if img.mode.startswith("I"):
            # 16-bit greyscale: scaled to 8 bits as DALI's decoder does (round(v / 257)), where
            # PIL's own conversion would clip everything above 255 to white.
            deep = np.asarray(img, dtype=np.float64)
            img = Image.fromarray(np.round(deep / 257).clip(0, 255).astype(np.uint8))
        img = img.convert("RGB")
        if gray:
            img = img.convert("L").convert("RGB")
        array = np.asarray(img, dtype=np.float32)
    if channels == "BGR":
        array = array[:, :, ::-1]
    return torch.from_numpy(array.copy())


def resize_chw(image: torch.Tensor, height: int, width: int, interpolation: str) -> torch.Tensor:
    mode = MODES[interpolation]
    kwargs = {"antialias": True, "align_corners": False} if mode != "nearest" else {}
    return F.interpolate(image[None], size=(height, width), mode=mode, **kwargs)[0]


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian of `sigma` pixels on CHW, window 2*ceil(3 sigma)+1, mirrored borders (as
    DALI), as two 1-D passes."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = image.shape[0]
    padded = F.pad(image[None], (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Through PIL's JPEG encoder and decoder at `quality` (the image as 8-bit)."""
    array = image.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="JPEG", quality=int(quality))
    decoded = np.asarray(Image.open(buffer), dtype=np.float32)
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1)


def make_views(
    path: str,
    crop_x: float,
    crop_y: float,
    gray: bool,
    resolution: float,
    views: ViewSettings,
    interpolation: str = "linear",
    blur_sigma: float = 0.0,
    jpeg_quality: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    image = decode(path, gray, views.channels).permute(2, 0, 1)
    h, w = image.shape[1:]
    shorter, size, crop = min(h, w), views.resize_shorter, views.crop
    full_h, full_w = (
        int(np.floor(h * size / shorter + 0.5)),
        int(np.floor(w * size / shorter + 0.5)),
    )
    full = resize_chw(image, full_h, full_w, interpolation)
    top = int(np.floor(np.float32(crop_y) * (full_h - crop)))
    left = int(np.floor(np.float32(crop_x) * (full_w - crop)))
    mean = torch.tensor(views.mean, dtype=torch.float32).view(3, 1, 1)
    teacher = (full[:, top : top + crop, left : left + crop] - mean) * views.scale
    if resolution <= 0 and blur_sigma <= 0 and jpeg_quality <= 0:
        return teacher, teacher.clone()
    # The steps in their fixed order on the whole resized image, then the crop (method.md).
    degraded = full
    if resolution > 0:
        small_h = max(int(np.floor(full_h * resolution / size + 0.5)), 1)
        small_w = max(int(np.floor(full_w * resolution / size + 0.5)), 1)
        small = resize_chw(full, small_h, small_w, interpolation)
        degraded = resize_chw(small, full_h, full_w, interpolation)
    if blur_sigma > 0:
        degraded = gaussian_blur(degraded, blur_sigma)
    if jpeg_quality > 0:
        degraded = jpeg(degraded, int(jpeg_quality))
    return teacher, (degraded[:, top : top + crop, left : left + crop] - mean) * views.scale


class _SampleViews(torch.utils.data.Dataset):
    """Indexed by a sample's plan entry (path, crop_x, crop_y, gray, resolution, flip, label)."""

    def __init__(self, views: ViewSettings, interpolation: str):
        self.views, self.interpolation = views, interpolation

    def __getitem__(self, item: tuple) -> tuple:
        path, crop_x, crop_y, gray, resolution, flip, label, blur, quality, sigma, seed = item
        teacher, student = make_views(
            path, crop_x, crop_y, gray, resolution, self.views, self.interpolation, blur, quality
        )
        if flip:
            teacher, student = teacher.flip(2), student.flip(2)
        return teacher, student, label, resolution, sigma, seed


def _entries(plans: Iterable[BatchPlan]) -> Iterator[list[tuple]]:
    for plan in plans:
        yield [
            (
                plan.paths[i],
                float(plan.crop_x[i]),
                float(plan.crop_y[i]),
                bool(plan.gray[i]),
                float(plan.resolution[i]),
                bool(plan.flip[i]),
                int(plan.labels[i]),
                float(plan.blur_sigma[i]),
                float(plan.jpeg_quality[i]),
                float(plan.noise_sigma[i]),
                int(plan.noise_seed[i]),
            )
            for i in range(len(plan))
        ]


def _collate(items: list[tuple]) -> dict[str, torch.Tensor]:
    teacher, student, labels, resolution, noise_sigma, noise_seed = zip(*items)
    return {
        "teacher_view": torch.stack(teacher),
        "student_view": torch.stack(student),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "resolution": torch.tensor(resolution, dtype=torch.float32),
        "noise_sigma": torch.tensor(noise_sigma, dtype=torch.float32),
        "noise_seed": torch.tensor(noise_seed, dtype=torch.int64),
    }


class TwinViews:
    """Batches of the plans on `device`. Plans are walked in the main process (the batch
    sampler), images are made in the workers; the DataLoader keeps the plans' order."""

    def __init__(
        self,
        plans: Iterable[BatchPlan],
        views: ViewSettings,
        device: torch.device,
        num_workers: int = 0,
        interpolation: str = "linear",
    ):
        self.device = device
        self.loader = torch.utils.data.DataLoader(
            _SampleViews(views, interpolation),
            batch_sampler=_entries(plans),
            num_workers=num_workers,
            collate_fn=_collate,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        self._it = iter(self.loader)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        batch = next(self._it)
        on_host = ("resolution", "noise_sigma", "noise_seed")
        return {
            k: v if k in on_host else v.to(self.device, non_blocking=True) for k, v in batch.items()
        }
