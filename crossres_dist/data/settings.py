"""The data section of the configuration (``data.*``): where the faces are, how they are
split, read, checked and turned into views; owned by the data package with its own checks.
crossres_dist/config.py composes it. Nothing here imports the pipelines: the section is plain
values, read by data.views and data.run_data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from crossres_dist.settings_rules import first_not_probability


@dataclass
class DataConfig:
    # The labelled faces: an ImageFolder directory, a list file ("relative/path label" per line)
    # or a packed set; or a list of them, whose identities are kept apart (SOURCE/person, SOURCE
    # the folder's name); or "" for none (pure feature distillation: no classifier is built).
    train: list[str] | str = "embedded:orl"
    # Faces whose identity is unknown, trained on with the feature term alone (the teacher's
    # descriptor of the clean face is the target): folders (every image under them), list files
    # or packed sets. Never split: validation and test come from data.train or their own folders.
    unlabelled: list[str] = field(default_factory=list)
    # Validation (chooses best.pt and drives the plateau schedule): "split:K" holds out K images
    # of every identity of `train`; or a separate ImageFolder / list file.
    val: str = "split:3"
    # Test (reported by crossres_dist.evaluate, never seen by training or selection): "split:K",
    # a separate ImageFolder / list file, or "" (evaluate on another data set).
    test: str = ""
    # Draws the held-out images. Not run.seed: runs with other seeds share the same split.
    split_seed: int = 0
    # Root that list-file paths are relative to (default: the list file's folder).
    root: str = ""
    # The input pipeline: "dali" (GPU or CPU operators), "torchvision" (the twin) or "auto".
    backend: Literal["auto", "dali", "torchvision"] = "auto"
    # Faces are resized to this shorter side (pixels) before the crop.
    resize_shorter: int = 256
    # The square crop (pixels) both networks see.
    crop: int = 224
    # Both views of a training image turned grey with this probability.
    grayscale_p: float = 0.2
    # Both views of a training image mirrored left-right with this probability (the paper: 0).
    hflip_p: float = 0.0
    # Images per rank per forward pass.
    micro_batch: int = 32
    # Input-pipeline threads per rank: DALI on the CPU runs one single-threaded pipeline per
    # thread, on a GPU they feed the device; the twin uses them as DataLoader workers.
    num_threads: int = 2
    # Unusable files found before the run: refused (false), or left out (true).
    skip_bad_files: bool = False
    # A file that fails to decode during the run is named and left out, and the run goes on,
    # until more than this fraction of the training files (at least one file) has failed.
    max_bad_fraction: float = 0.001
    # Before the first step every rank checks its share of the files: "full" decodes them,
    # "header" only opens them (for millions of files; run crossres_dist.data.check once).
    check: Literal["full", "header", "off"] = "full"
    # Files a check_data manifest verified (same size and mtime) are not checked again:
    # "auto" (the data set's own .crossres-manifest.jsonl, if there is one), a path, or "".
    manifest: str = "auto"
    # An identity with fewer training images than this is refused.
    min_images_per_identity: int = 1
    # Images with a shorter side below this (pixels) are counted at start-up.
    min_side: int = 16
    # insightface's verification sets scored at every validation (rank 0 reports; every rank
    # embeds its share): a list of .bin files, or "auto", the *.bin files beside a packed
    # data.train (insightface's val_targets: lfw.bin, cfp_fp.bin, agedb_30.bin ...).
    verification: list[str] | str = field(default_factory=list)

    def labelled_sources(self) -> list[str]:
        """data.train as a list ("" or []: none)."""
        if isinstance(self.train, str):
            return [self.train] if self.train else []
        return [s for s in self.train if s]

    @property
    def first_source(self) -> str:
        """Where settings that look beside the data (manifest, verification: auto) look: the
        first labelled source, else the first unlabelled one."""
        return (self.labelled_sources() or list(self.unlabelled) or [""])[0]

    def problem(self) -> str | None:
        if not self.labelled_sources() and not self.unlabelled:
            return "data.train: names no faces, and data.unlabelled is empty: give one of them"
        if not self.labelled_sources() and self.val.startswith("split:"):
            return (
                f"data.val: {self.val} holds out images of data.train's people, and data.train "
                "names none: give a separate folder of faces to validate on"
            )
        if self.micro_batch <= 0:
            return "data.micro_batch: must be > 0"
        if self.num_threads < 1:
            return f"data.num_threads: {self.num_threads}: needs at least 1 thread"
        if self.crop > self.resize_shorter:
            return (
                f"data.crop: {self.crop} exceeds data.resize_shorter={self.resize_shorter}; "
                "lower the crop or raise resize_shorter"
            )
        if isinstance(self.verification, str) and self.verification not in ("", "auto"):
            if not self.verification.endswith(".bin"):
                return (
                    f"data.verification: {self.verification!r} is neither 'auto' nor a list of "
                    ".bin files"
                )
        return first_not_probability(self, "data", ("grayscale_p", "hflip_p", "max_bad_fraction"))


def unlabelled_problems(c) -> Iterator[str]:
    """What faces without an identity label (data.unlabelled) or a run without any labelled
    source cannot be combined with, in the composed configuration `c` (config.py asks; the
    rules are the data's, the sections they meet are other packages')."""
    if c.data.unlabelled:
        if c.run.stage != "crossres" or c.method.lambda_feat <= 0:
            yield (
                "data.unlabelled: faces without a label train the feature term alone; with "
                f"run.stage={c.run.stage} and method.lambda_feat={c.method.lambda_feat} they would "
                "be read for nothing: leave them out"
            )
        if c.head.partial_fc:
            yield (
                "data.unlabelled: head.partial_fc gathers every face's label across the ranks and "
                "has no place for a face without one; set head.partial_fc=false"
            )
        if c.method.feature_weight != "none":
            yield (
                f"data.unlabelled: method.feature_weight={c.method.feature_weight} weighs a face "
                "by the teacher's view of its identity, which an unlabelled face does not have; "
                "set method.feature_weight=none"
            )
    if not c.data.labelled_sources() and c.val.select_by == "top1":
        yield (
            "val.select_by: top1 needs a classifier, and data.train names no labelled source: "
            "set val.select_by=feature (or verification)"
        )
