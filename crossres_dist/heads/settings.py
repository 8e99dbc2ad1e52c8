"""The head section of the configuration (``head.*``), owned by the heads package with its own
checks (the registry's); crossres_dist/config.py composes it."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from crossres_dist.heads.registry import HEADS, Softmax, head_spec


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


def head_problem(head_cfg: HeadConfig) -> str | None:
    """Why the method section's head settings cannot train (None: they can): the key, then
    what to change."""
    spec = head_spec(head_cfg.name)
    if not spec.has_margin:
        if head_cfg.partial_fc:
            return (
                "head.partial_fc: needs a margin head (cosface, arcface or adaface); the "
                "softmax head is the network's own classifier"
            )
        return None
    low, high = spec.margin_range
    margin = spec.default_margin if head_cfg.margin is None else head_cfg.margin
    if not low <= margin < high:
        return (
            f"head.margin: {margin} is outside [{low:g}, {high:.4g}) for {spec.name} "
            f"(its paper: {spec.default_margin})"
        )
    if head_cfg.scale <= 0:
        return f"head.scale: {head_cfg.scale} must be > 0 (the papers: 64)"
    if not 0.0 < head_cfg.partial_fc_rate <= 1.0:
        return f"head.partial_fc_rate: {head_cfg.partial_fc_rate} is not in (0, 1]"
    if not 0.0 < head_cfg.adaface_h <= 1.0:
        return f"head.adaface_h: {head_cfg.adaface_h} is not in (0, 1] (the paper: 0.333)"
    return None


def build_margin(head_cfg: HeadConfig) -> nn.Module:
    """The head's margin module (Softmax: the logits as they are)."""
    spec = head_spec(head_cfg.name)
    if not spec.has_margin:
        return Softmax()
    margin = spec.default_margin if head_cfg.margin is None else head_cfg.margin
    return spec.build(head_cfg.scale, margin, head_cfg)


def classifier_kind(head_cfg: HeadConfig) -> str:
    """The network's classifier layer for the head (models.ModelSpec.classifier)."""
    if not head_spec(head_cfg.name).has_margin:
        return "linear"
    return "none" if head_cfg.partial_fc else "cosine"
