"""ArcFace (Deng et al., 2019, "ArcFace: Additive Angular Margin Loss"): the target logit is
s * cos(theta_y + m); m = 0.5, s = 64. Where theta_y + m would pass pi, cos(theta + m) would turn
back up and reward a worse angle: there the target is cos(theta_y) - m * sin(m), insightface's
fallback before 2022 (``easy_margin=False``). It is not a continuation of cos(theta + m): at
theta = pi - m the target jumps from cos(pi) = -1 to -cos(m) - m * sin(m) (-1.12 at m = 0.5) and
its slope changes, but it keeps decreasing with theta, which is what the fallback is for."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from crossres_dist.heads.registry import HeadSpec, Margin, register

if TYPE_CHECKING:  # annotations only: heads/settings.py imports this package's registry
    from crossres_dist.heads.settings import HeadConfig


class ArcFace(Margin):
    def __init__(self, scale: float, margin: float, head_cfg: HeadConfig | None = None) -> None:
        super().__init__(scale, margin)
        self.threshold = math.cos(math.pi - margin)  # cos(theta) below it: theta + m > pi

    def target(self, cos_target, features):
        theta = torch.acos(cos_target.clamp(-1 + 1e-7, 1 - 1e-7))
        arc = torch.cos(theta + self.margin)
        linear = cos_target - self.margin * math.sin(self.margin)
        return torch.where(cos_target > self.threshold, arc, linear)


SPEC = register(HeadSpec("arcface", ArcFace, default_margin=0.5, margin_range=(0.0, math.pi / 2)))
