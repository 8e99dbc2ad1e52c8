"""AdaFace (Kim, Jain and Liu, 2022, "AdaFace: Quality Adaptive Margin for Face Recognition"):
the margin adapts to image quality, measured by the feature norm.

The norm ||z|| of each sample is standardised by running statistics of the batch norms (mean
mu, standard deviation sigma, moving averages with momentum t_alpha = 0.01) and clipped:
z_hat = clip(h (||z|| - mu) / sigma, -1, 1), h = 0.333. Then
g_angle = -m * z_hat and g_add = m * z_hat + m, and the target logit is
s * (cos(theta_y + g_angle) - g_add); m = 0.4, s = 64. A high-quality face (large norm) gets an
angular margin like ArcFace's, a low-quality one an additive margin like CosFace's and a smaller
angular one, so hard, unrecognisable faces are not forced toward their class.

Here the batch statistics are those of the global batch (all ranks), so every rank holds the same
running statistics; they are buffers, saved with the checkpoint, so resume is exact. They update
in training mode only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from crossres_dist.heads.registry import HeadSpec, Margin, register

if TYPE_CHECKING:  # annotations only: heads/settings.py imports this package's registry
    from crossres_dist.heads.settings import HeadConfig

EPS = 1e-3


class AdaFace(Margin):
    def __init__(self, scale: float, margin: float, head_cfg: HeadConfig | None = None) -> None:
        super().__init__(scale, margin)
        self.h = head_cfg.adaface_h if head_cfg is not None else 0.333
        self.t_alpha = head_cfg.adaface_t_alpha if head_cfg is not None else 0.01
        # The paper's starting values for the running statistics.
        self.register_buffer("norm_mean", torch.tensor(20.0))
        self.register_buffer("norm_std", torch.tensor(100.0))

    @torch.no_grad()
    def _update(self, norms: torch.Tensor) -> None:
        """Moving averages of the global batch's norm mean and standard deviation."""
        moments = torch.stack(
            [norms.new_tensor(float(len(norms))), norms.sum(), norms.pow(2).sum()]
        )
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if distributed and not self.batch_is_global:
            dist.all_reduce(moments)
        count, total, squares = moments.double()
        mean = total / count
        std = ((squares - count * mean**2) / max(float(count) - 1, 1.0)).clamp_min(0).sqrt()
        self.norm_mean.mul_(1 - self.t_alpha).add_(self.t_alpha * mean.float())
        self.norm_std.mul_(1 - self.t_alpha).add_(self.t_alpha * std.float())

    @staticmethod
    def _norms(features: torch.Tensor) -> torch.Tensor:
        return features.norm(dim=1).clamp(min=EPS, max=100.0).detach()

    def observe(self, features):
        if self.training:
            self._update(self._norms(features))

    def target(self, cos_target, features):
        norms = self._norms(features)
        z_hat = ((norms - self.norm_mean) / (self.norm_std + EPS) * self.h).clamp(-1, 1)
        g_angle = -self.margin * z_hat
        g_add = self.margin * z_hat + self.margin
        theta = torch.acos(cos_target.clamp(-1 + 1e-7, 1 - 1e-7))
        theta = (theta + g_angle).clamp(EPS, math.pi - EPS)
        return torch.cos(theta) - g_add


SPEC = register(HeadSpec("adaface", AdaFace, default_margin=0.4, margin_range=(0.0, 1.0)))
