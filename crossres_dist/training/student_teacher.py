"""The networks of a run: the student, from where it starts, and the frozen teacher it learns
from, built from its file and checked against the student before any work."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from crossres_dist.errors import SetupError
from crossres_dist.models import ModelSpec, build_model, spec_from_config
from crossres_dist.models.settings import ModelConfig
from crossres_dist.training.objective import freeze
from crossres_dist.weights import assign, read_state

if TYPE_CHECKING:  # for the reader only: config.py composes this package's sections
    from crossres_dist.config import Config


def build_teacher(cfg: Config, student_spec: ModelSpec) -> tuple[torch.nn.Module, dict]:
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
    weighs = cfg.method.feature_weight != "none" and cfg.method.lambda_feat > 0
    if file_spec is not None and file_spec.classifier == "cosine":
        # A teacher trained with a margin head: its classifier is the class centres, and which
        # identity it picks is the nearest centre by cosine (as in evaluation), not W f.
        teacher_spec = replace(teacher_spec, classifier="cosine")
        if weighs and cfg.method.feature_weight == "teacher_confidence":
            raise SetupError(
                f"method.feature_weight: {cfg.teacher.checkpoint} was trained with a margin head, "
                "whose probabilities depend on the head's scale and margin, not on the file; set "
                "method.feature_weight=teacher_correct (its nearest class centre) or none"
            )
    if student_spec.num_classes == 0:
        # No labelled source (pure feature distillation): the teacher's classifier, if its
        # file has one, is over identities this run never names; only its features are used.
        teacher_spec = replace(teacher_spec, classifier="none")
    teacher = build_model(teacher_spec)
    if teacher_spec.feature_dim != student_spec.feature_dim:
        raise SetupError(
            f"teacher.checkpoint: the teacher's feature has {teacher_spec.feature_dim} "
            f"dimensions, the student's {student_spec.feature_dim}; the MSE term needs them "
            "equal (change model.width or teacher.width)"
        )
    if weighs and not set(type(teacher).classifier_keys) <= set(state):
        raise SetupError(
            f"method.feature_weight: {cfg.method.feature_weight} weighs each face by the "
            f"teacher's classifier, and {cfg.teacher.checkpoint} holds none (a backbone file); "
            "set method.feature_weight=none"
        )
    assign(teacher, state, cfg.teacher.checkpoint, cfg.student.replace_classifier)
    return freeze(teacher), state


def build_networks(
    cfg: Config, spec: ModelSpec, resume_state: dict | None
) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """The student and, for the crossres stage, the frozen teacher. The student starts from the
    resumed state, else from student.init ("teacher": the teacher's weights; a path: that file's;
    empty: a seeded random initialisation)."""
    # Seeded before the first random initialisation: every rank starts from the same weights
    # (DDP would broadcast rank 0's anyway) and every rerun from the same ones.
    torch.manual_seed(cfg.run.seed)
    student = build_model(spec)
    teacher = None
    init = cfg.student.init
    if cfg.run.stage == "crossres":
        teacher, teacher_state = build_teacher(cfg, spec)
        if resume_state is None and init == "teacher":
            assign(student, teacher_state, cfg.teacher.checkpoint, cfg.student.replace_classifier)
    if resume_state is None and init not in ("teacher", ""):
        state, _ = read_state(init)
        assign(student, state, init, cfg.student.replace_classifier)
    if resume_state is not None:
        saved = resume_state["student"]
        if spec.classifier == "none":
            # PartialFC's classes, saved as the network's classifier, go back to PartialFC.
            saved = {k: v for k, v in saved.items() if k not in type(student).classifier_keys}
        student.load_state_dict(saved)
    return student, teacher


def starting_checkpoints(cfg: Config) -> list[str]:
    """The files the run's networks start from: the teacher's (crossres stage) and the
    student's own (student.init, a path)."""
    sources = [cfg.teacher.checkpoint] if cfg.run.stage == "crossres" else []
    if cfg.student.init not in ("teacher", ""):
        sources.append(cfg.student.init)
    return sources


def class_count(model_cfg: ModelConfig, data_spec: str, identities: int) -> int:
    """The classifier's size: the data's identities, or model.num_classes when it agrees."""
    num_classes = model_cfg.num_classes or identities
    if num_classes != identities:
        raise SetupError(
            f"model.num_classes: {num_classes}, but {data_spec} has {identities} identities; "
            "set model.num_classes=0 to infer it"
        )
    return num_classes
