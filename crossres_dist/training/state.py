"""The training run's own parts of a checkpoint (each Stateful, registered with the checkpoint
manager): the student with its spec, where the run is (TrainState, with every global random
generator, whole, so that a resumed run draws what an uninterrupted one would), and what the run
was (RunRecord)."""

from __future__ import annotations

import logging
import random
import resource
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from crossres_dist import distributed
from crossres_dist.checkpointing import run_directory as rundir
from crossres_dist.errors import SetupError
from crossres_dist.training.optimizer import accumulation_steps

if TYPE_CHECKING:  # annotations only: config.py composes this package's sections
    from crossres_dist.config import Config

log = logging.getLogger(__name__)


def random_state() -> dict:
    """Every global generator's whole state: Python's (with its cached Gaussian), NumPy's (with
    its position in the key and its cached Gaussian) and torch's CPU generator."""
    _, words, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": list(words),
        "python_gauss": gauss,
        "numpy": keys.tolist(),
        "numpy_pos": int(pos),
        "numpy_gauss": [int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }


def restore_random_state(saved: dict) -> None:
    """The state random_state() saved. Checkpoints written before the positions were kept resume
    with position 0, as they always did."""
    torch.set_rng_state(saved["torch"])
    random.setstate((3, tuple(saved["python"]), saved.get("python_gauss")))
    has_gauss, cached = saved.get("numpy_gauss", [0, 0.0])
    keys = np.array(saved["numpy"], np.uint32)
    np.random.set_state(("MT19937", keys, saved.get("numpy_pos", 0), has_gauss, cached))


class TrainState:
    """Where the run is: the optimizer steps taken, the images every rank has seen together (the
    data position and the curriculum's p follow from them), the non-finite steps skipped so far,
    and every global generator. Stateful: the checkpoint takes ``state_dict()`` and a resume
    hands it back to ``load_state_dict``, under the keys checkpoints have always used."""

    def __init__(self, p_at: Callable[[int], float]) -> None:
        self.p_at = p_at  # the curriculum's p for a number of images seen
        self.step = 0
        self.images_seen = 0
        self.nonfinite_total = 0

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "images_seen": self.images_seen,
            "curriculum_p": self.p_at(self.images_seen),
            "nonfinite_total": self.nonfinite_total,
            "random": random_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        self.images_seen = state["images_seen"]
        self.nonfinite_total = state.get("nonfinite_total", 0)
        restore_random_state(state["random"])


class StudentState:
    """The student's weights and spec. They are read back when the network is built
    (student_teacher.build_networks: before it is wrapped and compiled), not here."""

    def __init__(self, student: torch.nn.Module) -> None:
        self.student = student

    def state_dict(self) -> dict:
        return {"student": self.student.state_dict(), "model_spec": self.student.spec.as_dict()}

    def load_state_dict(self, state: dict) -> None:
        return None


class RunRecord:
    """What the run was: its config, label map, splits, lineage and number of ranks, kept with
    every checkpoint for evaluation and the exports. On resume only the number of ranks is news."""

    def __init__(self, cfg: Config, identities, splits, lineage, world: int) -> None:
        self.cfg, self.identities, self.splits = cfg, identities, splits
        self.lineage, self.world = lineage, world

    def state_dict(self) -> dict:
        return {
            "config": self.cfg.to_dict(),
            "identities": self.identities,
            "splits": self.splits,
            "lineage": self.lineage,
            "world_size": self.world,
        }

    def load_state_dict(self, state: dict) -> None:
        was = state.get("world_size", self.world)
        if was != self.world:
            # The data position is the step x the global batch, and each image's draws depend on
            # its position only, so a run resumed on another number of ranks sees the same data.
            # The global batch is the run's: the accumulation makes it up on these ranks.
            micro, batch = self.cfg.data.micro_batch, self.cfg.optim.global_batch
            saved_micro = state.get("config", {}).get("data", {}).get("micro_batch", micro)
            log.info(
                "resuming a %d-rank run on %d rank%s: accumulation %d -> %d, the global batch "
                "of %d kept",
                was,
                self.world,
                "" if self.world == 1 else "s",
                accumulation_steps(batch, saved_micro, was),
                accumulation_steps(batch, micro, self.world),
                batch,
            )


def check_resumable(state: dict, total_steps: int, global_batch: int, where: Path) -> None:
    """A checkpoint this run can continue: one line naming the key to change otherwise."""
    if state["step"] > total_steps:
        # Training cannot be undone: a shorter run than the one resumed is a mistake in the
        # overrides (a job array's shared run.name, a lowered train.max_steps), not a no-op.
        raise SetupError(
            f"train.max_steps: {where} holds a checkpoint at step {state['step']}, past the "
            f"{total_steps} steps this run asks for; raise train.max_steps (or train.epochs), "
            "or set checkpoint.resume=never to start over"
        )
    saved_batch = state["config"]["optim"]["global_batch"]
    if saved_batch != global_batch:
        raise SetupError(
            f"optim.global_batch: the checkpoint was trained with {saved_batch}, this run asks "
            f"for {global_batch}; resume with the same global batch"
        )


def write_results(
    path: Path,
    student: torch.nn.Module,
    state: TrainState,
    is_main: bool,
    *,
    lr: float,
    excluded: list[str],
    final: dict[str, float],
    best_metric: float | None,
    skipped_before_run: list[str],
) -> None:
    """results.json (rank 0, gathered from all ranks): every rank's learning rate and parameter
    checksum, which DDP and the broadcast plateau decisions must keep identical, the files it
    left out during the run and its peak memory; then the run's step, final metrics, best
    metric, non-finite steps and the files left out before it."""
    with torch.no_grad():
        checksum = float(sum(p.double().sum() for p in student.parameters()))
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    everyone = distributed.all_gather_objects([lr, checksum, excluded, peak_rss])
    if not is_main:
        return
    agreement = {
        "lr_per_rank": [e[0] for e in everyone],
        "param_checksum_per_rank": [e[1] for e in everyone],
        "ranks_agree": all(e[:2] == everyone[0][:2] for e in everyone),
        "excluded_during_run": sorted({path for e in everyone for path in e[2]}),
        "peak_rss_bytes_per_rank": [e[3] for e in everyone],
    }
    if not agreement["ranks_agree"]:
        log.error("ranks disagree at the end of training: %s", agreement)
    results = {
        **agreement,
        "step": state.step,
        "images_seen": state.images_seen,
        "final": final,
        "best_metric": best_metric,
        "nonfinite_steps": state.nonfinite_total,
        "skipped_before_run": skipped_before_run,
    }
    rundir.write_json(path, results)
