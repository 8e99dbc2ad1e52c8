"""One checkpoint manager: interval saves, keep-latest-K, the best by a metric, auto-resume.

A checkpoint is written to ``*.tmp``, flushed to disk and renamed into place (run_directory.py), so a
file named ``step_*.pt`` is complete when it is written; a process killed during a save leaves
only a ``.tmp`` that is removed on the next start. Only rank 0 writes, and only rank 0 decides
what to resume from (the others load the file it names), so that every rank resumes from the same
step even when one of them would have read a damaged file differently.

What cannot wedge a run directory:
- an unreadable checkpoint (a node lost power, a disk filled) is moved to ``checkpoints/corrupt/``
  and never counts toward keep-last, so pruning cannot delete the good ones instead;
- if no step checkpoint is readable, ``best.pt`` (a whole checkpoint too) is the fallback;
- if nothing is readable the run refuses to start rather than silently start over: starting from
  step 0 needs ``checkpoint.resume=never``, which moves the old checkpoints aside (never deletes
  them);
- a missing or unreadable ``best.pt`` is written again at the next validation.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Protocol

import torch

from crossres_dist import distributed
from crossres_dist.checkpointing import run_directory as rundir
from crossres_dist.errors import CrossresError, SetupError

log = logging.getLogger(__name__)

STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")


class CheckpointError(CrossresError, RuntimeError):
    """The run directory's checkpoints cannot be resumed from; the message says what to do."""


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module under DDP / torch.compile wrappers, so saved keys carry no prefixes."""
    while True:
        inner = getattr(module, "module", None) or getattr(module, "_orig_mod", None)
        if inner is None:
            return module
        module = inner


def atomic_save(obj: Any, path: Path, die_midway: bool = False) -> None:
    def die(f) -> None:  # fault injection (debug.inject_kill_during_save): a half-written file
        f.truncate(f.tell() // 2)
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    rundir.atomic_write(path, lambda f: torch.save(obj, f), on_open=die if die_midway else None)


def _copy_into(path: Path, out) -> None:
    with open(path, "rb") as f:
        shutil.copyfileobj(f, out, 1 << 24)


def load_checkpoint(path: Path) -> dict:
    """Our own checkpoints hold only tensors, numbers, strings and containers: no code runs."""
    return torch.load(path, map_location="cpu", weights_only=True)


class Stateful(Protocol):
    """A part of the checkpoint: the top-level keys it writes, read back from the whole."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class Keyed:
    """A component whose state is one key of the checkpoint (the optimizer, the schedule, the
    loss scaler: anything with torch's state_dict / load_state_dict)."""

    def __init__(self, key: str, component) -> None:
        self.key, self.component = key, component

    def state_dict(self) -> dict:
        return {self.key: self.component.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.component.load_state_dict(state[self.key])


class CheckpointManager:
    """Where the checkpoints are and which to keep; the parts a checkpoint is made of are
    registered with it (``register``), each Stateful, and it puts them together
    (``state_dict``) and restores them (``load_state_dict``) in the order they were registered.
    A later part may overwrite an earlier part's keys (PartialFC writes the whole classifier
    over the network's slice)."""

    def __init__(
        self,
        run_dir: Path,
        keep_last: int = 2,
        is_writer: bool = True,
    ) -> None:
        # debug.inject_kill_during_save (the fault-injection tests set it after construction).
        self.kill_during_save_step = 0
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last
        self.is_writer = is_writer
        self.best_metric: float | None = None
        self.parts: dict[str, Stateful] = {}

    def preflight(self, student: torch.nn.Module) -> None:
        """Before the first step (the writer): the run directory is writable and has room for
        this student's checkpoints (about three times its weights: the weights, the
        optimizer's momentum, the rest)."""
        weights = sum(t.numel() * t.element_size() for t in student.state_dict().values())
        rundir.preflight(self.dir.parent, 3 * weights)

    def register(self, **parts: Stateful) -> None:
        self.parts.update(parts)

    def state_dict(self) -> dict:
        """The checkpoint of the registered parts (every rank takes part: a part may gather)."""
        state: dict = {}
        for part in self.parts.values():
            state.update(part.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        """Every part from `state`, then the best metric it carries."""
        for part in self.parts.values():
            part.load_state_dict(state)
        self.restore_best(state.get("best_metric"))

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
        so far (higher is better) or best.pt is missing. The state records the best metric
        *including* this one, so a run resumed from it cannot let a worse one replace best.pt.
        Returns the path written (rank 0) or None."""
        new_best = metric is not None and (
            self.best_metric is None
            or metric > self.best_metric
            or (self.is_writer and not self.best_path.is_file())
        )
        if new_best:
            self.best_metric = metric
        state["best_metric"] = self.best_metric
        if not self.is_writer:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.step_path(step)
        die = self.kill_during_save_step > 0 and step == self.kill_during_save_step
        previous = self.complete()
        try:
            atomic_save(state, path, die_midway=die)
        except rundir.DiskFullError as err:
            need = previous[-1].stat().st_size if previous else 0
            free = shutil.disk_usage(self.dir).free
            raise rundir.DiskFullError(
                err.errno,
                f"disk full: cannot write {path.name} in {self.dir}: a checkpoint needs about "
                f"{rundir._size(need)}, {rundir._size(free)} are free; free some space (the "
                f"last complete checkpoint is kept) or move run.output_dir",
            ) from None
        if new_best:
            rundir.atomic_write(self.best_path, lambda f: _copy_into(path, f))
        for old in self.complete()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def _set_aside(self, path: Path, folder: str, why: str) -> None:
        folder_path = self.dir / folder
        folder_path.mkdir(exist_ok=True)
        target, n = folder_path / path.name, 0
        while target.exists():  # never over an earlier file of the same name
            n += 1
            target = folder_path / f"{path.name}.{n}"
        os.replace(path, target)
        log.warning("%s: %s; moved to %s", path, why, target)

    def start_fresh(self) -> None:
        """checkpoint.resume=never: the checkpoints of an earlier run move aside, none is
        deleted."""
        if not self.is_writer:
            return
        old = self.complete() + ([self.best_path] if self.best_path.is_file() else [])
        if old:
            folder = f"superseded-{time.strftime('%Y%m%d-%H%M%S')}"
            for path in old:
                self._set_aside(path, folder, "checkpoint.resume=never starts over")

    def find_latest(self) -> tuple[Path, dict] | None:
        """Rank 0: the newest checkpoint that loads (a step file, else best.pt). Partial files
        are removed, unreadable ones set aside; nothing readable but something unreadable is a
        CheckpointError, not a silent start from step 0."""
        for tmp in self.partial():
            log.warning("removing a partial checkpoint (a save was interrupted): %s", tmp)
            tmp.unlink(missing_ok=True)
        unreadable = 0
        for path in reversed(self.complete()):
            try:
                return path, load_checkpoint(path)
            except Exception as err:  # a truncated or corrupt file: fall back to an older one
                unreadable += 1
                self._set_aside(path, "corrupt", f"unreadable ({type(err).__name__})")
        best = self._readable_best()
        if best is not None:
            log.warning("no readable step checkpoint: resuming from %s", self.best_path)
            return self.best_path, best
        if unreadable:
            raise CheckpointError(
                f"checkpoint.resume: every checkpoint in {self.dir} is unreadable ({unreadable} "
                f"moved to {self.dir / 'corrupt'}/); restore one there, or set "
                "checkpoint.resume=never to start over from step 0"
            )
        return None

    def _readable_best(self) -> dict | None:
        if not self.best_path.is_file():
            return None
        try:
            return load_checkpoint(self.best_path)
        except Exception as err:
            self._set_aside(self.best_path, "corrupt", f"unreadable ({type(err).__name__})")
            return None

    def restore_best(self, best_metric: float | None) -> None:
        """The best metric of a resumed run; forgotten if best.pt is gone (deleted by hand, or
        set aside), so that the next validation writes best.pt again."""
        self.best_metric = best_metric
        if best_metric is not None and self.is_writer and not self.best_path.is_file():
            log.warning(
                "%s is missing (its metric was %.4f): the next validated checkpoint becomes best",
                self.best_path,
                best_metric,
            )
            self.best_metric = None


def resume_point(manager: CheckpointManager, mode: str) -> dict | None:
    """The state every rank resumes from (None: a fresh start). Rank 0 chooses the checkpoint
    (setting aside what it cannot read); every rank loads the one it names, so all resume from
    the same step. `mode` is checkpoint.resume ("never" moves earlier checkpoints aside)."""
    chosen, state, error = None, None, None
    if manager.is_writer:
        try:
            if mode == "never":
                manager.start_fresh()
            else:
                found = manager.find_latest()
                if found is not None:
                    chosen, state = str(found[0]), found[1]
        except CheckpointError as err:
            error = str(err)
    chosen, error = distributed.broadcast_object((chosen, error))
    if error:
        raise SetupError(error)
    if chosen is None:
        return None
    log.info("resuming from %s", chosen)
    return state if manager.is_writer else load_checkpoint(Path(chosen))


def save_agreed(
    manager: CheckpointManager,
    state: dict,
    step: int,
    device: torch.device,
    metric: float | None = None,
) -> None:
    """Rank 0 writes alone; the others learn here whether it could, and stop with it."""
    error, path = None, None
    try:
        path = manager.save(state, step, metric)
    except rundir.DiskFullError as err:
        error = err
    distributed.agree_on_failure(error, device, "rank 0 could not write a checkpoint")
    if path is not None:
        log.info("checkpoint %s", path)
