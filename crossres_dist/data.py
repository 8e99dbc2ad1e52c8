"""The files a run reads, checked before the first step.

Every rank checks its share; rank 0 reports. Validation images are always decoded (there are few
of them, and a validation batch cannot skip a file the way training can); training images as
``data.check`` says, taking files that a ``check_data`` manifest already verified (same size and
mtime) as recorded. Unusable files are refused, or skipped with ``data.skip_bad_files=true``;
files that train but in another mode (CMYK, 16-bit, palette, alpha) or below ``data.min_side``
are counted in one line each.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipelines.degradations import parse_steps
from pipelines.sources import DataError, Sample

from .check_data import Manifest, check_files, default_manifest, is_fatal
from .errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class FileReport:
    # path -> the fatal problem that excludes it
    unusable: dict[str, str] = field(default_factory=dict)
    # problem -> how many files have it (non-fatal: they train)
    notes: Counter = field(default_factory=Counter)
    from_manifest: int = 0

    def summary(self) -> str:
        kinds = Counter(self.unusable.values())
        return ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))


def load_manifest(setting: str, train: str) -> Manifest | None:
    """``data.manifest``: "auto" (the data set's own, if check_data wrote one), a path, or ""."""
    if not setting:
        return None
    path = default_manifest(train) if setting == "auto" else Path(setting)
    if not path.is_file():
        if setting == "auto":
            return None
        raise DataError(
            f"data.manifest: {path} not found (write one with crossres_dist.check_data)"
        )
    return Manifest.load(path)


def check_run_files(
    train: list[Sample],
    val: list[Sample],
    data_cfg,
    rank: int,
    world: int,
) -> FileReport:
    """Check this rank's share of the files and gather everyone's findings (all ranks)."""
    manifest = load_manifest(data_cfg.manifest, data_cfg.train)
    mine_val = [s.path for s in val[rank::world]]
    mine_train = [s.path for s in train[rank::world]] if data_cfg.check != "off" else []
    workers = max(1, data_cfg.num_threads)
    results, _ = check_files(mine_val, data_cfg.min_side, True, manifest, workers)
    decode = data_cfg.check == "full"
    train_results, _ = check_files(
        mine_train, data_cfg.min_side, decode, manifest, workers, progress=rank == 0
    )
    results.update(train_results)
    known = sum(manifest.recorded(p) is not None for p in mine_train + mine_val) if manifest else 0
    mine = FileReport(from_manifest=known)
    for path, problems in results.items():
        fatal = [p for p in problems if is_fatal(p)]
        if fatal:
            mine.unusable[path] = fatal[0]
        else:
            mine.notes.update(problems)
    if world == 1:
        return mine
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, mine)
    report = FileReport()
    for part in gathered:
        report.unusable.update(part.unusable)
        report.notes.update(part.notes)
        report.from_manifest += part.from_manifest
    return report


def report_files(report: FileReport, data_cfg, total: int) -> None:
    """One line per finding on rank 0; unusable files refused unless data.skip_bad_files."""
    if report.from_manifest:
        log.info("data: %d of %d files verified by the manifest", report.from_manifest, total)
    modes = {k: n for k, n in report.notes.items() if k.startswith("unsupported_mode_")}
    if modes:
        listed = ", ".join(f"{k.removeprefix('unsupported_mode_')} {n}" for k, n in modes.items())
        log.warning(
            "data: %d image(s) in other modes (%s) train as 3-channel BGR: the decoder converts "
            "them (alpha dropped, 16-bit scaled to 8-bit, palettes expanded)",
            sum(modes.values()),
            listed,
        )
    if report.notes.get("duplicate"):
        log.warning(
            "data: %d image(s) have the same contents as another image of the data set (recorded "
            "by check_data): `python -m crossres_dist.check_data` lists them; an image under two "
            "identities trains the classifier on a contradiction",
            report.notes["duplicate"],
        )
    small = {k: n for k, n in report.notes.items() if k.startswith("smaller_than_")}
    for kind, n in small.items():
        log.warning("data: %d image(s) %s (data.min_side) train up-sampled", n, kind)
    if not report.unusable:
        return
    first = sorted(report.unusable)[0]
    if not data_cfg.skip_bad_files:
        raise DataError(
            f"data: {len(report.unusable)} unusable image(s) ({report.summary()}), first "
            f"{first} ({report.unusable[first]}); `python -m crossres_dist.check_data` lists "
            "them all, or set data.skip_bad_files=true to train without them"
        )
    log.warning(
        "data: skipping %d unusable image(s) (%s), e.g. %s",
        len(report.unusable),
        report.summary(),
        first,
    )


def check_sizes(train: list[Sample], data_cfg, world: int) -> None:
    per_step = data_cfg.micro_batch * world
    if per_step > len(train):
        raise DataError(
            f"data.micro_batch: {data_cfg.micro_batch} x {world} rank(s) = {per_step} images per "
            f"micro-step, more than the {len(train)} training images; lower data.micro_batch"
        )


def validation_samples(held_out: list[Sample], data_cfg) -> list[Sample]:
    """The validation images kept (every `val_every_nth` from `val_offset`); refused when too
    few remain to choose a checkpoint, said when some held-out images are left unused."""
    kept = held_out[data_cfg.val_offset :: data_cfg.val_every_nth]
    if len(kept) < data_cfg.min_val_images:
        thinned = (
            f", every {data_cfg.val_every_nth}th kept by data.val_every_nth"
            if data_cfg.val_every_nth > 1
            else ""
        )
        raise DataError(
            f"data.val: {len(kept)} validation image(s) ({len(held_out)} held out by "
            f"data.val={data_cfg.val}{thinned}) are too few to choose a checkpoint "
            f"(data.min_val_images={data_cfg.min_val_images}); hold out more, lower "
            "data.val_every_nth, or lower data.min_val_images"
        )
    if len(kept) < len(held_out):
        log.info(
            "validation uses %d of the %d held-out images (data.val_every_nth=%d); the other %d "
            "are neither trained on nor validated",
            len(kept),
            len(held_out),
            data_cfg.val_every_nth,
            len(held_out) - len(kept),
        )
    return kept


def check_identities(train: list[Sample], identities: dict[str, int], data_cfg) -> None:
    """Every identity keeps data.min_images_per_identity training images."""
    counts = np.bincount([s.label for s in train], minlength=len(identities))
    if counts.min() < data_cfg.min_images_per_identity:
        names = {label: name for name, label in identities.items()}
        label = int(counts.argmin())
        raise DataError(
            f"data.min_images_per_identity: identity '{names[label]}' has {counts[label]} "
            f"training image(s), fewer than {data_cfg.min_images_per_identity}"
        )


def check_degradations(cfg) -> None:
    """method.degradations names steps the pipelines know, with probabilities in [0, 1]: checked
    here, where the pipelines' registry is known (the config module does not import them),
    before any process group or file is touched."""
    try:
        parse_steps(cfg.method.degradations)
    except ValueError as err:
        raise ConfigError(f"{cfg.source}: {err}") from None
