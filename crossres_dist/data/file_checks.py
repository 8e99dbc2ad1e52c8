"""The files a run reads, checked before the first step (every rank its share; rank 0 reports)
and the ones that fail during it: validation images are always decoded, training images as
``data.check`` says, taking what a ``check_data`` manifest verified (same size and mtime) as
recorded. Unusable files are refused, or skipped with ``data.skip_bad_files=true``; files that
train in another mode or below ``data.min_side`` are counted in one line each."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from crossres_dist import distributed
from crossres_dist.data.check import Manifest, check_file, check_files, find_manifest, first_fatal
from crossres_dist.data.settings import DataConfig
from pipelines import choose_backend
from pipelines.dali_pipeline import dali_decode_error
from pipelines.packed import parse_locator
from pipelines.sources import (
    DataError,
    Sample,
)

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
    """``data.manifest``: "auto" (the one check_data wrote, in the data set's folder or, for a
    read-only one, in the cache), a path, or ""."""
    if not setting:
        return None
    path = find_manifest(train) if setting == "auto" else Path(setting)
    if path is None or not path.is_file():
        if setting == "auto":
            return None
        raise DataError(
            f"data.manifest: {path} not found (write one with crossres_dist.data.check)"
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
    manifest = load_manifest(data_cfg.manifest, data_cfg.first_source)
    mine_val = [s.path for s in val[rank::world]]
    mine_train = [s.path for s in train[rank::world]] if data_cfg.check != "off" else []
    if train and parse_locator(train[0].path) is not None:
        # A packed set: start-up reads its index only. What check_data's manifest records is
        # taken from it; a bad record met during the run is named and skipped.
        if rank == 0:
            log.info(
                "data.check on a packed set: the index only, and the check_data manifest if any "
                "(python -m crossres_dist.data.check %s decodes every record)",
                data_cfg.first_source,
            )
        recorded = manifest.recorded if manifest is not None else (lambda path: None)
        mine_val = [p for p in mine_val if recorded(p) is not None]
        mine_train = [p for p in mine_train if recorded(p) is not None]
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
        if fatal := first_fatal(problems):
            mine.unusable[path] = fatal
        else:
            mine.notes.update(problems)
    if world == 1:
        return mine
    report = FileReport()
    for part in distributed.all_gather_objects(mine):
        report.unusable.update(part.unusable)
        report.notes.update(part.notes)
        report.from_manifest += part.from_manifest
    return report


def report_files(report: FileReport, data_cfg: DataConfig, total: int) -> None:
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
            "by check_data): `python -m crossres_dist.data.check` lists them; an image under two "
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
            f"{first} ({report.unusable[first]}); `python -m crossres_dist.data.check` lists "
            "them all, or set data.skip_bad_files=true to train without them"
        )
    log.warning(
        "data: skipping %d unusable image(s) (%s), e.g. %s",
        len(report.unusable),
        report.summary(),
        first,
    )


def undecodable(paths: list[str], backend: str, device: torch.device) -> dict[str, str]:
    """The files among `paths` that PIL, or the training backend's decoder, cannot decode."""
    bad = {}
    dali = choose_backend(backend) == "dali"
    device_id = device.index if device.type == "cuda" else None
    for path in paths:
        if fatal := first_fatal(check_file(path, 1, decode=True, with_digest=False)[0]):
            bad[path] = fatal
        elif dali and (why := dali_decode_error(path, device_id)):
            bad[path] = f"DALI cannot decode it: {why}"
    return bad


def excluded_during_run(
    bad: dict[str, str], position: int, planner, data_cfg: DataConfig, rank: int
) -> None:
    """A decode failure in training: the files are named, excluded, and the run goes on,
    unless more than data.max_bad_fraction of the training files have failed."""
    for path, why in bad.items():
        log.error(
            "data: %s cannot be decoded (%s): excluded; micro-batch %d rebuilt (rank %d)",
            path,
            why,
            position,
            rank,
        )
    total = len(planner.samples)
    limit = max(1, int(data_cfg.max_bad_fraction * total))
    if len(planner.excluded) > limit:
        raise DataError(
            f"data.max_bad_fraction: {len(planner.excluded)} of {total} training files "
            f"could not be decoded during the run (limit {limit}); check the data with "
            "`python -m crossres_dist.data.check` (data.check=full catches them before a run)"
        )
