"""The networks, made in one place: ``build_model(spec)``.

A ``ModelSpec`` says everything needed to rebuild a network and to feed it: the architecture and
its sizes, and the input it expects (side, channel order, mean and scale). Every checkpoint
records its spec, so that evaluation, export and conversion rebuild any checkpoint without being
told the architecture, and the pipelines take the normalisation from it. No distribution here.

Architectures:
- ``seresnet``: SE-ResNet as released for VGGFace2 (Caffe input: BGR, 0..255 minus the mean).
- ``iresnet``: ArcFace's iResNet (insightface arcface_torch; RGB, (x - 127.5) / 127.5, 112 px).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch.nn as nn

# The released VGGFace2 networks' input: BGR, 0..255, minus this mean (Caffe's convention). The
# pipelines' default (pipelines.plans.MEAN_BGR) is the same numbers: models know nothing of the
# pipelines, and tests/test_layers.py checks that the two agree.
MEAN_BGR = (91.4953, 103.8827, 131.0912)


ARCHS = ("seresnet", "iresnet")


@dataclass(frozen=True)
class ModelSpec:
    arch: str = "seresnet"
    # Blocks per stage: [3, 4, 6, 3] is SE-ResNet-50; iResNet-50 is [3, 4, 14, 3].
    layers: tuple[int, ...] = (3, 4, 6, 3)
    # Channels of the first stage; each stage doubles them.
    width: int = 64
    num_classes: int = 8631
    se_reduction: int = 16
    bn_momentum: float = 0.0
    # iResNet: the embedding's size (512). SE-ResNet's feature is its pooled last stage.
    embedding: int = 0
    # The input side the network needs (iResNet's fully connected embedding); 0 = any.
    input_size: int = 0
    expansion: int = field(default=4)
    # How its input is normalised: channel order, the mean subtracted (in that order, on the
    # 0..255 scale), then the scale multiplied.
    channels: str = "BGR"
    mean: tuple[float, ...] = MEAN_BGR
    scale: float = 1.0

    @property
    def feature_dim(self) -> int:
        if self.arch == "iresnet":
            return self.embedding
        return self.width * 2 ** (len(self.layers) - 1) * self.expansion

    def as_dict(self) -> dict:
        d = asdict(self)
        return {**d, "layers": list(self.layers), "mean": list(self.mean)}

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        """From a checkpoint's record (older checkpoints recorded SE-ResNets without arch)."""
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["layers"] = tuple(d.get("layers", (3, 4, 6, 3)))
        if "mean" in d:
            d["mean"] = tuple(d["mean"])
        return cls(**d)


def defaults_for(arch: str) -> dict:
    """What an architecture fixes about its input."""
    if arch == "iresnet":
        return {
            "channels": "RGB",
            "mean": (127.5, 127.5, 127.5),
            "scale": 1 / 127.5,
            "expansion": 1,
            "embedding": 512,
        }
    return {"channels": "BGR", "mean": MEAN_BGR, "scale": 1.0, "expansion": 4}


def spec_from_config(
    model_cfg, num_classes: int, layers=None, width: int = 0, input_size: int = 0
) -> ModelSpec:
    arch = model_cfg.arch
    fixed = defaults_for(arch)
    if arch == "iresnet":
        fixed["embedding"] = model_cfg.embedding or fixed["embedding"]
        fixed["input_size"] = input_size
    return ModelSpec(
        arch=arch,
        layers=tuple(layers or model_cfg.layers),
        width=width or model_cfg.width,
        num_classes=num_classes,
        se_reduction=model_cfg.se_reduction,
        bn_momentum=model_cfg.bn_momentum,
        **fixed,
    )


def build_model(spec: ModelSpec) -> nn.Module:
    """The network of `spec`; it returns ``(feature, logits)`` and has ``stages()`` (the
    blocks FSDP shards one by one) and ``classifier_keys`` (what a new classifier replaces)."""
    if spec.arch == "seresnet":
        from .seresnet import SEResNet

        return SEResNet(spec)
    if spec.arch == "iresnet":
        from .iresnet import IResNet

        return IResNet(spec)
    raise ValueError(f"unknown architecture {spec.arch!r} (known: {', '.join(ARCHS)})")


def with_classes(spec: ModelSpec, num_classes: int) -> ModelSpec:
    return replace(spec, num_classes=num_classes)


def set_bn_frozen(model: nn.Module) -> None:
    """BatchNorm layers use running statistics even in train mode (``model.bn_mode=frozen``)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
