"""CosFace (Wang et al., 2018, "CosFace: Large Margin Cosine Loss"): the target logit is
s * (cos(theta_y) - m); m = 0.35 in the paper, s = 64."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crossres_dist.heads.registry import HeadSpec, Margin, register

if TYPE_CHECKING:  # annotations only: heads/settings.py imports this package's registry
    from crossres_dist.heads.settings import HeadConfig


class CosFace(Margin):
    def __init__(self, scale: float, margin: float, head_cfg: HeadConfig | None = None) -> None:
        super().__init__(scale, margin)

    def target(self, cos_target, features):
        return cos_target - self.margin


SPEC = register(HeadSpec("cosface", CosFace, default_margin=0.35, margin_range=(0.0, 1.0)))
