"""Importers for the released VGGFace2 SE-ResNet-50 weight forms, safe loading, export."""

import dataclasses
import pickle

import numpy as np
import pytest
import torch

from crossres_dist.models import build_model
from crossres_dist.weights import WeightsError, assign, read_state
from crossres_dist.weights.forms import to_caffe_dict
from tests.conftest import TINY_SPEC
from tests.fixtures.weights import (
    write_form_a,
    write_form_b,
)


def write_form_c(model, path):
    state = {
        k: v.numpy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    with open(path, "wb") as f:
        pickle.dump(state, f, protocol=2)


WRITERS = {
    "A-zip.pth": write_form_a,
    "A-legacy.pth": lambda m, p: write_form_a(m, p, legacy=True),
    "B.npy": write_form_b,
    "C.pkl": write_form_c,
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_form_gives_the_same_features_and_logits(tmp_path, reference, name):
    path = tmp_path / f"senet_{name}"
    WRITERS[name](reference, path)
    state, spec = read_state(path)
    assert (spec.layers, spec.width, spec.num_classes, spec.se_reduction) == (
        TINY_SPEC.layers,
        TINY_SPEC.width,
        TINY_SPEC.num_classes,
        TINY_SPEC.se_reduction,
    )
    model = build_model(TINY_SPEC).eval()
    assign(model, state, str(path))
    x = torch.randn(3, 3, 40, 40)
    with torch.no_grad():
        f_ref, l_ref = reference(x)
        f, logits = model(x)
    assert torch.allclose(f, f_ref, atol=1e-6) and torch.allclose(logits, l_ref, atol=1e-6)


def test_errors_name_the_offending_key(tmp_path, reference):
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    model = build_model(TINY_SPEC)
    missing = dict(state)
    del missing["layer1.0.conv2.weight"]
    with pytest.raises(WeightsError, match="missing key 'layer1.0.conv2.weight'"):
        assign(model, missing, "f.pt")
    extra = {**state, "layer9.0.conv1.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match="unexpected key 'layer9.0.conv1.weight'"):
        assign(model, extra, "f.pt")
    wrong = {**state, "bn1.weight": torch.zeros(5)}
    with pytest.raises(
        WeightsError, match=r"key 'bn1.weight' has shape \(5,\), the network needs \(4,\)"
    ):
        assign(model, wrong, "f.pt")
    # A layer missing from a form B file is named by its Caffe name.
    caffe = to_caffe_dict(reference.state_dict(), TINY_SPEC.layers)
    del caffe["conv2_1_1x1_down"]
    np.save(tmp_path / "b.npy", caffe, allow_pickle=True)
    with pytest.raises(WeightsError, match="missing layer 'conv2_1_1x1_down'"):
        read_state(tmp_path / "b.npy")


def test_classifier_replaced_only_when_asked(reference):
    other = build_model(dataclasses.replace(TINY_SPEC, num_classes=7))
    with pytest.raises(WeightsError, match="student.replace_classifier=true"):
        assign(other, reference.state_dict(), "r.pt")
    fresh_fc = other.fc.weight.clone()
    assign(other, reference.state_dict(), "r.pt", replace_classifier=True)
    assert torch.equal(other.fc.weight, fresh_fc)  # kept its own classifier
    assert torch.equal(other.conv1.weight, reference.conv1.weight)  # features imported


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("suffix", [".pth", ".pkl", ".npy"])
def test_malicious_pickle_is_refused_without_side_effect(tmp_path, suffix):
    marker = tmp_path / "side_effect"
    path = tmp_path / f"evil{suffix}"
    payload = {"conv1.weight": _Exploit(marker)}
    if suffix == ".pth":
        torch.save(payload, path)
    elif suffix == ".npy":
        np.save(path, np.array(payload, dtype=object), allow_pickle=True)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(WeightsError) as err:
        read_state(path)
    assert "exec" in str(err.value) and str(path) in str(err.value)
    assert not marker.exists()
