"""The data section of the configuration (``data.*``): where the faces are, how they are
split, read, checked and turned into views; owned by the data package with its own checks.
crossres_dist/config.py composes it. Nothing here imports the pipelines: the section is plain
values, read by data.views and data.run_data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from crossres_dist.settings_rules import first_not_probability


@dataclass
class DataConfig:
    # An ImageFolder directory or a list file ("relative/path label" per line).
    train: str = "embedded:orl"
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

    def problem(self) -> str | None:
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
