"""``student.classifier_init=centres``: the new classifier of a student that starts from a
pretrained network, set to the teacher's class centres on the training faces (weight
imprinting) instead of drawn at random.

Why: a network trained with a metric loss (dlib's ResNet) has a small descriptor (norm about
1.4), so a random linear classifier on it gives logits near zero and, at a fine-tuning learning
rate, stays there for hundreds of steps: cross-entropy then says nothing, and lambda = 0 is not
a fair comparison. The centres are the nearest-centre classifier the teacher's own space implies,
so cross-entropy is informative from the first step. A linear classifier's rows are the unit
centres scaled so that the mean descriptor gives logits of ``centre_logit_scale`` x cosine; a
cosine classifier (a margin head's) takes the unit centres.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from crossres_dist import distributed
from crossres_dist.models import CosineClassifier, NoClassifier, classifier_name
from crossres_dist.training.settings import StudentConfig
from crossres_dist.training.validation import ValidationData, compute_teacher_features

log = logging.getLogger(__name__)


@torch.no_grad()
def class_centres(features: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """The unit mean of each class's unit features; a class without a face keeps zeros."""
    sums = torch.zeros(classes, features.shape[1]).index_add_(0, labels, F.normalize(features))
    return F.normalize(sums, dim=1)


@torch.no_grad()
def imprint_classifier(student_cfg: StudentConfig, networks, samples, loader, autocast) -> None:
    """Set the student's classifier from the teacher's centres on `samples` (`networks`: the
    student and the teacher; every rank takes part in the teacher's pass, and rank 0's centres
    go to every rank). Nothing for ``classifier_init=random``."""
    student, teacher = networks
    samples = [s for s in samples if s.label >= 0]  # the faces of data.unlabelled have no class
    if student_cfg.classifier_init != "centres" or teacher is None or not samples:
        return
    layer = getattr(student, classifier_name(student))
    if isinstance(layer, NoClassifier):
        return  # PartialFC holds the classes (refused by the config; kept safe here)
    features = compute_teacher_features(teacher, ValidationData(samples, loader), autocast)
    weight = None
    if distributed.rank() == 0:
        labels = torch.tensor([s.label for s in samples])
        centres = class_centres(features.cpu(), labels, layer.weight.shape[0])
        norm = float(features.norm(dim=1).mean())
        scale = student_cfg.centre_logit_scale / norm
        weight = centres if isinstance(layer, CosineClassifier) else centres * scale
        log.info(
            "classifier: the teacher's centres of %d classes from %d training faces (mean "
            "descriptor norm %.3f)",
            len(centres),
            len(samples),
            norm,
        )
    weight = distributed.broadcast_object(weight)
    layer.weight.copy_(weight.to(layer.weight))
    layer.bias.zero_()
