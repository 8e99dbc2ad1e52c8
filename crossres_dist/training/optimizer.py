"""Optimizer and learning-rate schedules (method.md: SGD + ReduceLROnPlateau; cosine optional)."""

from __future__ import annotations

import math

import torch

from crossres_dist.errors import SetupError
from crossres_dist.models import classifier_name
from crossres_dist.training.settings import OptimConfig


def parameter_groups(student: torch.nn.Module, head: torch.nn.Module, scale: float) -> list:
    """The trained parameters: one group, or with ``optim.classifier_lr_scale`` != 1 the
    classifier (the network's own and the head's) in a second group at that multiple of lr."""
    params = [*student.parameters(), *head.parameters()]
    if scale == 1.0:
        return params
    network = student
    while hasattr(network, "module") or hasattr(network, "_orig_mod"):  # DDP, torch.compile
        network = getattr(network, "module", None) or network._orig_mod
    classifier = {id(p) for p in getattr(network, classifier_name(network)).parameters()}
    classifier |= {id(p) for p in head.parameters()}
    backbone = [p for p in params if id(p) not in classifier]
    chosen = [p for p in params if id(p) in classifier]
    return [{"params": backbone}, {"params": chosen, "lr_scale": scale}]


def build_optimizer(
    student: torch.nn.Module, head: torch.nn.Module, cfg: OptimConfig, device: torch.device
) -> torch.optim.Optimizer:
    """Fused SGD over the student's and the head's parameters, on either device: one kernel per
    step, and it takes ``found_inf`` so that a non-finite step is skipped on the device, with
    no host synchronisation."""
    optimizer = torch.optim.SGD(
        parameter_groups(student, head, cfg.classifier_lr_scale),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov,
        fused=True,
    )
    for group in optimizer.param_groups:
        if "lr_scale" in group:  # the classifier's group (parameter_groups)
            group["lr"] = cfg.lr * group["lr_scale"]
    if cfg.momentum > 0:
        # Created lazily, a buffer is left uninitialised when the first step is skipped; zeros
        # give the same first step (dampening 0: buffer = gradient).
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                optimizer.state[parameter]["momentum_buffer"] = torch.zeros_like(parameter)
    return optimizer


class Schedule:
    """One object for every schedule, with the state_dict/load_state_dict of a checkpointable."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
        self.kind = cfg.scheduler
        self.optimizer = optimizer
        self.scheduler: object | None = None
        if self.kind == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=cfg.plateau_factor,
                patience=cfg.plateau_patience,
                threshold=cfg.plateau_threshold,
                threshold_mode="rel",
                min_lr=cfg.min_lr,
            )
        elif self.kind == "cosine":
            warmup, floor = cfg.warmup_steps, cfg.min_lr / cfg.lr

            def factor(step: int) -> float:
                if step < warmup:
                    return (step + 1) / warmup
                progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

            self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def after_step(self) -> None:
        if self.kind == "cosine":
            self.scheduler.step()

    def after_validation(self, val_loss: float) -> None:
        """Every rank passes the same (broadcast) loss, so every rank takes the same decision."""
        if self.kind == "plateau":
            self.scheduler.step(val_loss)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None and state:
            self.scheduler.load_state_dict(state)


def accumulation_steps(global_batch: int, micro_batch: int, world: int) -> int:
    """Micro-steps per optimizer step: global batch = micro batch x ranks x accumulation,
    whatever the world size (so a run resumed on other ranks keeps its trajectory)."""
    per_step = micro_batch * world
    if global_batch % per_step:
        raise SetupError(
            f"optim.global_batch={global_batch} is not a multiple of "
            f"data.micro_batch x ranks = {micro_batch} x {world}; change one of them"
        )
    return global_batch // per_step
