"""The cross-resolution method: frozen teacher, trained student, CE + lambda * D, curriculum.

As in timm's distillation task, the student, the frozen teacher and the loss live together; the
task returns a dict of losses. Only the student is ever wrapped for data parallelism: the teacher
has no gradients, so an all-reduce for it would cost bandwidth for nothing.

The objective (``CrossResolutionObjective``) is the one place that combines the terms; training
and validation both call it, so the validation loss that drives the plateau schedule is the loss
being minimised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from crossres_dist.training.settings import MethodConfig


@dataclass(frozen=True)
class Curriculum:
    """p as a function of the images seen by all ranks together (method.md)."""

    enabled: bool
    p: float
    start: float = 0.1
    increment: float = 0.1
    step_images: int = 35000

    @classmethod
    def from_config(cls, method_cfg: MethodConfig, stage: str) -> Curriculum:
        """method.p / method.curriculum*; a pretrained teacher never sees degraded views."""
        if stage == "pretrain":
            return cls(False, 0.0)
        m = method_cfg
        return cls(m.curriculum, m.p, m.curriculum_start, m.curriculum_increment, m.curriculum_step)

    def p_at(self, images_seen: int) -> float:
        if not self.enabled:
            return self.p
        return min(1.0, self.start + self.increment * (images_seen // self.step_images))


def freeze(teacher: nn.Module) -> nn.Module:
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def feature_distance(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-sample distance between student and teacher features.

    ``mse``: the mean over feature dimensions of the squared difference (method.md; its scale is
    the features' scale, so the lambda that balances it against CE depends on the network).
    ``cosine``: 1 - cosine similarity, in [0, 2] whatever the network's feature scale.
    ``relational`` (relational knowledge distillation, Park et al. 2019, on cosines): for each
    face, the mean squared difference between its row of cosine similarities to the faces of
    the batch under the student and under the teacher, in [0, 4]. It transfers which faces the
    teacher finds alike rather than the teacher's features, so a weak teacher's errors in its
    features do not become targets; with paired batches a face's two views have teacher
    similarity 1, so the student pulls its low- and full-resolution embeddings together. A
    face's value depends on the faces of its batch (a rank's micro-batch)."""
    student, teacher = student.float(), teacher.float()
    if kind == "mse":
        return (student - teacher).pow(2).mean(1)
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(student, teacher, dim=1)
    if kind == "relational":
        s, t = F.normalize(student, dim=1), F.normalize(teacher, dim=1)
        return (s @ s.T - t @ t.T).pow(2).mean(1)
    raise ValueError(f"unknown feature loss {kind!r}")


def teacher_reliability(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[N, 2]: the teacher's probability of each face's true identity on its full-resolution
    view, and 1 where that identity is the teacher's first choice (0 elsewhere)."""
    probabilities = logits.float().softmax(1)
    true_class = probabilities.gather(1, labels[:, None])[:, 0]
    first_choice = (probabilities.argmax(1) == labels).float()
    return torch.stack([true_class, first_choice], 1)


# method.feature_weight -> the column of teacher_reliability that weighs each face's term.
WEIGHT_COLUMNS = {"teacher_confidence": 0, "teacher_correct": 1}


@dataclass(frozen=True)
class CrossResolutionObjective:
    """``L = CE(student_logits, y) + lambda * D(student_feat, teacher_feat)``, D per
    ``feature_distance``; without teacher features (pretraining, lambda = 0) it is CE.

    With a ``feature_weight`` other than "none", each face's D is weighed by how far its teacher
    can be trusted (``teacher_reliability``): its probability of the true identity, or whether
    that identity is its first choice. The mean is over all faces, so a teacher that is often
    wrong pulls less overall, not just elsewhere."""

    lambda_feat: float = 0.1
    feature_loss: str = "mse"
    feature_weight: str = "none"
    # The head's margin (crossres_dist/heads/; None: softmax, the logits as they are), and
    # PartialFC when it holds the classes (the network's logits are then empty).
    margin: nn.Module | None = None
    partial_fc: nn.Module | None = None
    # Whether a batch may hold faces without an identity label (data.unlabelled: label -1).
    # Each face's loss is then CE (labelled faces only) + lambda * D, and the batch's loss their
    # mean over all faces; decided with the data, so a run of labelled faces alone computes
    # exactly what it always did.
    unlabelled: bool = False

    @classmethod
    def for_run(
        cls, method_cfg: MethodConfig, lambda_feat: float, head, unlabelled: bool = False
    ) -> CrossResolutionObjective:
        """The method section's feature term at `lambda_feat` (0 without a teacher) with the
        training head's margin or PartialFC; `unlabelled`: the data holds faces without a
        label."""
        m = method_cfg
        return cls(
            lambda_feat, m.feature_loss, m.feature_weight, head.margin, head.partial_fc, unlabelled
        )

    @property
    def uses_teacher(self) -> bool:
        return self.lambda_feat > 0

    @property
    def weighs_by_teacher(self) -> bool:
        """Whether the feature term needs the teacher's reliability (its logits) too."""
        return self.uses_teacher and self.feature_weight != "none"

    def classification(
        self,
        features: torch.Tensor,
        logits: torch.Tensor,
        labels: torch.Tensor,
        reduction: str,
        counted: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """The cross-entropy of the head: the network's logits (through the margin), or
        PartialFC's, of the global batch, over the ranks (with its count of correct rows among
        the first `counted` of this rank's)."""
        if self.partial_fc is not None and logits.shape[1] == 0:
            out = self.partial_fc(features, labels, counted)
            ce = out["ce"] if reduction == "mean" else out["ce"] * len(labels)
            return {"ce": ce, "correct": out["correct"]}
        if logits.shape[1] == 0:  # no labelled source: no classifier, the feature term alone
            return {"ce": features.new_zeros((), dtype=torch.float32)}
        if self.unlabelled:
            return {"ce": self._labelled_ce(features, logits, labels, reduction)}
        if self.margin is not None:
            logits = self.margin(logits, labels, features)
        return {"ce": F.cross_entropy(logits.float(), labels, reduction=reduction)}

    def _labelled_ce(
        self, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, reduction: str
    ) -> torch.Tensor:
        """CE over the labelled faces, an unlabelled face (label < 0) contributing 0, averaged
        over all faces: masked on the device, so no step waits for the host to count them."""
        known = labels >= 0
        if self.margin is not None:
            # The margin's row for an unlabelled face is computed at label 0 and then ignored.
            logits = self.margin(logits, labels.clamp(min=0), features)
        target = torch.where(known, labels, torch.full_like(labels, -100))
        total = F.cross_entropy(logits.float(), target, reduction="sum", ignore_index=-100)
        return total / len(labels) if reduction == "mean" else total

    def __call__(
        self,
        features: torch.Tensor,
        logits: torch.Tensor,
        labels: torch.Tensor,
        teacher_features: torch.Tensor | None,
        reduction: str = "mean",
        counted: int | None = None,
        reliability: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        reduce = torch.mean if reduction == "mean" else torch.sum
        head = self.classification(features, logits, labels, reduction, counted)
        ce = head["ce"]
        if not (self.uses_teacher and teacher_features is not None):
            return {**head, "feat": torch.zeros((), device=ce.device), "loss": ce}
        distance = feature_distance(features, teacher_features, self.feature_loss)
        weighted = {}
        if self.weighs_by_teacher:
            if reliability is None:
                raise ValueError(f"feature_weight={self.feature_weight} needs the reliability")
            weight = reliability[:, WEIGHT_COLUMNS[self.feature_weight]].to(distance.device)
            distance = distance * weight
            weighted = {"teacher_weight": reduce(weight)}
        feat = reduce(distance)
        return {**head, **weighted, "feat": feat, "loss": ce + self.lambda_feat * feat}


class CrossResolutionLoss(nn.Module):
    """The training task: the student sees the student view (degraded with probability p),
    the frozen teacher the undegraded view, and the objective compares them.

    With ``paired``, the student sees both views of every face in the same batch, and every
    term applies to both: the undegraded half anchors the student to the teacher at full
    resolution while the degraded half teaches it low resolution.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        objective: CrossResolutionObjective,
        paired: bool = False,
    ) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.objective = objective
        self.paired = paired

    def teacher_targets(
        self, teacher_view: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's features of the undegraded view, and its reliability on it when the
        feature term is weighed by it."""
        # The teacher may drift into train mode if someone calls .train() on a parent: guard.
        if self.teacher.training:
            self.teacher.eval()
        with torch.no_grad():
            features, logits = self.teacher(teacher_view)
        reliability = None
        if self.objective.weighs_by_teacher:
            reliability = teacher_reliability(logits, labels)
        return features, reliability

    def forward(
        self,
        teacher_view: torch.Tensor,
        student_view: torch.Tensor,
        labels: torch.Tensor,
        teacher_features: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """`teacher_features`: the teacher's features of `teacher_view` when they are already
        known (teacher.feature_cache); otherwise the teacher runs."""
        target = reliability = None
        if self.objective.uses_teacher and teacher_features is not None:
            target = teacher_features
        elif self.objective.uses_teacher and self.teacher is not None:
            target, reliability = self.teacher_targets(teacher_view, labels)
        if self.paired:
            student_view = torch.cat([student_view, teacher_view])
            labels = torch.cat([labels, labels])
            target = None if target is None else torch.cat([target, target])
            reliability = None if reliability is None else torch.cat([reliability, reliability])
        features, logits = self.student(student_view)
        # The student views' rows are counted for the training top-1 (the first half if paired).
        counted = len(labels) // 2 if self.paired else len(labels)
        losses = self.objective(
            features, logits, labels, target, counted=counted, reliability=reliability
        )
        # For the training top-1: the student views' logits (the first half when paired).
        losses["logits"] = logits[: len(logits) // 2 if self.paired else len(logits)].detach()
        return losses
