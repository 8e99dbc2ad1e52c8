"""The head as a training run holds it: its margin, PartialFC when that holds the classes, what
they add to a checkpoint, and the whole classifier for validation."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from crossres_dist.heads import build_margin, head_spec
from crossres_dist.models import ModelSpec, classifier_name

if TYPE_CHECKING:  # annotations only: heads/settings.py imports this package's registry
    from crossres_dist.heads.settings import HeadConfig

log = logging.getLogger(__name__)


class TrainingHead:
    def __init__(
        self, head_cfg: HeadConfig, spec: ModelSpec, seed: int, device: torch.device, world: int
    ):
        self.margin = None
        self.partial_fc = None
        if not head_spec(head_cfg.name).has_margin:
            return
        self.margin = build_margin(head_cfg).to(device)
        if head_cfg.partial_fc:
            from crossres_dist.heads.partial_fc import PartialFC

            rate = head_cfg.partial_fc_rate
            self.partial_fc = PartialFC(
                spec.num_classes, spec.feature_dim, self.margin, rate, seed
            ).to(device)
            if world == 1 and rate < 1.0:
                log.warning(
                    "head.partial_fc on 1 rank: the whole classifier is on this rank, and each "
                    "step still keeps only %.0f%% of the negative classes (the loss is PartialFC's, "
                    "not the full head's); head.partial_fc_rate=1 trains the full head",
                    100 * rate,
                )

    def parameters(self) -> list[nn.Parameter]:
        """What the optimizer trains besides the network: PartialFC's slice of the classes."""
        return [] if self.partial_fc is None else list(self.partial_fc.parameters())

    def before_step(self, step: int) -> None:
        """PartialFC samples the negative classes of optimizer step `step`."""
        if self.partial_fc is not None:
            self.partial_fc.step = step

    @contextlib.contextmanager
    def for_validation(self, student: nn.Module):
        """The margin in evaluation mode (AdaFace's statistics left as they are) and, with
        PartialFC, the whole classifier in rank 0's network (every rank takes part)."""
        if self.margin is None:
            yield
            return
        self.margin.eval()
        try:
            if self.partial_fc is None:
                yield
            else:
                with self.partial_fc.as_full_classifier(student, classifier_name(student)):
                    yield
        finally:
            self.margin.train()

    def checkpoint_part(self, student: nn.Module, optimizer: torch.optim.Optimizer) -> HeadState:
        """The head's part of the checkpoint (checkpointing.CheckpointManager.register)."""
        return HeadState(self, student, optimizer)


class HeadState:
    """The margin's state (AdaFace's statistics) and, with PartialFC, the whole classifier
    written over the network's slice as the network's own cosine classifier, with its whole
    momentum: the checkpoint reads as a margin head's on any number of ranks. Every rank takes
    part in state_dict (PartialFC gathers)."""

    def __init__(self, head: TrainingHead, student: nn.Module, optimizer) -> None:
        self.head, self.student, self.optimizer = head, student, optimizer

    def state_dict(self) -> dict:
        margin, partial_fc = self.head.margin, self.head.partial_fc
        if margin is None:
            return {}
        state = {"head": margin.state_dict()}
        if partial_fc is None:
            return state
        from crossres_dist.heads.partial_fc import gather_momentum

        weight = partial_fc.gather_weight()
        momentum = gather_momentum(self.optimizer, partial_fc)
        if weight is None:
            return state
        weight_key, bias_key = type(self.student).classifier_keys
        state["student"] = {
            **self.student.state_dict(),
            weight_key: weight.cpu(),
            bias_key: torch.zeros(len(weight)),
        }
        state["model_spec"] = replace(self.student.spec, classifier="cosine").as_dict()
        state["partial_fc_momentum"] = momentum.cpu()
        return state

    def load_state_dict(self, state: dict) -> None:
        margin, partial_fc = self.head.margin, self.head.partial_fc
        if margin is not None and "head" in state:
            margin.load_state_dict(state["head"])
        if partial_fc is None:
            return
        weight_key, _ = type(self.student).classifier_keys
        partial_fc.load_full(state["student"][weight_key])
        momentum = state.get("partial_fc_momentum")
        if momentum is not None:
            mine = momentum[partial_fc.start : partial_fc.end]
            self.optimizer.state[partial_fc.weight]["momentum_buffer"] = mine.to(
                partial_fc.weight.device
            )
