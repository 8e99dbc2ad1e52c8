"""iResNet as insightface's arcface_torch defines it (r18 [2, 2, 2, 2], r34 [3, 4, 6, 3],
r50 [3, 4, 14, 3], r100 [3, 13, 30, 3], r200 [6, 26, 60, 6]), with width as a setting.

Parameter names are arcface_torch's, so its released ``backbone.pth`` loads as it is: a 3x3 stem
(BatchNorm, PReLU), four stages of pre-activation basic blocks that halve the side, BatchNorm,
then ``fc`` to the embedding and a BatchNorm1d ``features`` whose scale is fixed at 1. The
embedding is the feature; ``classifier`` (not in a backbone file) gives the logits. 112 px RGB
input, (x - 127.5) / 127.5. No distribution code here.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from crossres_dist.models.registry import Architecture, ModelSpec, layers_of, register

BN_EPS = 1e-5


def _bn(channels: int, momentum: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=momentum)


class IBasicBlock(nn.Module):
    """BN, 3x3 conv, BN, PReLU, 3x3 conv (with the stride), BN, plus the shortcut; no
    activation after the sum."""

    def __init__(self, inplanes: int, planes: int, stride: int, momentum: float) -> None:
        super().__init__()
        self.bn1 = _bn(inplanes, momentum)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, padding=1, bias=False)
        self.bn2 = _bn(planes, momentum)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = _bn(planes, momentum)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), _bn(planes, momentum)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """Returns ``(embedding, logits)``."""

    classifier_keys = ("classifier.weight", "classifier.bias")

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        if not spec.input_size or spec.input_size % 2 ** len(spec.layers):
            raise ValueError(
                f"iresnet halves its input in each of {len(spec.layers)} stages: the side must "
                f"be a multiple of {2 ** len(spec.layers)} (112 for arcface), got {spec.input_size}"
            )
        self.spec = spec
        w, m = spec.width, spec.bn_momentum
        self.conv1 = nn.Conv2d(3, w, 3, padding=1, bias=False)
        self.bn1 = _bn(w, m)
        self.prelu = nn.PReLU(w)
        inplanes = w
        for index, blocks in enumerate(spec.layers):
            planes = w * 2**index
            stage = [IBasicBlock(inplanes, planes, 2, m)]
            stage += [IBasicBlock(planes, planes, 1, m) for _ in range(blocks - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
            inplanes = planes
        self.bn2 = _bn(inplanes, m)
        side = spec.input_size // 2 ** len(spec.layers)
        self.fc = nn.Linear(inplanes * side * side, spec.embedding)
        self.features = nn.BatchNorm1d(spec.embedding, eps=BN_EPS, momentum=m)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        self.classifier = nn.Linear(spec.embedding, spec.num_classes)
        self.num_stages = len(spec.layers)

    def stages(self) -> list[nn.Module]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        for stage in self.stages():
            x = stage(x)
        return self.features(self.fc(torch.flatten(self.bn2(x), 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(x)
        return embedding, self.classifier(embedding)


def spec_from_state(state: dict[str, torch.Tensor]) -> ModelSpec:
    """The iResNet a state_dict holds: depth from its block names, width from the stem, the
    embedding and the input side from ``fc`` (last-stage channels x side/16 squared)."""
    layers = layers_of(state)
    width = state["conv1.weight"].shape[0]
    embedding, fc_inputs = state["fc.weight"].shape
    last = width * 2 ** (len(layers) - 1)
    side = round((fc_inputs / last) ** 0.5)
    if last * side * side != fc_inputs:
        raise ValueError(f"fc.weight has {fc_inputs} inputs, not {last} x a square side")
    classes = state["classifier.weight"].shape[0] if "classifier.weight" in state else 0
    return ModelSpec(
        **{
            **ARCHITECTURE.fixed,
            "arch": "iresnet",
            "layers": layers,
            "width": width,
            "num_classes": classes,
            "embedding": embedding,
            "input_size": side * 2 ** len(layers),
        }
    )


def _check_input(layers: tuple, side: int) -> str | None:
    stages = 2 ** len(layers)
    if side % stages:
        return f"{side}: an iresnet with {len(layers)} stages needs a multiple of {stages} (arcface: 112)"
    return None


ARCHITECTURE = register(
    Architecture(
        name="iresnet",
        summary="ArcFace's iResNet (arcface_torch); RGB, (x - 127.5) / 127.5, 112 px",
        network=IResNet,
        # arcface_torch's input: RGB, (x - 127.5) / 127.5; its 512-d embedding.
        fixed={
            "channels": "RGB",
            "mean": (127.5, 127.5, 127.5),
            "scale": 1 / 127.5,
            "expansion": 1,
            "embedding": 512,
        },
        feature_dim=lambda spec: spec.embedding,
        # model.embedding (0: 512), and the side its fully connected embedding is built for.
        from_config=lambda model_cfg, side: {
            "embedding": model_cfg.embedding or 512,
            "input_size": side,
        },
        # arcface_torch's backbone.pth: a PReLU stem and the embedding's BatchNorm1d "features".
        recognises=lambda state: "prelu.weight" in state and "features.running_mean" in state,
        spec_from_state=spec_from_state,
        check_input=_check_input,
    )
)
