"""The model section of the configuration (``model.*``): the student's architecture, owned by
the models package with its own checks; crossres_dist/config.py composes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from crossres_dist.models.registry import (
    ARCHITECTURES,
    DEFAULT_ARCH,
    ModelSpec,
    architecture,
    describe,
)


@dataclass
class ModelConfig:
    # The network family, one registered in crossres_dist/models/ (listed below).
    arch: str = DEFAULT_ARCH
    # Blocks per stage; [3, 4, 6, 3] is SE-ResNet-50 (and iResNet-34), [3, 4, 14, 3] iResNet-50,
    # [3, 13, 30, 3] iResNet-100.
    layers: list[int] = field(default_factory=lambda: [3, 4, 6, 3])
    # Channels of the first stage (64 for SE-ResNet-50); each stage doubles it.
    width: int = 64
    # Squeeze-excite bottleneck ratio (16 in SE-ResNet-50).
    se_reduction: int = 16
    # iResNet's embedding size (the feature; 512 in arcface_torch); 0 = the family's default.
    embedding: int = 0
    # 0 = inferred from the training data.
    num_classes: int = 0
    # BatchNorm momentum 0 keeps the running statistics fixed, as in the released model.
    bn_momentum: float = 0.0
    # "batch": BatchNorm uses batch statistics in training; "frozen": running statistics always.
    bn_mode: Literal["batch", "frozen"] = "batch"
    # NHWC memory layout on GPU (faster convolutions with bf16).
    channels_last: bool = True
    # NHWC on the CPU too: dlib's ResNet at 150 px trains 12 % faster in it with oneDNN
    # (forward and backward, measured on 2 AMD EPYC cores); off by default, because it changes
    # the order of the sums, and the demo's pinned arithmetic (run.reproducible) is NCHW's.
    channels_last_on_cpu: bool = False

    @staticmethod
    def help_listings() -> dict[str, str]:
        """What --help adds to a key's comment, made from a registry (settings_help.py)."""
        return {"arch": describe()}

    def problem(self) -> str | None:
        if not self.layers or any(n < 1 for n in self.layers):
            return "model.layers: needs 1 or more stages with >= 1 block each"
        if self.width < 4:
            return "model.width: must be >= 4"
        if self.arch not in ARCHITECTURES:
            return (
                f"model.arch: {self.arch!r} is not a registered architecture "
                f"(registered: {', '.join(ARCHITECTURES)})"
            )
        return None


def spec_from_config(
    model_cfg: ModelConfig, num_classes: int, layers=None, width: int = 0, input_size: int = 0
) -> ModelSpec:
    arch = architecture(model_cfg.arch)
    return ModelSpec(
        arch=arch.name,
        layers=tuple(layers or model_cfg.layers),
        width=width or model_cfg.width,
        num_classes=num_classes,
        se_reduction=model_cfg.se_reduction,
        bn_momentum=model_cfg.bn_momentum,
        **{**arch.fixed, **arch.from_config(model_cfg, input_size)},
    )
