"""SE-ResNet as released for VGGFace2 ("senet50_ft"), with depth and width as settings.

The forward is the one in weights-formats.md (the Caffe network as MMdnn converted it): explicit
zero padding around the 7x7 stem, a -inf padded 3x3 max-pool, strided 1x1 reduce convolutions,
squeeze-excite with biased 1x1 convolutions. Parameter names follow the torchvision-style form C,
so a state_dict of this module and a form C file share their keys. No distribution code here.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from crossres_dist.models.registry import MEAN_BGR, Architecture, ModelSpec, layers_of, register

# BatchNorm eps as stored in the Caffe model (float32 of 1e-5).
BN_EPS = 9.99999974738e-06


def _bn(channels: int, momentum: float) -> nn.BatchNorm2d:
    # nn.BatchNorm2d's momentum=0 keeps running statistics fixed while training with batch ones.
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=momentum)


class SEBottleneck(nn.Module):
    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        reduction: int,
        momentum: float,
        expansion: int = 4,
    ) -> None:
        super().__init__()
        out = planes * expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = _bn(planes, momentum)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = _bn(planes, momentum)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = _bn(out, momentum)
        self.conv4 = nn.Conv2d(out, out // reduction, 1, bias=True)  # squeeze ("1x1_down")
        self.conv5 = nn.Conv2d(out // reduction, out, 1, bias=True)  # excite ("1x1_up")
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), _bn(out, momentum)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = F.relu(self.bn1(self.conv1(x)))
        u = F.relu(self.bn2(self.conv2(u)))
        u = self.bn3(self.conv3(u))
        s = torch.sigmoid(self.conv5(F.relu(self.conv4(F.adaptive_avg_pool2d(u, 1)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(s * u + shortcut)


class SEResNet(nn.Module):
    """Returns ``(feature, logits)``: the global-average-pooled feature and the classifier."""

    classifier_keys = ("fc.weight", "fc.bias")

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        w, m = spec.width, spec.bn_momentum
        self.conv1 = nn.Conv2d(3, w, 7, stride=2, bias=False)
        self.bn1 = _bn(w, m)
        inplanes = w
        for index, blocks in enumerate(spec.layers):
            planes = w * 2**index
            stride = 1 if index == 0 else 2
            stage = []
            for b in range(blocks):
                stage.append(
                    SEBottleneck(
                        inplanes,
                        planes,
                        stride if b == 0 else 1,
                        spec.se_reduction,
                        m,
                        spec.expansion,
                    )
                )
                inplanes = planes * spec.expansion
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
        self.fc = nn.Linear(inplanes, spec.num_classes)
        self.num_stages = len(spec.layers)

    def stages(self) -> list[nn.Module]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(F.pad(x, (3, 3, 3, 3)))))
        # Caffe's ceil-mode 3x3/2 pooling = pad right/bottom by one with -inf, then floor mode.
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)
        for stage in self.stages():
            x = stage(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.features(x)
        return feature, self.fc(feature)


def spec_from_state(state: dict[str, torch.Tensor]) -> ModelSpec:
    """The SE-ResNet a state_dict (any of the released VGGFace2 forms, read into the project's
    names) holds: depth from its block names, width from the stem, the SE reduction and the
    classes from the layers' shapes."""
    width = state["conv1.weight"].shape[0]
    reduction = state["layer1.0.conv3.weight"].shape[0] // state["layer1.0.conv4.weight"].shape[0]
    return ModelSpec(
        arch="seresnet",
        layers=layers_of(state),
        width=width,
        num_classes=state["fc.weight"].shape[0],
        se_reduction=reduction,
    )


ARCHITECTURE = register(
    Architecture(
        name="seresnet",
        summary="SE-ResNet as released for VGGFace2, the paper's; Caffe input: BGR, 0..255 minus the mean",
        network=SEResNet,
        # Caffe's input: BGR, 0..255 minus the VGGFace2 mean, no scaling.
        fixed={"channels": "BGR", "mean": MEAN_BGR, "scale": 1.0, "expansion": 4},
        # The pooled last stage.
        feature_dim=lambda spec: spec.width * 2 ** (len(spec.layers) - 1) * spec.expansion,
        # The released VGGFace2 forms: a classifier "fc" over SE blocks (conv4/conv5 squeeze and
        # excite), no embedding layer.
        recognises=lambda state: "fc.weight" in state and "layer1.0.conv4.weight" in state,
        spec_from_state=spec_from_state,
    )
)
