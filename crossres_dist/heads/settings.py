"""The head section of the configuration (``head.*``), owned by the heads package with its own
checks (the registry's); crossres_dist/config.py composes it."""

from __future__ import annotations

from dataclasses import dataclass

from crossres_dist.heads.registry import HEADS, head_problem


@dataclass
class HeadConfig:
    # The classification head (crossres_dist/heads/): softmax (the network's own linear
    # classifier; the paper's) or a margin on the cosine to the class centres: cosface, arcface,
    # adaface (quality-adaptive, by the feature norm).
    name: str = "softmax"
    # s, the scale of a margin head's logits (64 in the three papers).
    scale: float = 64.0
    # m, a margin head's margin; null for its paper's (cosface 0.35, arcface 0.5, adaface 0.4).
    margin: float | None = None
    # AdaFace's h: how strongly the standardised feature norm moves the margin (0.333).
    adaface_h: float = 0.333
    # AdaFace's momentum for the running mean and deviation of the feature norms (0.01).
    adaface_t_alpha: float = 0.01
    # PartialFC: a margin head's classifier sharded by class over the ranks (1/N memory each).
    partial_fc: bool = False
    # PartialFC's sampling: each negative class is kept with this probability per step; every
    # class of the global batch is always kept (1: the full head's loss).
    partial_fc_rate: float = 1.0

    def problem(self) -> str | None:
        if self.name not in HEADS:
            return f"head.name: {self.name!r} is not a registered head (registered: {', '.join(HEADS)})"
        return head_problem(self)
