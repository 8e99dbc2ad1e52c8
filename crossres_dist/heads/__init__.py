"""Classification heads (``registry``: softmax, the margins and their specs, re-exported here),
the margin heads that register themselves (``cosface``, ``arcface``, ``adaface``), the head a run
holds (``training_head``) and the class-sharded classifier (``partial_fc``)."""

from crossres_dist.heads.registry import (
    HEADS,
    HeadSpec,
    Margin,
    Softmax,
    head_spec,
    register,
)
from crossres_dist.heads.settings import build_margin, classifier_kind, head_problem

# Each margin head registers itself.
# isort: off
from crossres_dist.heads import adaface, arcface, cosface  # noqa: E402, F401
# isort: on

__all__ = [
    "HEADS",
    "HeadSpec",
    "Margin",
    "Softmax",
    "build_margin",
    "head_problem",
    "classifier_kind",
    "head_spec",
    "register",
]
