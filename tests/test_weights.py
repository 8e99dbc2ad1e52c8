"""Importers for the released VGGFace2 SE-ResNet-50 weight forms, safe loading, export."""

import dataclasses
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn as nn

from crossres_dist.models import build_model
from crossres_dist.weights import WeightsError, assign, load_into, read_state
from crossres_dist.weights.convert import convert
from crossres_dist.weights.forms import attribute_name, layer_names, to_caffe_dict
from tests.conftest import REPO, TINY_SPEC, error_lines


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(1)
    model = build_model(TINY_SPEC).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that a mix-up would show
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def _main_model_module():
    """A stand-in for the research code's MMdnn module: MainModel.KitModel."""
    module = types.ModuleType("MainModel")

    class KitModel(nn.Module):
        def __init__(self, state, layers):
            super().__init__()
            for ours, caffe, kind in layer_names(layers):
                weight = state[f"{ours}.weight"]
                if kind == "bn":
                    layer = nn.BatchNorm2d(weight.shape[0], eps=1e-5, momentum=0.0)
                elif kind == "linear":
                    layer = nn.Linear(weight.shape[1], weight.shape[0])
                else:
                    layer = nn.Conv2d(
                        weight.shape[1], weight.shape[0], weight.shape[2:], bias=kind == "conv+bias"
                    )
                layer.load_state_dict(
                    {k.split(".")[-1]: v for k, v in state.items() if k.rsplit(".", 1)[0] == ours}
                )
                setattr(self, attribute_name(caffe), layer)

    KitModel.__module__, KitModel.__qualname__ = "MainModel", "KitModel"
    module.KitModel = KitModel
    return module


def write_form_a(model, path, legacy=False):
    module = _main_model_module()
    sys.modules["MainModel"] = module
    try:
        kit = module.KitModel(model.state_dict(), TINY_SPEC.layers)
        torch.save(kit, path, _use_new_zipfile_serialization=not legacy)
    finally:
        del sys.modules["MainModel"]  # the importer must not need it


def write_form_b(model, path):
    np.save(path, to_caffe_dict(model.state_dict(), TINY_SPEC.layers), allow_pickle=True)


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


@pytest.mark.launch
def test_convert_writes_a_plain_state_dict(tmp_path, reference):
    source, target = tmp_path / "w.npy", tmp_path / "out" / "senet.pt"
    write_form_b(reference, source)
    info = convert(source, target)
    assert info["num_classes"] == 40
    model = build_model(TINY_SPEC)
    load_into(model, target)
    loaded = torch.load(target, weights_only=True)["student"]
    assert torch.equal(loaded["fc.weight"], reference.state_dict()["fc.weight"])
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "crossres_dist.weights.convert",
            str(source),
            str(tmp_path / "c.pt"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0 and "40 identities" in cli.stdout


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


@pytest.mark.launch
def test_onnx_export_matches_pytorch(tmp_path, reference):
    ort = pytest.importorskip(
        "onnxruntime", reason="onnxruntime is not installed (requirements.txt)"
    )
    checkpoint = tmp_path / "student.pt"
    torch.save(reference.state_dict(), checkpoint)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "crossres_dist.weights.export",
            str(checkpoint),
            "--size",
            "40",
            "--onnx",
            str(tmp_path / "s.onnx"),
            "--torchscript",
            str(tmp_path / "s.ts"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    session = ort.InferenceSession(str(tmp_path / "s.onnx"))
    for batch in (1, 4):  # dynamic batch
        x = np.random.default_rng(batch).standard_normal((batch, 3, 40, 40)).astype(np.float32)
        feature, logits = session.run(None, {"image": x})
        with torch.no_grad():
            f_ref, l_ref = reference(torch.from_numpy(x))
        assert np.abs(feature - f_ref.numpy()).max() < 1e-4 and logits.shape == (batch, 40)
    scripted = torch.jit.load(str(tmp_path / "s.ts"))
    x = torch.randn(2, 3, 40, 40)
    assert torch.allclose(scripted(x)[0], reference(x)[0], atol=1e-5)


@pytest.mark.launch
def test_training_takes_a_released_form_directly_as_teacher(tmp_path, reference):
    from tests.conftest import results, run_cmd, tiny_args, train_cmd

    teacher = tmp_path / "senet50_ft_pytorch.pth"
    write_form_a(reference, teacher, legacy=True)
    run_dir = tmp_path / "from-form-a"
    run_cmd(train_cmd(1, *tiny_args(run_dir, teacher, "train.max_steps=2")))
    assert results(run_dir)["step"] == 2


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/crossres-should-not-exist",))


def _bad_weights(tmp_path, good):
    data = good.read_bytes()
    files = {
        "truncated": (tmp_path / "truncated.pt", data[: len(data) // 3]),
        "random": (tmp_path / "random.pth", np.random.default_rng(0).bytes(4000)),
        "empty": (tmp_path / "empty.pkl", b""),
    }
    for path, content in files.values():
        path.write_bytes(content)
    malicious = tmp_path / "malicious.pt"
    torch.save({"student": _RunsCode()}, malicious)  # a zip checkpoint naming os.system
    return {**{k: v[0] for k, v in files.items()}, "malicious": malicious}


@pytest.mark.launch
def test_bad_weights_files_get_one_line_that_says_what_they_are_not(tmp_path, tiny_teacher):
    bad = _bad_weights(tmp_path, tiny_teacher)
    expected = {
        "truncated": "a damaged or truncated PyTorch checkpoint",
        "random": "not a PyTorch checkpoint, a numpy .npy file or a pickle of arrays",
        "empty": "an empty file, not a PyTorch checkpoint",
        "malicious": "refused global 'posix.system'",
    }
    # Every tool (train, evaluate, export, convert) reads weights through read_state.
    for kind, path in bad.items():
        with pytest.raises(WeightsError) as err:
            read_state(path)
        message = str(err.value)
        assert message.startswith(f"{path}: ") and expected[kind] in message, message
        assert "\n" not in message and "weights_only" not in message
    assert not os.path.exists("/tmp/crossres-should-not-exist")

    # Through two real command lines: exit 2, one line, no traceback, no unsafe advice.
    def assert_refused(result, path, text):
        assert result.returncode == 2, result.stderr[-2000:]
        errors = error_lines(result.stderr)
        assert len(errors) == 1 and f"{path}: " in errors[0] and text in errors[0], errors
        assert "Traceback" not in result.stderr and "weights_only" not in result.stderr

    malicious = bad["malicious"]
    convert = [
        sys.executable,
        "-m",
        "crossres_dist.weights.convert",
        str(malicious),
        str(tmp_path / "o.pt"),
    ]
    assert_refused(
        subprocess.run(convert, cwd=REPO, capture_output=True, text=True),
        malicious,
        expected["malicious"],
    )
    truncated = bad["truncated"]
    train = [
        sys.executable,
        "-m",
        "crossres_dist.train",
        "--config",
        str(REPO / "tests" / "tiny.yaml"),
        f"teacher.checkpoint={truncated}",
        f"run.output_dir={tmp_path}",
    ]
    assert_refused(
        subprocess.run(train, cwd=REPO, capture_output=True, text=True),
        truncated,
        expected["truncated"],
    )
