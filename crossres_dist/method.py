"""The cross-resolution method: frozen teacher, trained student, CE + lambda * MSE, curriculum.

As in timm's distillation task, the student, the frozen teacher and the loss live together; the
task returns a dict of losses. Only the student is ever wrapped for data parallelism: the teacher
has no gradients, so an all-reduce for it would cost bandwidth for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class Curriculum:
    """p as a function of the images seen by all ranks together (method.md)."""

    enabled: bool
    p: float
    start: float = 0.1
    increment: float = 0.1
    step_images: int = 35000

    def p_at(self, images_seen: int) -> float:
        if not self.enabled:
            return self.p
        return min(1.0, self.start + self.increment * (images_seen // self.step_images))


def freeze(teacher: nn.Module) -> nn.Module:
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


class CrossResolutionLoss(nn.Module):
    """``L = CE(student_logits(x'), y) + lambda * MSE(student_feat(x'), teacher_feat(x))``.

    MSE is the mean over batch and feature dimensions. With ``teacher=None`` (the pretraining
    stage, or lambda = 0 without a teacher) it is plain cross-entropy.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None, lambda_feat: float) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.lambda_feat = lambda_feat

    def teacher_features(self, teacher_view: torch.Tensor) -> torch.Tensor:
        # The teacher may drift into train mode if someone calls .train() on a parent: guard.
        if self.teacher.training:
            self.teacher.eval()
        with torch.no_grad():
            features, _ = self.teacher(teacher_view)
        return features

    def forward(
        self,
        teacher_view: torch.Tensor,
        student_view: torch.Tensor,
        labels: torch.Tensor,
        teacher_features: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        student_features, logits = self.student(student_view)
        ce = F.cross_entropy(logits.float(), labels)
        losses = {"ce": ce, "logits": logits.detach()}
        if self.lambda_feat > 0 and (self.teacher is not None or teacher_features is not None):
            if teacher_features is None:
                teacher_features = self.teacher_features(teacher_view)
            mse = F.mse_loss(student_features.float(), teacher_features.float())
            losses["mse"] = mse
            losses["loss"] = ce + self.lambda_feat * mse
        else:
            losses["mse"] = torch.zeros((), device=ce.device)
            losses["loss"] = ce
        return losses
