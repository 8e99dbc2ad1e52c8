"""The head as a training run holds it: its margin, PartialFC when that holds the classes, what
they add to a checkpoint, and the whole classifier for validation."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace

import torch
import torch.nn as nn

from crossres_dist.heads import build_margin, head_spec
from crossres_dist.models import ModelSpec, classifier_name

log = logging.getLogger(__name__)


class TrainingHead:
    def __init__(self, head_cfg, spec: ModelSpec, seed: int, device: torch.device, world: int):
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

    def add_to_checkpoint(
        self, state: dict, student: nn.Module, optimizer: torch.optim.Optimizer
    ) -> None:
        """The margin's state (AdaFace's statistics) and, with PartialFC, the whole classifier
        as the network's own cosine classifier, with its whole momentum: the checkpoint reads
        as a margin head's on any number of ranks. Every rank takes part."""
        if self.margin is None:
            return
        state["head"] = self.margin.state_dict()
        if self.partial_fc is None:
            return
        from crossres_dist.heads.partial_fc import gather_momentum

        weight = self.partial_fc.gather_weight()
        momentum = gather_momentum(optimizer, self.partial_fc)
        if weight is None:
            return
        weight_key, bias_key = type(student).classifier_keys
        state["student"] = {
            **state["student"],
            weight_key: weight.cpu(),
            bias_key: torch.zeros(len(weight)),
        }
        state["model_spec"] = replace(student.spec, classifier="cosine").as_dict()
        state["partial_fc_momentum"] = momentum.cpu()

    def restore(self, state: dict, student: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if self.margin is not None and "head" in state:
            self.margin.load_state_dict(state["head"])
        if self.partial_fc is None:
            return
        weight_key, _ = type(student).classifier_keys
        self.partial_fc.load_full(state["student"][weight_key])
        momentum = state.get("partial_fc_momentum")
        if momentum is not None:
            mine = momentum[self.partial_fc.start : self.partial_fc.end]
            optimizer.state[self.partial_fc.weight]["momentum_buffer"] = mine.to(
                self.partial_fc.weight.device
            )
