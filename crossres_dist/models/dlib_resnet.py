"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1``, Davis King, public
domain), as ``examples/dnn_face_recognition_ex.cpp`` defines it: a 7x7/2 convolution, max pool,
then five levels of basic residual blocks (32, 64, 128, 256, 256 channels; 3, 4, 3, 3 and 1
blocks), global average pool and a 128-d linear descriptor without bias. 150 px RGB chips,
(x - channel mean) / 256.

What makes it dlib's and not a torchvision ResNet:
- BatchNorm was folded into per-channel ``affine`` layers (scale and shift, no statistics);
- every convolution has a bias;
- a strided convolution pads nothing (dlib pads only stride-1 windows), so the first block of a
  level can come out one row and column smaller than its shortcut;
- the shortcut of a down-sampling block is a 2x2/2 average pool of its input, not a projection,
  and the sum zero-pads the smaller operand in channels, rows and columns (``add_prev``).

The descriptor is the feature; ``classifier`` (not in dlib's file) gives logits over the run's
identities. No distribution here, and nothing of dlib's file format (crossres_dist/weights/).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from crossres_dist.models.registry import Architecture, ModelSpec, layers_of, register

# Channels of each level, as multiples of the stem's width (dlib: 32, 64, 128, 256, 256).
LEVEL_WIDTHS = (1, 2, 4, 8, 8)


class Affine(nn.Module):
    """Per-channel ``y = x * weight + bias``: dlib's ``affine`` layer, BatchNorm with its
    statistics folded in. Both are parameters, so that a student can adapt them (docs/method.md
    says why, and that ``model.bn_mode=frozen`` does not apply: there is no BatchNorm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


def padded_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the larger of the two shapes, the smaller operand
    zero-padded at the end of its channels, rows and columns."""
    if a.shape == b.shape:
        return a + b
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]

    def grow(t: torch.Tensor) -> torch.Tensor:
        # F.pad takes (last dim before, after, ...) pairs; pad only "after".
        pads = []
        for have, want in zip(reversed(t.shape[1:]), reversed(shape[1:])):
            pads += [0, want - have]
        return F.pad(t, pads) if any(pads) else t

    return grow(a) + grow(b)


def _conv(cin: int, cout: int, kernel: int, stride: int) -> nn.Conv2d:
    # dlib pads a stride-1 window by half its size and a strided one not at all.
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0)


class Block(nn.Module):
    """conv 3x3 (the stride), affine, ReLU, conv 3x3, affine, plus the shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = _conv(cin, cout, 3, 2 if down else 1)
        self.affine1 = Affine(cout)
        self.conv2 = _conv(cout, cout, 3, 1)
        self.affine2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(padded_sum(out, shortcut))


class DlibResNet(nn.Module):
    """Returns ``(descriptor, logits)``."""

    classifier_keys = ("classifier.weight", "classifier.bias")

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        if len(spec.layers) != len(LEVEL_WIDTHS):
            raise ValueError(
                f"dlib_resnet has {len(LEVEL_WIDTHS)} levels, got layers={list(spec.layers)}"
            )
        self.spec = spec
        self.conv1 = _conv(3, spec.width, 7, 2)
        self.affine1 = Affine(spec.width)
        cin = spec.width
        for index, (blocks, multiple) in enumerate(zip(spec.layers, LEVEL_WIDTHS)):
            cout = spec.width * multiple
            # The first level keeps the stem's side; every later one halves it in its first block.
            stage = [Block(cin, cout, down=index > 0)]
            stage += [Block(cout, cout, down=False) for _ in range(blocks - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
            cin = cout
        self.fc = nn.Linear(cin, spec.embedding, bias=False)
        self.classifier = nn.Linear(spec.embedding, spec.num_classes)
        self.num_stages = len(spec.layers)

    def stages(self) -> list[nn.Module]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.affine1(self.conv1(x))), 3, 2)
        for stage in self.stages():
            x = stage(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        descriptor = self.embed(x)
        return descriptor, self.classifier(descriptor)


def spec_from_state(state: dict[str, torch.Tensor]) -> ModelSpec:
    """The dlib ResNet a state_dict holds: levels from its block names, width from the stem,
    the descriptor's size from ``fc``."""
    classes = state["classifier.weight"].shape[0] if "classifier.weight" in state else 0
    return ModelSpec(
        **{
            **ARCHITECTURE.fixed,
            "arch": "dlib_resnet",
            "layers": layers_of(state),
            "width": state["conv1.weight"].shape[0],
            "num_classes": classes,
            "embedding": state["fc.weight"].shape[0],
        }
    )


def _check_input(layers: tuple, side: int) -> str | None:
    # Stem 7x7/2, max pool 3x3/2, then a valid 3x3/2 convolution per later level: below about
    # 4 * 2^levels px the last level has nothing left to convolve.
    smallest = 4 * 2 ** len(layers)
    if side < smallest:
        return f"{side}: a dlib_resnet with {len(layers)} levels needs at least {smallest} px (dlib: 150)"
    return None


# dlib's input layer (input_rgb_image_sized<150>): RGB minus these means, divided by 256.
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)

ARCHITECTURE = register(
    Architecture(
        name="dlib_resnet",
        summary="dlib's face ResNet (dlib_face_recognition_resnet_model_v1.dat); RGB, 150 px chips",
        network=DlibResNet,
        fixed={
            "channels": "RGB",
            "mean": DLIB_MEAN_RGB,
            "scale": 1 / 256,
            "expansion": 1,
            "embedding": 128,
        },
        feature_dim=lambda spec: spec.embedding,
        # Any side from the smallest up (global average pool); dlib's file says 150.
        from_config=lambda model_cfg, side: {
            "embedding": model_cfg.embedding or 128,
            "input_size": side,
        },
        # A converted dlib network: per-channel affine layers where others have BatchNorm.
        recognises=lambda state: "affine1.weight" in state and "layer5.0.conv1.bias" in state,
        spec_from_state=spec_from_state,
        check_input=_check_input,
    )
)
