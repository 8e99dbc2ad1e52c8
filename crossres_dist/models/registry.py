"""The networks, made in one place: ``build_model(spec)``.

A ``ModelSpec`` says everything needed to rebuild a network and to feed it: the architecture and
its sizes, and the input it expects (side, channel order, mean and scale). Every checkpoint
records its spec, so that evaluation, export and conversion rebuild any checkpoint without being
told the architecture, and the pipelines take the normalisation from it. No distribution here.

Each family registers itself from its own module (``register``); this registry is the one list
of them: ``describe`` (``--help``, under model.arch) and ``architectures_table`` (docs/layout.md,
spliced by ``make readme``) are made from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

# The released VGGFace2 networks' input: BGR, 0..255, minus this mean (Caffe's convention). The
# pipelines' default (pipelines.plans.MEAN_BGR) is the same numbers: models know nothing of the
# pipelines, and tests/unit/test_layers.py checks that the two agree.
MEAN_BGR = (91.4953, 103.8827, 131.0912)


# The paper's network; also what checkpoints written before there were others hold.
DEFAULT_ARCH = "seresnet"


@dataclass(frozen=True)
class ModelSpec:
    arch: str = DEFAULT_ARCH
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
    # The classifier layer: "linear" (logits W f + b: the paper's softmax), "cosine" (logits
    # cos(f, w_c): the class centres of a margin head, crossres_dist/heads/; the bias is kept
    # in the state dict, frozen at 0) or "none" (PartialFC holds the classes outside).
    classifier: str = "linear"

    @property
    def feature_dim(self) -> int:
        return architecture(self.arch).feature_dim(self)

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


@dataclass(frozen=True)
class Architecture:
    """What the rest of the project knows of a network family, registered by its own module:
    how to build it, what it fixes about its spec (its input normalisation, its own sizes), its
    feature's size, the spec fields it takes from model.*, how to recognise and read its released
    state dicts, and what input it can take."""

    name: str
    network: Callable[[ModelSpec], nn.Module]
    # Spec fields the family fixes: channels, mean, scale (its input) and its own sizes.
    fixed: dict
    feature_dim: Callable[[ModelSpec], int]
    # Further spec fields from the model config section and the input side (data.crop).
    from_config: Callable[[Any, int], dict] = lambda model_cfg, input_size: {}
    # A released state_dict of this family (no spec recorded with it)? And its spec.
    recognises: Callable[[dict], bool] = lambda state: False
    spec_from_state: Callable[[dict], ModelSpec] | None = None
    # Why a (layers, input side) cannot be built, in the words of a config error (None: it can).
    check_input: Callable[[tuple, int], str | None] = lambda layers, side: None
    # One line: the family and its input (--help and docs/layout.md list it).
    summary: str = ""


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Add a family under its name; refused if the name is taken or it has no summary."""
    if not arch.summary:
        raise ValueError(f"architecture {arch.name!r}: needs a one-line summary")
    if arch.name in ARCHITECTURES:
        raise ValueError(f"architecture {arch.name!r} is registered already")
    ARCHITECTURES[arch.name] = arch
    return arch


def unregister(name: str) -> None:
    ARCHITECTURES.pop(name, None)


def describe() -> str:
    """The families, as --help lists them under model.arch."""
    return (
        "Registered: " + "; ".join(f"{a.name} ({a.summary})" for a in ARCHITECTURES.values()) + "."
    )


def architectures_table() -> str:
    """The families as docs/layout.md lists them."""
    lines = ["| `model.arch` | the family and its input |", "|---|---|"]
    lines += [f"| `{a.name}` | {a.summary} |" for a in ARCHITECTURES.values()]
    return "\n".join(lines)


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r} (registered: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[name]


class CosineClassifier(nn.Linear):
    """Cosines between the normalised features and the normalised rows of `weight` (the class
    centres); `bias` exists so that the keys stay those of a linear classifier, frozen at 0.
    Made from a weight, so that building one draws nothing from the random generators."""

    def __init__(self, weight: torch.Tensor) -> None:
        nn.Module.__init__(self)
        self.out_features, self.in_features = weight.shape
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(torch.zeros_like(self.weight[:, 0]), requires_grad=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))


class NoClassifier(nn.Module):
    """No classifier in the network (PartialFC holds the classes): empty [B, 0] logits."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.new_zeros(len(features), 0)


def classifier_name(model: nn.Module) -> str:
    """The attribute of `model` that holds its classifier layer."""
    return model.classifier_keys[0].split(".")[0]


def build_model(spec: ModelSpec) -> nn.Module:
    """The network of `spec`; it returns ``(feature, logits)`` and has ``stages()`` (the
    blocks FSDP shards one by one) and ``classifier_keys`` (what a new classifier replaces)."""
    model = architecture(spec.arch).network(spec)
    if spec.classifier != "linear":
        # The same weight (the initial one included: the random draws are those of the
        # linear layer), another layer.
        linear = getattr(model, classifier_name(model))
        if spec.classifier == "cosine":
            layer = CosineClassifier(linear.weight)
        elif spec.classifier == "none":
            layer = NoClassifier()
        else:
            raise ValueError(f"unknown classifier {spec.classifier!r} (linear, cosine or none)")
        setattr(model, classifier_name(model), layer)
    return model


def spec_of_state(state: dict) -> ModelSpec | None:
    """The spec of a released state_dict, from the family that recognises it (None: none
    does). ValueError when it is recognised but does not add up."""
    for arch in ARCHITECTURES.values():
        if arch.recognises(state):
            return arch.spec_from_state(state)
    return None


def check_input(arch: str, layers, side: int) -> str | None:
    """Why model.arch cannot take `side` px faces with `layers` (None: it can)."""
    return architecture(arch).check_input(tuple(layers), side)


def layers_of(state: dict) -> tuple[int, ...]:
    """Blocks per stage from ``layer<stage>.<block>.`` names (both families use them)."""
    counts: dict[int, int] = {}
    for key in state:
        if key.startswith("layer"):
            stage, block = key.split(".")[:2]
            counts[int(stage[5:])] = max(counts.get(int(stage[5:]), 0), int(block) + 1)
    return tuple(counts[s] for s in sorted(counts))


def set_bn_frozen(model: nn.Module) -> None:
    """BatchNorm layers use running statistics even in train mode (``model.bn_mode=frozen``)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
