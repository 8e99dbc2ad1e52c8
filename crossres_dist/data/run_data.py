"""The run's data: the split (one for every rank, run, seed and evaluation), the label map, the
lineage of the checkpoints it starts from, and the checks of the files it reads
(``file_checks``) before the first step. How many classes the network has and how many
micro-steps make one optimizer step are the training's to decide (``training``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossres_dist import distributed
from crossres_dist.checkpointing import run_directory as rundir
from crossres_dist.data.check import refuse_undecodable
from crossres_dist.data.file_checks import check_run_files, report_files
from crossres_dist.data.settings import DataConfig
from crossres_dist.errors import SetupError
from crossres_dist.verification import image_namer, images_of, load_sets, verification_paths
from crossres_dist.weights import lineage_of
from pipelines import choose_backend
from pipelines.sources import (
    UNLABELLED,
    DataError,
    Sample,
    SplitSpec,
    collector_paused,
    load_splits,
    sample_key,
    seen_by,
)

log = logging.getLogger(__name__)


def check_sizes(train: list[Sample], data_cfg: DataConfig, world: int) -> None:
    per_step = data_cfg.micro_batch * world
    if per_step > len(train):
        raise DataError(
            f"data.micro_batch: {data_cfg.micro_batch} x {world} rank(s) = {per_step} images per "
            f"micro-step, more than the {len(train)} training images; lower data.micro_batch"
        )


@dataclass(frozen=True)
class ValidationChoice:
    """The validation section's part that the data decides before the first step: which
    held-out images validation keeps (val.every_nth, val.offset, val.min_images) and whether
    the verification sets choose best.pt (val.select_by)."""

    every_nth: int
    offset: int
    min_images: int
    select_by: str


def validation_samples(
    held_out: list[Sample], data_cfg: DataConfig, val_cfg: ValidationChoice
) -> list[Sample]:
    """The validation images kept (every `val.every_nth` from `val.offset`); refused when too
    few remain to choose a checkpoint, said when some held-out images are left unused."""
    kept = held_out[val_cfg.offset :: val_cfg.every_nth]
    if len(kept) < val_cfg.min_images:
        thinned = (
            f", every {val_cfg.every_nth}th kept by val.every_nth" if val_cfg.every_nth > 1 else ""
        )
        raise DataError(
            f"data.val: {len(kept)} validation image(s) ({len(held_out)} held out by "
            f"data.val={data_cfg.val}{thinned}) are too few to choose a checkpoint "
            f"(val.min_images={val_cfg.min_images}); hold out more, lower "
            "val.every_nth, or lower val.min_images"
        )
    if len(kept) < len(held_out):
        log.info(
            "validation uses %d of the %d held-out images (val.every_nth=%d); the other %d "
            "are neither trained on nor validated",
            len(kept),
            len(held_out),
            val_cfg.every_nth,
            len(held_out) - len(kept),
        )
    return kept


def check_identities(train: list[Sample], identities: dict[str, int], data_cfg: DataConfig) -> None:
    """Every identity keeps data.min_images_per_identity training images."""
    labels = [s.label for s in train if s.label != UNLABELLED]
    if not identities or not labels:
        return
    names = {label: name for name, label in identities.items()}
    counts = np.bincount(labels, minlength=len(identities))
    if counts.min() < data_cfg.min_images_per_identity:
        label = int(counts.argmin())
        raise DataError(
            f"data.min_images_per_identity: identity '{names.get(label, label)}' has "
            f"{counts[label]} "
            f"training image(s), fewer than {data_cfg.min_images_per_identity}"
        )


@dataclass
class RunData:
    """What a run trains and validates on, decided before the first step."""

    train: list[Sample]
    val: list[Sample]
    identities: dict[str, int]
    splits: dict
    held_out: dict[str, list[Sample]]
    skipped_before_run: set[str]
    verification: list  # the data.verification sets (crossres_dist.verification), checked

    @property
    def num_classes(self) -> int:
        return len(self.identities)


@collector_paused()
def prepare_run_data(
    data_cfg: DataConfig,
    choice: ValidationChoice,
    *,
    run_dir: Path,
    resume_state: dict | None,
    checkpoints_dir: Path,
    rank: int,
    world: int,
) -> RunData:
    """One split for every rank, run, seed and evaluation (drawn with data.split_seed, recorded
    in every checkpoint), one label map (the checkpoint's on resume), and the files checked."""
    started = time.perf_counter()
    split_spec = SplitSpec.from_config(data_cfg)
    if resume_state is not None:
        check_same_split(resume_state, split_spec, checkpoints_dir)
    label_file = run_dir / "identities.json"
    splits = load_splits(split_spec, label_map(resume_state, label_file, rank))
    if not splits.train.samples and not splits.unlabelled:
        raise SetupError(f"data.train: {data_cfg.train} has no training images")
    val_samples = validation_samples(splits.val.samples, data_cfg, choice)
    verification = verification_sets(data_cfg, choice.select_by, run_dir, rank, world)
    train_set = splits.train
    # One epoch is every labelled and every unlabelled face, shuffled together.
    trained_on = [*train_set.samples, *splits.unlabelled]
    files = check_run_files(trained_on, val_samples, data_cfg, rank, world)
    # Every rank holds the gathered report: all refuse with the same line (rank 0 logs).
    report_files(files, data_cfg, len(trained_on) + len(val_samples))
    train_samples = [s for s in trained_on if s.path not in files.unusable]
    val_samples = [s for s in val_samples if s.path not in files.unusable]
    check_sizes(train_samples, data_cfg, world)
    check_identities(train_samples, train_set.identities, data_cfg)
    described = splits.describe()
    if rank == 0:
        rundir.write_json(label_file, train_set.identities)
        rundir.write_json(run_dir / "splits.json", described)
    unlabelled = sum(s.label == UNLABELLED for s in train_samples)
    if unlabelled:
        log.info(
            "data: %d of the training faces have no identity label (data.unlabelled): the "
            "feature term alone trains on them",
            unlabelled,
        )
    log.info(
        "data: %d training, %d validation and %d test images of %d identities "
        "(split_seed %d; %s backend; listed and checked in %.1f s)",
        len(train_samples),
        len(val_samples),
        described["counts"]["test"],
        train_set.num_classes,
        data_cfg.split_seed,
        choose_backend(data_cfg.backend),
        time.perf_counter() - started,
    )
    return RunData(
        train=train_samples,
        val=val_samples,
        identities=train_set.identities,
        splits=described,
        held_out={
            "val": splits.val.samples,
            "test": splits.test.samples if splits.test else [],
        },
        skipped_before_run=set(files.unusable),
        verification=verification,
    )


def verification_sets(
    data_cfg: DataConfig, select_by: str, run_dir: Path, rank: int, world: int
) -> list:
    """data.verification's sets, read and every image decoded (each rank its share) before any
    network is built; val.select_by=verification with no set found is refused here."""
    paths = verification_paths(data_cfg.verification, data_cfg.first_source)
    if not paths and select_by == "verification":
        raise SetupError(
            f"val.select_by: verification, but data.verification={data_cfg.verification!r} "
            f"finds no .bin set (auto looks beside data.train, {data_cfg.train}): put the sets "
            "there, list them, or set val.select_by=top1"
        )
    sets = load_sets(paths, rank, world, run_dir / "cache" / "bins")
    refuse_undecodable(
        images_of(sets),
        rank,
        world,
        data_cfg.num_threads,
        image_namer(sets),
        "images of the verification sets",
    )
    for vset in sets:
        log.info("verification set %s: %d pairs (%s)", vset.name, vset.pairs, vset.path)
    return sets


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
    # Runs without unlabelled faces record no such key: compare it both ways.
    for key, value in {"unlabelled": [], **spec.as_dict()}.items():
        if recorded.get(key, [] if key == "unlabelled" else None) != value:
            raise SetupError(
                f"data.{key}: the checkpoint in {checkpoints_dir} was trained with "
                f"{key}={recorded.get(key)!r}, this run asks for {value!r}; resume with the "
                "same data split (or start a new run.name)"
            )


def record_lineage(
    sources: list[str],
    resume_state: dict | None,
    held_out_parts: dict[str, list[Sample]],
    splits: dict,
    is_main: bool,
) -> list[dict]:
    """What the checkpoints this run starts from (`sources`) were trained on, kept in every
    checkpoint so that the evaluator can refuse images any of them saw. A teacher that trained
    on this run's validation or test images is reported: the student's numbers would leak."""
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
