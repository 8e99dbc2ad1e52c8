"""What a benchmark protocol is, and the readers its modules share.

A protocol reads its release's layout from disk (checking it, with one-line errors that name the
file and line, before any network runs), says which images to extract under which conditions,
and turns the features into metrics. The command line (``crossres_dist.evaluate``) does the
rest: the distributed extraction, the cache, the report.
"""

from __future__ import annotations

import abc
import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from crossres_dist.data.check import refuse_undecodable
from crossres_dist.data.settings import DataConfig
from pipelines import ViewSettings
from pipelines.degradations import condition_label
from pipelines.sources import DataError, Sample

log = logging.getLogger(__name__)
Features = dict[str, tuple[torch.Tensor, torch.Tensor]]  # condition label -> (features, logits)


class Protocol(abc.ABC):
    """One benchmark. Subclasses set `name`, fill `samples` in __init__, and say how the
    features are scored and shown."""

    name = ""
    # One line: the benchmark and what it reports (--help and docs/benchmarks.md list it).
    summary = ""
    # The release's folder (--root) holds the protocol's files; the folder protocol reads the
    # config's data instead.
    needs_root = True
    # Images that are low-resolution already (TinyFace, QMUL-SurvFace) are evaluated as they are.
    native_resolution = False
    # The mirror image's features: summed with --flip (""), or kept apart ("separate").
    mirror = ""
    # Whether the reference side (the first face of each pair) may be embedded by another
    # network (--gallery): its full-resolution features arrive as features["gallery"].
    takes_gallery = False
    # Open-set identification counts a mated probe found when its mate is within this rank
    # (--open-set-rank overrides it).
    default_open_set_rank = 1

    def __init__(self, args: argparse.Namespace, data_cfg: DataConfig, source: str) -> None:
        """`data_cfg`: the configuration's data section and `source`, where the configuration
        came from: for a protocol that evaluates the configuration's own splits (the folder's);
        the others read only their release's files."""
        self.args = args
        self.samples: list[Sample] = []
        self.data_name = ""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The protocol's own options (shared options live in eval/command.py); none by default."""
        return None

    def images(self) -> list[str]:
        """Every image file the protocol reads (checked before any network runs)."""
        return [s.path for s in self.samples]

    def samples_at(self, condition) -> list[Sample]:
        """The images extracted under `condition`: all of them, by default."""
        return self.samples

    def refuse_unreadable(self, rank: int, world: int, threads: int) -> None:
        """Every image decoded before any network runs (each rank its share), on every rank."""
        refuse_undecodable(self.images(), rank, world, threads)

    def report_settings(self) -> dict:
        """Settings of the protocol's own that the report records; none by default."""
        return {}

    def prepare(self, out: Path, views: ViewSettings) -> None:
        """Work before extraction that every rank shares (alignment), run on every rank; none
        by default."""
        return None

    @property
    def open_set_rank(self) -> int:
        return getattr(self.args, "open_set_rank", None) or self.default_open_set_rank

    def conditions(self, requested: list) -> list:
        return [None] if self.native_resolution else requested

    def provenance(self, checkpoint: str) -> dict:
        from crossres_dist.weights import lineage_of

        lineage = lineage_of(checkpoint)
        if not lineage:
            return {"training_data": "unknown (the file records no split)"}
        return {
            "training_data": [
                {k: r[k] for k in ("train", "val", "test", "split_seed")} for r in lineage
            ]
        }

    @abc.abstractmethod
    def score(self, checkpoint: str, features: Features) -> dict:
        """The metrics of one network, from its features under every condition."""

    @abc.abstractmethod
    def markdown(self, report: dict) -> str:
        """The report's tables, as markdown."""

    def plots(self, out: Path, report: dict) -> list[Path]:
        return []


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: {what} not found")
    return path


def first_of(paths: list[Path], what: str) -> Path:
    for path in paths:
        if path.exists():
            return path
    raise DataError(f"{paths[0]}: {what} not found (nor {', '.join(map(str, paths[1:]))})")


def number(text: str, kind: type, path: Path, line: int, what: str):
    """`text` as an int or a finite float, or an error naming the file, line and field."""
    try:
        value = kind(text)
    except ValueError:
        name = "an integer" if kind is int else "a number"
        raise DataError(f"{path}:{line}: {what} {text!r} is not {name}") from None
    if kind is float and not np.isfinite(value):
        raise DataError(f"{path}:{line}: {what} is {text}, not a finite number")
    return value


def read_table(path: Path, columns: int, what: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a whitespace-separated file; a line with another field count is
    an error naming the file and line. A UTF-8 byte-order mark is skipped."""
    require(path, what)
    rows = []
    for number, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != columns:
            raise DataError(
                f"{path}:{number}: expected {columns} fields ({what}), got {len(fields)}: "
                f"{text.strip()[:80]!r}"
            )
        rows.append((number, fields))
    return rows


def read_mat(path: Path, keys: tuple[str, ...], what: str) -> dict[str, np.ndarray]:
    """The named arrays of a MATLAB file (scipy.io); a missing key names the keys there are."""
    from scipy.io import loadmat

    require(path, what)
    try:
        mat = loadmat(str(path))
    except Exception as err:
        raise DataError(f"{path}: not a readable .mat file ({err})") from None
    found = sorted(k for k in mat if not k.startswith("__"))
    missing = [k for k in keys if k not in mat]
    if missing:
        raise DataError(
            f"{path}: no key {', '.join(missing)} in this .mat file (it has: "
            f"{', '.join(found) or 'nothing'})"
        )
    return {k: mat[k] for k in keys}


def strings(array: np.ndarray) -> list[str]:
    """A MATLAB cell array or char matrix of names, as Python strings, in order."""
    out = []
    for item in np.asarray(array, dtype=object).reshape(-1, order="F"):
        while isinstance(item, np.ndarray) and item.dtype == object and item.size == 1:
            item = item.reshape(-1)[0]
        if isinstance(item, np.ndarray):
            item = "".join(item.reshape(-1).astype(str)) if item.dtype.kind == "U" else str(item)
        out.append(str(item).strip())
    return out


def numbers(array: np.ndarray) -> np.ndarray:
    return np.asarray(array).astype(np.int64).reshape(-1, order="F")


def named_images(base: Path, folder: str, mat: str, key: str) -> tuple[list[Path], np.ndarray]:
    """The images that ``base/MAT.mat`` names (``KEY_set``) in ``base/FOLDER``, with their
    identities (``KEY_ids``): the QMUL releases' id files."""
    images = require(base / folder, f"{folder} folder")
    path = base / f"{mat}.mat"
    arrays = read_mat(path, (f"{key}_set", f"{key}_ids"), "id file")
    names, ids = strings(arrays[f"{key}_set"]), numbers(arrays[f"{key}_ids"])
    if len(names) != len(ids):
        raise DataError(f"{path}: {key}_set has {len(names)} entries, {key}_ids has {len(ids)}")
    paths = [images / n for n in names]
    for file in paths:
        if not file.is_file():
            raise DataError(f"{path}: names {file.name}, which is not in {images}")
    return paths, ids


def image_files(folder: Path) -> list[Path]:
    require(folder, "image folder")
    suffixes = {".jpg", ".jpeg", ".png", ".bmp"}
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes)


def unique(conditions: list) -> list:
    """Each condition once (a dict condition is not hashable: compared by name), in the order
    every table and plot uses: resolutions ascending, then the other degradations as given, full
    resolution last."""
    once = list({condition_label(c): c for c in conditions}.values())

    def place(condition) -> tuple[int, int]:
        if condition is None:
            return (2, 0)
        if isinstance(condition, int):
            return (0, condition)
        return (1, 0)  # sorted() is stable: degradations keep their given order

    return sorted(once, key=place)


def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def provenance_lines(report: dict) -> list[str]:
    lines = []
    for name, model in report["models"].items():
        data = model["provenance"].get("training_data")
        if isinstance(data, list) and data:
            lines.append(f"{name} trained on {data[0]['train']}.")
        else:
            lines.append(f"{name}: training data unknown.")
    return lines
