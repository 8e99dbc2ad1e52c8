"""The torchvision/PIL twin of the DALI graph: the same plans, the same semantics, a DataLoader.

Used where DALI is not installed or when ``data.backend=torchvision``. It follows method.md
literally (resize the whole image to shorter side S, degrade the whole image, then crop), which
the golden test compares with DALI's region-of-interest shortcuts.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from PIL import Image

from pipelines.degradations import graph_steps, plan_fields
from pipelines.degradations.downsample import resize_chw
from pipelines.degradations.jpeg import jpeg  # noqa: F401 (the twin's encoder, as tests know it)
from pipelines.packed import read_encoded
from pipelines.plans import BatchPlan, ViewSettings


def decode(path: str, gray: bool, channels: str = "BGR") -> torch.Tensor:
    """HWC float32 0..255 in `channels` order. Grayscale uses ITU-R 601 luma, as DALI and PIL
    do."""
    with Image.open(io.BytesIO(read_encoded(path))) as img:
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


def make_views(
    path: str,
    crop_x: float,
    crop_y: float,
    gray: bool,
    fields: dict[str, float],
    views: ViewSettings,
    interpolation: str = "linear",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher view and the student view (before the steps on the finished view) of one
    image; `fields`: the sample's degradation fields by name."""
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
    applied = [step for step in graph_steps() if fields[step.field] > 0]
    if not applied:
        return teacher, teacher.clone()
    # The steps in their fixed order on the whole resized image, then the crop (method.md).
    frame = {
        "size": size,
        "full_h": full_h,
        "full_w": full_w,
        "interpolation": interpolation,
        "fields": fields,
    }
    degraded = full
    for step in applied:
        degraded = step.twin(degraded, fields[step.field], frame)
    return teacher, (degraded[:, top : top + crop, left : left + crop] - mean) * views.scale


class _SampleViews(torch.utils.data.Dataset):
    """Indexed by a sample's plan entry (a dict: path, crop, gray, flip, label and the
    degradation fields by name)."""

    def __init__(self, views: ViewSettings, interpolation: str):
        self.views, self.interpolation = views, interpolation

    def __getitem__(self, entry: dict) -> tuple:
        fields = {name: entry[name] for name in plan_fields()}
        teacher, student = make_views(
            entry["path"],
            entry["crop_x"],
            entry["crop_y"],
            entry["gray"],
            fields,
            self.views,
            self.interpolation,
        )
        if entry["flip"]:
            teacher, student = teacher.flip(2), student.flip(2)
        return teacher, student, entry["label"], fields


def _entries(plans: Iterable[BatchPlan]) -> Iterator[list[dict]]:
    for plan in plans:
        yield [
            {
                "path": plan.paths[i],
                "crop_x": float(plan.crop_x[i]),
                "crop_y": float(plan.crop_y[i]),
                "gray": bool(plan.gray[i]),
                "flip": bool(plan.flip[i]),
                "label": int(plan.labels[i]),
                **{name: values[i].item() for name, values in plan.steps.items()},
            }
            for i in range(len(plan))
        ]


def _collate(items: list[tuple]) -> dict[str, torch.Tensor]:
    teacher, student, labels, fields = zip(*items)
    batch = {
        "teacher_view": torch.stack(teacher),
        "student_view": torch.stack(student),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    for name, dtype in plan_fields().items():
        batch[name] = torch.from_numpy(np.array([f[name] for f in fields], dtype))
    return batch


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
        # The plan's fields stay on the host, where the steps on the finished view read them.
        on_device = ("teacher_view", "student_view", "labels")
        return {
            k: v.to(self.device, non_blocking=True) if k in on_device else v
            for k, v in batch.items()
        }
