"""ArcFace iResNet students and teachers: arcface_torch's backbone.pth layout read safely and
checked against a forward written here from scratch; training with a sharded, compiled iResNet;
export."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from crossres_dist.models import build_model
from crossres_dist.weights import WeightsError, assign, read_state
from tests.fixtures.iresnet import (
    arcface_state,
    save,
)


def _reference_embedding(state, layers, x):
    """arcface_torch's iResNet forward, in plain functional calls on the state_dict."""

    def bn(t, name):
        return F.batch_norm(
            t,
            state[f"{name}.running_mean"],
            state[f"{name}.running_var"],
            state[f"{name}.weight"],
            state[f"{name}.bias"],
            False,
            0.0,
            1e-5,
        )

    x = F.conv2d(x, state["conv1.weight"], padding=1)
    x = F.prelu(bn(x, "bn1"), state["prelu.weight"])
    for s, blocks in enumerate(layers):
        for b in range(blocks):
            p = f"layer{s + 1}.{b}"
            stride = 2 if b == 0 else 1
            out = F.conv2d(bn(x, f"{p}.bn1"), state[f"{p}.conv1.weight"], padding=1)
            out = F.prelu(bn(out, f"{p}.bn2"), state[f"{p}.prelu.weight"])
            out = bn(
                F.conv2d(out, state[f"{p}.conv2.weight"], stride=stride, padding=1), f"{p}.bn3"
            )
            if b == 0:
                x = bn(
                    F.conv2d(x, state[f"{p}.downsample.0.weight"], stride=stride),
                    f"{p}.downsample.1",
                )
            x = out + x
    x = torch.flatten(bn(x, "bn2"), 1)
    x = F.linear(x, state["fc.weight"], state["fc.bias"])
    return bn(x, "features")


def test_arcface_r18_backbone_loads_and_matches_an_independent_forward(tmp_path):
    layers = (2, 2, 2, 2)
    state = arcface_state(layers, 64, 512, 7)
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    loaded, spec = read_state(path)
    assert spec.arch == "iresnet" and spec.layers == layers and spec.width == 64
    assert spec.embedding == 512 and spec.input_size == 112 and spec.channels == "RGB"
    model = build_model(dataclasses.replace(spec, num_classes=10)).eval()
    assign(model, loaded, str(path))  # no classifier in the file: the network keeps its own
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        embedding, logits = model(x)
        expected = _reference_embedding(state, layers, x)
    assert embedding.shape == (2, 512) and logits.shape == (2, 10)
    assert torch.allclose(embedding, expected, atol=1e-4, rtol=1e-4)


def test_arcface_backbone_with_a_wrong_key_or_shape_is_refused_by_name(tmp_path):
    state = arcface_state((1, 1), 8, 16, 2)
    loaded_spec = read_state(save(tmp_path / "ok.pth", state))[1]
    model = build_model(loaded_spec)
    bad = dict(state)
    bad["layer1.0.conv1.weight"] = torch.zeros(8, 8, 5, 5)
    with pytest.raises(WeightsError, match=r"key 'layer1.0.conv1.weight' has shape \(8, 8, 5, 5\)"):
        assign(model, bad, "bad.pth")
    del bad["layer1.0.conv1.weight"]
    with pytest.raises(WeightsError, match="missing key 'layer1.0.conv1.weight'"):
        assign(model, bad, "bad.pth")
