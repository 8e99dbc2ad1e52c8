"""The launched half of tests/unit/test_weights.py: Importers for the released VGGFace2 SE-ResNet-50 weight forms, safe loading, export."""

# The fixtures come from the unit half and are requested by name: not redefinitions.
# ruff: noqa: F811

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from crossres_dist.models import build_model
from crossres_dist.weights import WeightsError, load_into, read_state
from crossres_dist.weights.convert import convert
from tests.conftest import REPO, TINY_SPEC, error_lines
from tests.fixtures.weights import (
    bad_weights,
    write_form_a,
    write_form_b,
)


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


@pytest.mark.launch
def test_bad_weights_files_get_one_line_that_says_what_they_are_not(tmp_path, tiny_teacher):
    bad = bad_weights(tmp_path, tiny_teacher)
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
