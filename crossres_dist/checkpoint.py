"""One checkpoint manager: interval saves, keep-latest-K, the best by a metric, auto-resume.

A checkpoint is written to ``*.tmp``, flushed to disk and renamed into place, so a file named
``step_*.pt`` is complete: a process killed during a save leaves only a ``.tmp`` that is ignored
(and reported) on the next start. Only rank 0 writes; every rank reads.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module under DDP / torch.compile wrappers, so saved keys carry no prefixes."""
    while True:
        inner = getattr(module, "module", None) or getattr(module, "_orig_mod", None)
        if inner is None:
            return module
        module = inner


def atomic_save(obj: Any, path: Path, die_midway: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        if die_midway:  # fault injection (train.inject_kill_during_save): a half-written file
            f.truncate(f.tell() // 2)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: Path) -> dict:
    """Our own checkpoints hold only tensors, numbers, strings and containers: no code runs."""
    return torch.load(path, map_location="cpu", weights_only=True)


class CheckpointManager:
    def __init__(
        self,
        run_dir: Path,
        keep_last: int = 2,
        is_writer: bool = True,
        kill_during_save_step: int = 0,
    ) -> None:
        self.kill_during_save_step = kill_during_save_step
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last
        self.is_writer = is_writer
        self.best_metric: float | None = None
        if is_writer:
            self.dir.mkdir(parents=True, exist_ok=True)

    def step_path(self, step: int) -> Path:
        return self.dir / f"step_{step:08d}.pt"

    @property
    def best_path(self) -> Path:
        return self.dir / "best.pt"

    def complete(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if STEP_FILE.match(p.name))

    def partial(self) -> list[Path]:
        return sorted(self.dir.glob("*.tmp")) if self.dir.is_dir() else []

    def save(self, state: dict, step: int, metric: float | None = None) -> Path | None:
        """Write `state` as the checkpoint of `step`; also as best.pt if `metric` beats the best
        so far (higher is better). Returns the path written (rank 0) or None."""
        if not self.is_writer:
            return None
        path = self.step_path(step)
        die = self.kill_during_save_step > 0 and step == self.kill_during_save_step
        atomic_save(state, path, die_midway=die)
        if metric is not None and (self.best_metric is None or metric > self.best_metric):
            self.best_metric = metric
            tmp = self.best_path.with_name("best.pt.tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, self.best_path)
        for old in self.complete()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def latest(self) -> tuple[Path, dict] | None:
        """The newest checkpoint that loads; partial and unreadable ones are reported and skipped."""
        for tmp in self.partial():
            log.warning("ignoring a partial checkpoint (a save was interrupted): %s", tmp)
            if self.is_writer:
                tmp.unlink(missing_ok=True)
        for path in reversed(self.complete()):
            try:
                return path, load_checkpoint(path)
            except Exception as err:  # a truncated or corrupt file: fall back to an older one
                log.warning("skipping unreadable checkpoint %s: %s", path, err)
        return None
