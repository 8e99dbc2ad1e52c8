"""Where the faces come from: ImageFolder trees, list files, the embedded ORL set, label maps."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp")
EMBEDDED = {"embedded:orl": Path(__file__).resolve().parent.parent / "data" / "orl_att_faces"}


class DataError(ValueError):
    """A dataset that cannot be trained on; the message names the path."""


@dataclass(frozen=True)
class Sample:
    path: str
    label: int


@dataclass
class Dataset:
    samples: list[Sample]
    # identity name -> label, the same in every rank, checkpoint and evaluation.
    identities: dict[str, int]

    @property
    def num_classes(self) -> int:
        return len(self.identities)

    def counts(self) -> dict[int, int]:
        return {
            label: c
            for label, c in zip(*np.unique([s.label for s in self.samples], return_counts=True))
        }


def resolve(spec: str) -> Path:
    return EMBEDDED.get(spec, Path(spec))


def scan_image_folder(root: Path, identities: dict[str, int] | None = None) -> Dataset:
    """Identity folders of images (VGGFace2 ``train/``); labels by sorted folder name."""
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if identities is None:
        identities = {p.name: i for i, p in enumerate(folders)}
    samples = []
    for folder in folders:
        if folder.name not in identities:
            raise DataError(f"{folder}: identity '{folder.name}' is not in the label map")
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                samples.append(Sample(str(path), identities[folder.name]))
    if not samples:
        raise DataError(f"{root}: no images found (expected identity folders of images)")
    return Dataset(samples, identities)


def read_list_file(
    path: Path, root: Path | None = None, identities: dict[str, int] | None = None
) -> Dataset:
    """``relative/path label`` per line; a label may be an identity name (VGGFace2 lists give
    ``n000002/0001_01.jpg`` only, whose folder is the identity)."""
    if not path.is_file():
        raise DataError(f"{path}: list file not found")
    root = root or path.parent
    entries: list[tuple[str, str]] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) > 2:
            raise DataError(f"{path}:{number}: expected 'relative/path [label]', got {line!r}")
        identity = parts[1] if len(parts) == 2 else Path(parts[0]).parent.name
        entries.append((parts[0], identity))
    if not entries:
        raise DataError(f"{path}: the list is empty")
    if identities is None:
        names = sorted(
            {name for _, name in entries}, key=lambda n: (len(n), n) if n.isdigit() else (0, n)
        )
        identities = {name: i for i, name in enumerate(names)}
    samples = []
    for rel, name in entries:
        if name not in identities:
            raise DataError(f"{path}: identity '{name}' of {rel} is not in the label map")
        samples.append(Sample(str(root / rel), identities[name]))
    return Dataset(samples, identities)


def load_source(spec: str, root: str = "", identities: dict[str, int] | None = None) -> Dataset:
    path = resolve(spec)
    if path.is_file():
        return read_list_file(path, Path(root) if root else None, identities)
    return scan_image_folder(path, identities)


def split_per_identity(dataset: Dataset, held_out: int, seed: int) -> tuple[Dataset, Dataset]:
    """Hold out `held_out` images of every identity for validation (the same for every seed's
    rank, since it depends only on `seed`)."""
    rng = np.random.default_rng([seed, 7])
    by_label: dict[int, list[Sample]] = {}
    for s in dataset.samples:
        by_label.setdefault(s.label, []).append(s)
    train, val = [], []
    for label in sorted(by_label):
        items = by_label[label]
        if len(items) <= held_out:
            raise DataError(
                f"identity {label} has {len(items)} images, too few to hold out {held_out} "
                "for validation; lower data.val=split:K"
            )
        order = rng.permutation(len(items))
        val += [items[i] for i in sorted(order[:held_out])]
        train += [items[i] for i in sorted(order[held_out:])]
    return Dataset(train, dataset.identities), Dataset(val, dataset.identities)


def load_splits(
    train: str, val: str, root: str, seed: int, identities: dict[str, int] | None = None
):
    """Training and validation datasets with one label map (from training, or the given one)."""
    full = load_source(train, root, identities)
    if val.startswith("split:"):
        try:
            held_out = int(val.split(":", 1)[1])
        except ValueError:
            raise DataError(f"data.val: {val!r} is not split:K with an integer K") from None
        return split_per_identity(full, held_out, seed)
    return full, load_source(val, root, full.identities)


def save_identities(identities: dict[str, int], path: Path) -> None:
    path.write_text(json.dumps(identities, indent=0, sort_keys=True))


def load_identities(path: Path) -> dict[str, int]:
    return json.loads(path.read_text())
