"""The frozen teacher a cross-resolution run learns from, built from its file and checked
against the student before any work."""

from __future__ import annotations

import torch

from .errors import SetupError
from .method import freeze
from .models import ModelSpec, build_model, spec_from_config
from .weights import assign, read_state


def build_teacher(cfg, student_spec: ModelSpec) -> tuple[torch.nn.Module, dict]:
    """The frozen teacher of teacher.checkpoint (its depth and width from the file, the
    config, or the student's), refused in one line when it cannot teach this student; and the
    state it was read from (the student may start from it)."""
    state, file_spec = read_state(cfg.teacher.checkpoint)
    layers = tuple(cfg.teacher.layers) or (file_spec.layers if file_spec else student_spec.layers)
    width = cfg.teacher.width or (file_spec.width if file_spec else student_spec.width)
    if file_spec is not None and file_spec.arch != student_spec.arch:
        raise SetupError(
            f"model.arch: the teacher {cfg.teacher.checkpoint} is a {file_spec.arch}, the "
            f"student a {student_spec.arch}; both must be of one family (one input "
            f"normalisation): set model.arch={file_spec.arch}"
        )
    if file_spec is not None and file_spec.input_size not in (0, cfg.data.crop):
        raise SetupError(
            f"data.crop: the teacher {cfg.teacher.checkpoint} takes {file_spec.input_size} px "
            f"faces, data.crop is {cfg.data.crop}; set data.crop={file_spec.input_size}"
        )
    teacher_spec = spec_from_config(
        cfg.model, student_spec.num_classes, layers, width, cfg.data.crop
    )
    teacher = build_model(teacher_spec)
    if teacher_spec.feature_dim != student_spec.feature_dim:
        raise SetupError(
            f"teacher.checkpoint: the teacher's feature has {teacher_spec.feature_dim} "
            f"dimensions, the student's {student_spec.feature_dim}; the MSE term needs them "
            "equal (change model.width or teacher.width)"
        )
    assign(teacher, state, cfg.teacher.checkpoint, cfg.student.replace_classifier)
    return freeze(teacher), state
