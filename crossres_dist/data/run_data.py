"""The run's data: the split, the label map and the files it reads, checked before the first
step, and what happens to a file that fails to decode during the run.

Every rank checks its share; rank 0 reports. Validation images are always decoded (there are few
of them, and a validation batch cannot skip a file the way training can); training images as
``data.check`` says, taking files that a ``check_data`` manifest already verified (same size and
mtime) as recorded. Unusable files are refused, or skipped with ``data.skip_bad_files=true``;
files that train but in another mode (CMYK, 16-bit, palette, alpha) or below ``data.min_side``
are counted in one line each.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from crossres_dist import distributed
from crossres_dist.checkpointing import run_directory as rundir
from crossres_dist.data.check import Manifest, check_file, check_files, find_manifest, first_fatal
from crossres_dist.errors import ConfigError, SetupError
from crossres_dist.weights import lineage_of
from pipelines import Loader, ViewSettings, choose_backend
from pipelines.dali_pipeline import dali_decode_error
from pipelines.degradations import STEPS, Degradations, check_ranges, parse_steps
from pipelines.packed import parse_locator
from pipelines.sources import (
    DataError,
    Sample,
    SplitSpec,
    collector_paused,
    load_splits,
    sample_key,
    seen_by,
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
    manifest = load_manifest(data_cfg.manifest, data_cfg.train)
    mine_val = [s.path for s in val[rank::world]]
    mine_train = [s.path for s in train[rank::world]] if data_cfg.check != "off" else []
    if train and parse_locator(train[0].path) is not None:
        # A packed set: start-up reads its index only. What check_data's manifest records is
        # taken from it; a bad record met during the run is named and skipped.
        if rank == 0:
            log.info(
                "data.check on a packed set: the index only, and the check_data manifest if any "
                "(python -m crossres_dist.data.check %s decodes every record)",
                data_cfg.train,
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
    names = {label: name for name, label in identities.items()}
    counts = np.bincount([s.label for s in train], minlength=len(identities))
    if counts.min() < data_cfg.min_images_per_identity:
        label = int(counts.argmin())
        raise DataError(
            f"data.min_images_per_identity: identity '{names.get(label, label)}' has "
            f"{counts[label]} "
            f"training image(s), fewer than {data_cfg.min_images_per_identity}"
        )


def view_settings(cfg, spec) -> ViewSettings:
    """How the run's views are made: data.* sizes and draws, the network's own input
    normalisation (its spec), and the degradation steps of method.*."""
    return ViewSettings(
        cfg.data.resize_shorter,
        cfg.data.crop,
        cfg.data.grayscale_p,
        cfg.method.resolutions,
        cfg.data.hflip_p,
        spec.channels,
        spec.mean,
        spec.scale,
        Degradations(steps=parse_steps(cfg.method.degradations), **configured_ranges(cfg.method)),
    )


def configured_ranges(method_cfg) -> dict[str, list]:
    """Every registered step's range as configured, by its range key: a key of its own in the
    method section (resolutions, blur_sigma ...) or an entry of method.ranges."""
    ranges = {f"ranges.{name}": values for name, values in method_cfg.ranges.items()}
    for step in STEPS.values():
        if hasattr(method_cfg, step.range_key):
            ranges[step.range_key] = getattr(method_cfg, step.range_key)
    return ranges


def loader_for(cfg, views: ViewSettings, device: torch.device) -> Loader:
    """One loader settings object for every stream of batches the run makes."""
    return Loader(
        cfg.data.backend,
        views,
        cfg.data.micro_batch,
        device,
        cfg.data.num_threads,
        cfg.run.seed,
        cfg.method.interpolation,
    )


def check_degradations(cfg) -> None:
    """method.degradations names steps the pipelines know, with probabilities in [0, 1], and
    every step's range is one it allows (method.ranges names registered steps only): checked
    here, where the pipelines' registry is known (the config module does not import them),
    before any process group or file is touched."""
    try:
        parse_steps(cfg.method.degradations)
        check_ranges(configured_ranges(cfg.method))
    except ValueError as err:
        raise ConfigError(f"{cfg.source}: {err}") from None


@dataclass
class RunData:
    """What a run trains and validates on, decided before the first step."""

    train: list[Sample]
    val: list[Sample]
    num_classes: int
    identities: dict[str, int]
    splits: dict
    held_out: dict[str, list[Sample]]
    skipped_before_run: set[str]
    accumulation: int


@collector_paused()
def prepare_run_data(
    cfg, run_dir: Path, resume_state: dict | None, checkpoints_dir: Path, rank: int, world: int
) -> RunData:
    """One split for every rank, run, seed and evaluation (drawn with data.split_seed, recorded
    in every checkpoint), one label map (the checkpoint's on resume), the files checked, and the
    accumulation that keeps the global batch at any world size."""
    started = time.perf_counter()
    split_spec = SplitSpec.from_config(cfg.data)
    if resume_state is not None:
        check_same_split(resume_state, split_spec, checkpoints_dir)
    label_file = run_dir / "identities.json"
    splits = load_splits(split_spec, label_map(resume_state, label_file, rank))
    if not splits.train.samples:
        raise SetupError(f"data.train: {cfg.data.train} has no training images")
    val_samples = validation_samples(splits.val.samples, cfg.data)
    train_set = splits.train
    files = check_run_files(train_set.samples, val_samples, cfg.data, rank, world)
    # Every rank holds the gathered report: all refuse with the same line (rank 0 logs).
    report_files(files, cfg.data, len(train_set.samples) + len(val_samples))
    train_samples = [s for s in train_set.samples if s.path not in files.unusable]
    val_samples = [s for s in val_samples if s.path not in files.unusable]
    check_sizes(train_samples, cfg.data, world)
    check_identities(train_samples, train_set.identities, cfg.data)
    described = splits.describe()
    if rank == 0:
        rundir.write_json(label_file, train_set.identities)
        rundir.write_json(run_dir / "splits.json", described)
    num_classes = cfg.model.num_classes or train_set.num_classes
    if num_classes != train_set.num_classes:
        raise SetupError(
            f"model.num_classes: {num_classes}, but {cfg.data.train} has "
            f"{train_set.num_classes} identities; set model.num_classes=0 to infer it"
        )
    log.info(
        "data: %d training, %d validation and %d test images of %d identities "
        "(split_seed %d; %s backend; listed and checked in %.1f s)",
        len(train_samples),
        len(val_samples),
        described["counts"]["test"],
        num_classes,
        cfg.data.split_seed,
        choose_backend(cfg.data.backend),
        time.perf_counter() - started,
    )
    # Global batch = micro batch x ranks x accumulation, whatever the world size.
    per_step = cfg.data.micro_batch * world
    if cfg.optim.global_batch % per_step:
        raise SetupError(
            f"optim.global_batch={cfg.optim.global_batch} is not a multiple of "
            f"data.micro_batch x ranks = {cfg.data.micro_batch} x {world}; change one of them"
        )
    return RunData(
        train=train_samples,
        val=val_samples,
        num_classes=num_classes,
        identities=train_set.identities,
        splits=described,
        held_out={
            "val": splits.val.samples,
            "test": splits.test.samples if splits.test else [],
        },
        skipped_before_run=set(files.unusable),
        accumulation=cfg.optim.global_batch // per_step,
    )


def label_map(resume_state: dict | None, label_file: Path, rank: int) -> dict[str, int] | None:
    """The label map of this run: the checkpoint's on resume, else the run directory's (an
    earlier start wrote it), else None (made from the data). Decided on rank 0 and shared,
    so that no two ranks can read a file another is repairing."""
    if resume_state is not None:
        return resume_state["identities"]
    identities = None
    if rank == 0:
        identities = rundir.read_or_none(label_file, rundir.read_json, "label map")
        if identities is not None and not (
            isinstance(identities, dict) and all(isinstance(v, int) for v in identities.values())
        ):
            log.warning("label map %s is not a name -> label mapping: rebuilding it", label_file)
            identities = None
    return distributed.broadcast_object(identities)


def check_same_split(resume_state: dict, spec: SplitSpec, checkpoints_dir: Path) -> None:
    """A resumed run keeps the images it was split on: changing data.train, data.val,
    data.test or data.split_seed mid-run would train on held-out images."""
    recorded = resume_state.get("splits")
    if recorded is None:
        return
    for key, value in spec.as_dict().items():
        if recorded.get(key) != value:
            raise SetupError(
                f"data.{key}: the checkpoint in {checkpoints_dir} was trained with "
                f"{key}={recorded.get(key)!r}, this run asks for {value!r}; resume with the "
                "same data split (or start a new run.name)"
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


def excluded_during_run(bad: dict[str, str], position: int, planner, data_cfg, rank: int) -> None:
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


def record_lineage(cfg, resume_state, held_out_parts, splits, is_main: bool) -> list[dict]:
    """What the checkpoints this run starts from were trained on, kept in every checkpoint
    so that the evaluator can refuse images any of them saw. A teacher that trained on
    this run's validation or test images is reported: the student's numbers would leak."""
    sources = [cfg.teacher.checkpoint] if cfg.run.stage == "crossres" else []
    if cfg.student.init not in ("teacher", ""):
        sources.append(cfg.student.init)
    if resume_state is not None and "lineage" in resume_state:
        lineage = resume_state["lineage"]
    else:
        lineage = [record for source in sources for record in lineage_of(source)]
    if not is_main:
        return lineage
    held_out = {
        sample_key(s.path) for part in ("val", "test") for s in held_out_parts.get(part, [])
    }
    mine = {k: splits[k] for k in ("train", "val", "test", "root", "split_seed")}
    for record in lineage:
        if {k: record.get(k) for k in mine} == mine:
            continue  # the same split: disjoint by construction
        try:
            seen = seen_by(record)
        except DataError as err:
            log.warning("cannot check what an earlier checkpoint trained on: %s", err)
            continue
        leaked = held_out & seen.train
        if leaked:
            log.warning(
                "%d of this run's validation/test images (e.g. %s) were training images of "
                "the checkpoint it starts from (data.train=%s, split_seed=%s): its "
                "evaluation will be refused; train the teacher on the same data.split_seed",
                len(leaked),
                sorted(leaked)[0],
                record["train"],
                record["split_seed"],
            )
    return lineage
