"""The checkpoint section of the configuration (``checkpoint.*``): whether a run resumes, how
often it saves, what it keeps and when a run directory's lock is taken over; owned by the
checkpointing package with its own checks. crossres_dist/config.py composes it (and reads the
keys' old homes, run.resume, run.lock_stale_s, train.checkpoint_every and train.keep_last)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class CheckpointConfig:
    # "auto": resume from the newest readable checkpoint (refused if there are checkpoints but
    # none is readable); "never": start from step 0, moving earlier checkpoints aside.
    resume: Literal["auto", "never"] = "auto"
    # Write a checkpoint every this many optimizer steps.
    every: int = 100
    # Checkpoints kept besides best.pt (at least 2).
    keep_last: int = 2
    # A run directory is locked by its job; a lock held from another host whose heartbeat is
    # older than this (seconds) is taken over.
    lock_stale_s: int = 120

    def problem(self) -> str | None:
        if self.keep_last < 2:
            return "checkpoint.keep_last: keep at least 2 checkpoints so one survives a crash"
        if self.every <= 0:
            return "checkpoint.every: must be > 0"
        return None
