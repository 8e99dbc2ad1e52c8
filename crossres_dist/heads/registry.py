"""Classification heads for the student, registered like the models: ``softmax`` (the network's
own linear classifier: the paper's), ``cosface``, ``arcface`` and ``adaface`` (margins on the
cosine between the normalised feature and normalised class centres).

A margin head is two parts:
- its classifier, inside the network: the network's classifier layer is a cosine one
  (``models.CosineClassifier``, spec ``classifier: cosine``: the rows of its weight are the class
  centres; its bias stays in the state dict, frozen at 0, so checkpoints and released classifiers
  keep their keys). The network then returns the cosines as its logits: top-1, in validation
  and evaluation alike, is the nearest class centre.
- its margin, in the objective: the target cosine of each sample moved by the head's paper, then
  everything scaled by s, for the cross-entropy. Non-target logits are s * cos.

The head is training-only: evaluation and export use the feature (the embedding). With
``head.partial_fc`` the classifier leaves the network for ``partial_fc.PartialFC``, sharded
by class over the ranks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn as nn


class Margin(nn.Module, ABC):
    """The margin of a head: (cosines [B, C], labels [B], features [B, D]) -> logits [B, C].
    `labels` may hold -1 for samples whose class is not among the columns (PartialFC's shard):
    their row gets no margin."""

    def __init__(self, scale: float, margin: float) -> None:
        super().__init__()
        self.scale, self.margin = scale, margin
        # True when `features` already holds the whole global batch (PartialFC gathers it):
        # statistics of the batch then need no all-reduce of their own.
        self.batch_is_global = False

    def observe(self, features: torch.Tensor) -> None:
        """Every row's feature, before the targets are moved (AdaFace's norm statistics)."""

    @abstractmethod
    def target(self, cos_target: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The target cosine after the margin (before scaling)."""

    def forward(
        self, cos: torch.Tensor, labels: torch.Tensor, features: torch.Tensor
    ) -> torch.Tensor:
        self.observe(features)
        cos = cos.float().clamp(-1.0, 1.0)
        rows = torch.nonzero(labels >= 0).flatten()
        cols = labels[rows]
        moved = self.target(cos[rows, cols], features[rows].float())
        logits = cos.index_put((rows, cols), moved)
        return logits * self.scale


class Softmax(nn.Module):
    """The paper's head: the network's own linear classifier, its logits as they are."""

    def forward(self, logits, labels, features):
        return logits


@dataclass(frozen=True)
class HeadSpec:
    """A registered head: how to build its margin, its default margin, and the range a margin
    may take (the paper's arithmetic stops making sense outside it)."""

    name: str
    build: type | None
    default_margin: float = 0.0
    margin_range: tuple[float, float] = (0.0, 0.0)

    @property
    def has_margin(self) -> bool:
        return self.build is not None


HEADS: dict[str, HeadSpec] = {}


def register(spec: HeadSpec) -> HeadSpec:
    HEADS[spec.name] = spec
    return spec


register(HeadSpec("softmax", None))


def head_spec(name: str) -> HeadSpec:
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r} (registered: {', '.join(HEADS)})")
    return HEADS[name]
