"""The training loop's parts that own their own state: when to act (Cadence), what the logged
window has summed on the device (MetricWindow), and the non-finite steps the fused optimizer
skipped (NonFiniteSteps). None of them knows torch.distributed beyond the reduce they are handed.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from crossres_dist.training.settings import TrainConfig, ValConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Moments:
    """What the loop does after an optimizer step."""

    log: bool
    validate: bool
    save: bool
    stop: bool  # train.stop_after_step reached
    sync: bool  # the host reads the device and the ranks compare stop flags


@dataclass(frozen=True)
class Cadence:
    """When the loop logs, validates, checkpoints and synchronises, from train.*, val.every and
    checkpoint.every. The last step always logs, validates and saves; every log, validation,
    save and stop is a sync point, and so is every sync_every-th step (the host never waits
    for the device in between)."""

    total_steps: int
    log_every: int
    val_every: int
    checkpoint_every: int
    sync_every: int
    stop_after_step: int = 0

    @classmethod
    def from_config(
        cls, train_cfg: TrainConfig, val_cfg: ValConfig, every: int, total_steps: int
    ) -> Cadence:
        """`every`: checkpoint.every, the checkpoint section's save interval."""
        return cls(
            total_steps,
            train_cfg.log_every,
            val_cfg.every,
            every,
            train_cfg.sync_every,
            train_cfg.stop_after_step,
        )

    def at(self, step: int) -> Moments:
        last = step == self.total_steps
        log = step % self.log_every == 0 or last
        validate = step % self.val_every == 0 or last
        save = validate or step % self.checkpoint_every == 0
        stop = step == self.stop_after_step
        sync = log or save or stop or step % self.sync_every == 0
        return Moments(log, validate, save, stop, sync)


class MetricWindow:
    """Loss, cross-entropy, feature term, correct predictions and (with method.feature_weight)
    the teacher's mean weight, summed on the device over the micro-steps since the last log;
    the host reads them only when the window is reduced."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(6, device=device)
        self.weighted = False
        self._restart()

    def _restart(self) -> None:
        self.started, self.images, self.micro_steps = time.perf_counter(), 0, 0

    def add(self, losses: dict[str, torch.Tensor], labels: torch.Tensor, world: int) -> None:
        correct = losses.get("correct")  # PartialFC counts its own (it holds the classes)
        if correct is None and losses["logits"].shape[1] == 0:
            correct = torch.zeros((), device=labels.device)  # no classifier (no labelled faces)
        elif correct is None:
            correct = (losses["logits"].argmax(1) == labels).sum().float()
        weight = losses.get("teacher_weight")
        self.weighted = weight is not None
        terms = [losses["loss"], losses["ce"], losses["feat"], correct]
        terms.append(torch.zeros_like(correct) if weight is None else weight)
        # Top-1 is over the faces with a label (data.unlabelled's have none).
        terms.append((labels >= 0).sum())
        self.sums += torch.stack([t.detach().float() for t in terms])
        self.images += len(labels) * world
        self.micro_steps += 1

    def reduce(self, world: int, all_reduce=None) -> dict[str, float]:
        """The window's means over every rank (`all_reduce` sums a tensor across them), and
        images/s; the window starts again."""
        if world > 1 and all_reduce is not None:
            all_reduce(self.sums)
        n_micro = world * self.micro_steps
        loss, ce, feat, correct, weight, labelled = self.sums.tolist()
        values = {
            "train/loss": loss / n_micro,
            "train/ce": ce / n_micro,
            "train/feat": feat / n_micro,
            "train/top1": correct / max(1, labelled),
            "train/images_per_s": self.images / (time.perf_counter() - self.started),
        }
        if self.weighted:
            values["train/teacher_weight"] = weight / n_micro
        self.sums.zero_()
        self._restart()
        return values


class NonFiniteSteps:
    """Steps whose gradient was not finite (skipped by the optimizer on the device): in a row,
    in all, and the last one's number, kept on the device until a sync point reads them."""

    def __init__(self, device: torch.device, total_so_far: int) -> None:
        self.counts = torch.tensor([0.0, float(total_so_far), 0.0], device=device)

    def update(self, nonfinite: torch.Tensor, step: int) -> None:
        """`nonfinite` is 1.0 when step `step` was skipped, else 0.0 (a device tensor)."""
        self.counts[0] = (self.counts[0] + 1) * nonfinite  # in a row
        self.counts[1] += nonfinite  # in all
        self.counts[2] = torch.where(nonfinite > 0, step, self.counts[2])

    def read(self) -> tuple[int, int, int]:
        """(in a row, in all, the last one's step): a host synchronisation."""
        in_a_row, total, last = (int(x) for x in self.counts.tolist())
        return in_a_row, total, last

    def check(self, reported: int, max_in_a_row: int, where: Path) -> int:
        """At a sync point: warn of the steps skipped since `reported` were, and raise
        NonFiniteLoss (before any save) after `max_in_a_row` in a row; the last good checkpoint,
        in `where`, is then the newest. Returns the total so far."""
        in_a_row, total, last = self.read()
        if total > reported:
            log.warning(
                "%d non-finite loss/gradient step(s) skipped (the last at step %d; %d in a row)",
                total - reported,
                last,
                in_a_row,
            )
        if in_a_row >= max_in_a_row:
            raise NonFiniteLoss(
                f"{in_a_row} non-finite steps in a row at step {last}; the last good checkpoint "
                f"is in {where} (lower optim.lr or use train.precision=fp32)"
            )
        return total


class NonFiniteLoss(RuntimeError):
    pass


class Preempted(Exception):
    pass


def mark_preempted(step: int) -> None:
    """Tell a launcher script (slurm/train.sh) that the stop was a preemption with a checkpoint
    written, in $CROSSRES_PREEMPTED_FILE: the exit code alone cannot, since srun may kill the
    slower ranks once one has exited."""
    marker = os.environ.get("CROSSRES_PREEMPTED_FILE")
    if marker:
        Path(marker).parent.mkdir(parents=True, exist_ok=True)
        Path(marker).write_text(f"{step}\n")


class StopFlag:
    """Set by SIGTERM / SIGUSR1 (SLURM sends one ahead of the time limit); every rank checks
    the flags of all ranks at each step boundary, so they stop at the same step."""

    def __init__(self) -> None:
        self.raised: int | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame) -> None:
        self.raised = signum


def log_window(values: dict[str, float], step: int, total_steps: int) -> None:
    """A log window's means (MetricWindow.reduce, with the lr and p) as one line."""
    shown = ("loss", "ce", "feat", "top1", "lr", "p", "images_per_s")
    log.info(
        "step %d/%d loss %.4f ce %.4f feat %.4f top-1 %.3f lr %.2e p %.2f %.1f img/s",
        step,
        total_steps,
        *(values[f"train/{key}"] for key in shown),
    )
    if "train/teacher_weight" in values:
        log.info("teacher weight %.4f", values["train/teacher_weight"])
