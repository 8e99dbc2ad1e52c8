"""Where the faces come from: ImageFolder trees, list files, the embedded ORL set, label maps."""

from __future__ import annotations

import gc
import hashlib
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipelines.packed import PackedError, packed_kind, read_packed

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp")


def _embedded_orl() -> Path:
    """The bundled ORL faces: data/ of a checkout, or the copy a wheel installs beside this
    package (crossres_dist/shipped/orl_att_faces, setup.py); found by path, imported never."""
    beside = Path(__file__).resolve().parent.parent
    for candidate in (
        beside / "data" / "orl_att_faces",
        beside / "crossres_dist" / "shipped" / "orl_att_faces",
    ):
        if candidate.is_dir():
            return candidate
    return beside / "data" / "orl_att_faces"  # named in the error when neither exists


EMBEDDED = {"embedded:orl": _embedded_orl()}


class DataError(ValueError):
    """A dataset that cannot be trained on; the message names the path."""


class Sample(NamedTuple):
    # A tuple, not a dataclass: a million of them are made at start-up, and a tuple of a str
    # and an int is made in half the time, holds a third of the memory and leaves the garbage
    # collector's tracking after its first pass.
    path: str
    label: int

    @classmethod
    def many(cls, paths: Iterable[str], labels: Iterable[int]) -> list[Sample]:
        """Samples made by tuple's own constructor: a packed set's million in a fifth of a
        second, half the time the generated one takes for the same tuples."""
        return list(map(partial(tuple.__new__, cls), zip(paths, labels)))


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
        images = images_under(str(folder))
        samples += Sample.many(images, [identities[folder.name]] * len(images))
    if not samples:
        raise DataError(f"{root}: no images found (expected identity folders of images)")
    return Dataset(samples, identities)


def images_under(folder: str) -> list[str]:
    """The image files under `folder`, at any depth, in the order of their path parts (what
    sorted(Path.rglob("*")) gives), read with os.scandir: the file types come with the listing,
    where a Path and a stat per file made a million-image folder take 50 s to list. Symlinked
    folders are not entered; a dangling symlink is listed (the checks name it) rather than
    silently dropped."""
    found: list[tuple[tuple[str, ...], str]] = []
    pending = [((), folder)]
    while pending:
        parts, directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except PermissionError:
            continue  # as rglob: an unreadable folder lists nothing
        for entry in entries:
            here = (*parts, entry.name)
            if entry.is_dir() and not entry.is_symlink():
                pending.append((here, entry.path))
            elif _suffix(entry.name).lower() in IMAGE_EXTENSIONS and (
                entry.is_symlink() or entry.is_file()
            ):
                found.append((here, entry.path))
    found.sort(key=itemgetter(0))
    return [path for _, path in found]


def _suffix(name: str) -> str:
    dot = name.rfind(".")  # as PurePath.suffix: not a leading dot, not a trailing one
    return name[dot:] if 0 < dot < len(name) - 1 else ""


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
        identity = parts[1] if len(parts) == 2 else sample_key(parts[0]).split("/")[0]
        entries.append((parts[0], identity))
    if not entries:
        raise DataError(f"{path}: the list is empty")
    if identities is None:
        names = sorted(
            {name for _, name in entries}, key=lambda n: (len(n), n) if n.isdigit() else (0, n)
        )
        identities = {name: i for i, name in enumerate(names)}
    unknown = next((e for e in entries if e[1] not in identities), None)
    if unknown is not None:
        raise DataError(f"{path}: identity '{unknown[1]}' of {unknown[0]} is not in the label map")
    under = joiner(root)
    return Dataset(
        Sample.many([under(rel) for rel, _ in entries], [identities[n] for _, n in entries]),
        identities,
    )


def joiner(root: Path) -> Callable[[str], str]:
    """str(root / rel) for a relative path, by string concatenation where that gives the same
    string (rel in normal form): a Path per line made a million-line list take 8 s to read."""
    prefix = "" if str(root) == "." else str(root).rstrip("/") + "/"

    def under(rel: str) -> str:
        if rel.startswith(("/", "./")) or rel.endswith(("/", "/.")) or "//" in rel or "/./" in rel:
            return str(root / rel)
        return prefix + rel if rel != "." else str(root)

    return under


def read_packed_set(root: Path, identities: dict[str, int] | None = None) -> Dataset:
    """A packed set (pipelines/packed.py): its samples are locators into the packed files."""
    try:
        paths, labels, own = read_packed(root)
    except PackedError as err:
        raise DataError(str(err)) from None
    if not paths:
        raise DataError(f"{root}: the packed set holds no images")
    if identities is None or identities == own:
        return Dataset(Sample.many(paths, labels), own)
    # Another label map (a checkpoint's): the same identity names, perhaps other labels.
    name_of = {label: name for name, label in own.items()}
    unknown = sorted(set(name_of.values()) - set(identities))
    if unknown:
        raise DataError(f"{root}: identity '{unknown[0]}' is not in the label map")
    relabel = {label: identities[name] for label, name in name_of.items()}
    return Dataset(Sample.many(paths, map(relabel.__getitem__, labels)), identities)


def load_source(spec: str, root: str = "", identities: dict[str, int] | None = None) -> Dataset:
    path = resolve(spec)
    if path.is_file():
        return read_list_file(path, Path(root) if root else None, identities)
    if path.is_dir() and packed_kind(path):
        return read_packed_set(path, identities)
    return scan_image_folder(path, identities)


# The label of a face whose identity is unknown (data.unlabelled): it gets the feature term only.
UNLABELLED = -1


def source_list(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """data.train or data.unlabelled as a list of sources ("" or []: none)."""
    if isinstance(spec, str):
        return [spec] if spec else []
    return [s for s in spec if s]


def source_name(spec: str) -> str:
    """The name that prefixes a labelled source's identities when several are trained on: the
    folder's name, or a list file's without its suffix."""
    if spec in EMBEDDED:
        return spec.split(":", 1)[1]
    path = Path(spec)
    return (path.stem if path.is_file() else path.name) or spec


def load_labelled(
    train: str | list[str] | tuple[str, ...],
    root: str = "",
    identities: dict[str, int] | None = None,
) -> Dataset:
    """data.train: one source as it is, or several, whose identities are never merged by folder
    name: each source's identity `person` is `SOURCE/person` (SOURCE the folder's name), and
    the labels follow the sources' order."""
    sources = source_list(train)
    if not sources:
        return Dataset([], {} if identities is None else identities)
    if len(sources) == 1:
        return load_source(sources[0], root, identities)
    names = [source_name(s) for s in sources]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise DataError(
            f"data.train: two sources are named {twice!r}; their identities would be told apart "
            "by the folder's name only: rename or link one"
        )
    samples: list[Sample] = []
    merged: dict[str, int] = {}
    for name, spec in zip(names, sources):
        prefix = f"{name}/"
        own = None
        if identities is not None:
            own = {k[len(prefix) :]: v for k, v in identities.items() if k.startswith(prefix)}
        part = load_source(spec, root, own)
        if identities is None:  # labels follow the sources' order
            offset = len(merged)
            merged.update({prefix + k: offset + v for k, v in part.identities.items()})
            samples += Sample.many(
                [s.path for s in part.samples], [offset + s.label for s in part.samples]
            )
        else:
            samples += part.samples
    return Dataset(samples, identities if identities is not None else merged)


def load_unlabelled(sources: list[str] | tuple[str, ...], root: str = "") -> list[Sample]:
    """data.unlabelled: faces whose identity is unknown, each with the label UNLABELLED. A
    folder gives every image under it at any depth (identity folders or none); a list file or a
    packed set its images, their labels dropped."""
    samples: list[Sample] = []
    for spec in source_list(sources):
        path = resolve(spec)
        if path.is_dir() and not packed_kind(path):
            images = images_under(str(path))
            if not images:
                raise DataError(f"data.unlabelled: {path}: no images found")
        elif path.exists():
            images = [s.path for s in load_source(spec, root).samples]
        else:
            raise DataError(f"data.unlabelled: {path}: not found")
        samples += Sample.many(images, [UNLABELLED] * len(images))
    return samples


def _held_out(spec: str, key: str) -> int:
    try:
        value = int(spec.split(":", 1)[1])
    except ValueError:
        raise DataError(f"{key}: {spec!r} is not split:K with an integer K") from None
    if value < 0:
        raise DataError(f"{key}: {spec!r}: K must be >= 0")
    return value


@dataclass(frozen=True)
class SplitSpec:
    """Which images train a model, which select it (validation) and which report it (test).

    ``val`` and ``test`` are each ``split:K`` (K images of every identity held out of ``train``)
    or a separate ImageFolder / list file; ``test`` may be empty (evaluate on another data set).
    The held-out images are drawn with ``seed`` (``data.split_seed``), never with the run's seed:
    runs with other seeds train on the same images and are evaluated on the same unseen ones.
    """

    train: str | list[str]
    val: str = "split:2"
    test: str = ""
    root: str = ""
    seed: int = 0
    # Sources of faces without identity labels (data.unlabelled), trained on, never split.
    unlabelled: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, data) -> SplitSpec:
        train = data.train if isinstance(data.train, str) else list(data.train)
        return cls(train, data.val, data.test, data.root, data.split_seed, tuple(data.unlabelled))

    def as_dict(self) -> dict:
        described = {
            "train": self.train,
            "val": self.val,
            "test": self.test,
            "root": self.root,
            "split_seed": self.seed,
        }
        if self.unlabelled:  # absent otherwise: the records of runs before it stay as they were
            described["unlabelled"] = list(self.unlabelled)
        return described

    @classmethod
    def from_dict(cls, d: dict) -> SplitSpec:
        return cls(
            d["train"],
            d["val"],
            d.get("test", ""),
            d.get("root", ""),
            d["split_seed"],
            tuple(d.get("unlabelled", ())),
        )


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset | None
    spec: SplitSpec
    # data.unlabelled's faces (label UNLABELLED): trained on with the feature term only.
    unlabelled: list[Sample] = field(default_factory=list)

    def part(self, name: str) -> Dataset | None:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def describe(self) -> dict:
        """What a run and each of its checkpoints record about their data (small, even for
        millions of files: counts and fingerprints, not paths)."""
        parts = {"train": self.train, "val": self.val, "test": self.test}
        if self.spec.unlabelled:
            parts["unlabelled"] = Dataset(self.unlabelled, {})
        return {
            **self.spec.as_dict(),
            "counts": {k: len(v.samples) if v else 0 for k, v in parts.items()},
            "fingerprints": {k: fingerprint(v.samples) if v else "" for k, v in parts.items()},
        }


def fingerprint(samples: list[Sample]) -> str:
    """A hash of the files (by their last two path parts: identity folder and file name) and
    labels, so that the same split of a moved copy of the data set has the same fingerprint."""
    # One string hashed at once, its parts cut with str.rsplit (sample_key): a Path per sample
    # made this the slowest step of starting on a million images (12 s), for the same digest.
    ordered = sorted(samples, key=itemgetter(0))  # by path
    lines = "".join([f"{sample_key(path)}:{label}\n" for path, label in ordered])
    # File names are bytes on Linux: one that is not UTF-8 arrives with surrogate escapes.
    return hashlib.sha1(lines.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _identity_seed(name: str) -> int:
    # Per identity, from its name: adding or removing identities leaves the others' split alone.
    return zlib.crc32(name.encode("utf-8", "surrogateescape"))


def split_per_identity(
    dataset: Dataset, held_out: dict[str, int], seed: int
) -> tuple[Dataset, dict[str, Dataset]]:
    """Hold out ``held_out[part]`` images of every identity for each part (in order: the test
    part first, so that its images do not change when the validation size does). At least one
    image of each identity stays for training."""
    names = {label: name for name, label in dataset.identities.items()}
    by_label: dict[int, list[Sample]] = {}
    for s in dataset.samples:
        by_label.setdefault(s.label, []).append(s)
    need = sum(held_out.values())
    train: list[Sample] = []
    parts: dict[str, list[Sample]] = {part: [] for part in held_out}
    for label in sorted(by_label):
        items = by_label[label]
        if len(items) <= need:
            what = " + ".join(f"{k} for {part}" for part, k in held_out.items() if k)
            keys = " or ".join(f"data.{part}=split:K" for part, k in held_out.items() if k)
            raise DataError(
                f"identity '{names[label]}' ({Path(items[0].path).parent}) has {len(items)} "
                f"image(s), too few to hold out {what} and keep one for training; lower {keys}"
            )
        order = np.random.default_rng([seed, 7, _identity_seed(names[label])]).permutation(
            len(items)
        )
        start = 0
        for part, k in held_out.items():
            parts[part] += [items[i] for i in sorted(order[start : start + k])]
            start += k
        train += [items[i] for i in sorted(order[start:])]
    return Dataset(train, dataset.identities), {
        part: Dataset(samples, dataset.identities) for part, samples in parts.items()
    }


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a data set's million small objects are made: they
    hold no cycles, and each of the collections their allocation triggers would walk all that
    were made before (half the time of listing a million samples). Also a decorator."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@collector_paused()
def load_splits(spec: SplitSpec, identities: dict[str, int] | None = None) -> Splits:
    """Training, validation and test data sets with one label map (from training, or given),
    and the unlabelled faces."""
    full = load_labelled(spec.train, spec.root, identities)
    unlabelled = load_unlabelled(spec.unlabelled, spec.root)
    held_out = {}
    for part in ("test", "val"):
        text = getattr(spec, part)
        if text.startswith("split:"):
            held_out[part] = _held_out(text, f"data.{part}")
            if not full.samples:
                raise DataError(
                    f"data.{part}: {text} holds out images of data.train's people, and data.train "
                    "names no labelled source: give a separate folder of faces"
                )
    train, parts = split_per_identity(full, held_out, spec.seed) if held_out else (full, {})
    separate = {}
    for part in ("val", "test"):
        text = getattr(spec, part)
        if text and not text.startswith("split:") and not full.samples:
            # No labelled source (pure feature distillation): the faces judge the feature term.
            separate[part] = Dataset(load_unlabelled([text], spec.root), {})
        elif text and not text.startswith("split:"):
            separate[part] = load_source(text, spec.root, full.identities)
    val = parts.get("val") or separate.get("val")
    if val is None:
        raise DataError("data.val: empty; give split:K or a validation ImageFolder / list file")
    test = parts.get("test") or separate.get("test")
    if test is not None and not test.samples:
        test = None
    return Splits(train, val, test, spec, unlabelled)


def sample_key(path: str) -> str:
    """An image's identity across copies of a data set: its identity folder and file name."""
    if "//" in path or "/./" in path or path.startswith("./") or path.endswith(("/", "/.")):
        p = Path(path)  # not in normal form (str(Path) never is): let pathlib normalise it
        return f"{p.parent.name}/{p.name}"
    parts = path.rsplit("/", 2)
    return f"{parts[-2] if len(parts) > 1 else ''}/{parts[-1]}"


@dataclass
class Seen:
    """The images a recorded split trained on and chose its checkpoint with (as sample_key)."""

    train: set[str]
    val: set[str]
    # False when the data on disk no longer gives the split the record describes.
    matches_record: bool


def seen_by(record: dict) -> Seen:
    splits = load_splits(SplitSpec.from_dict(record))
    described = splits.describe()["fingerprints"]
    matches = all(
        record.get("fingerprints", {}).get(part) == described[part] for part in ("train", "val")
    )
    return Seen(
        {sample_key(s.path) for s in [*splits.train.samples, *splits.unlabelled]},
        {sample_key(s.path) for s in splits.val.samples},
        matches,
    )
