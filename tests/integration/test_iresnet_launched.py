"""The launched half of tests/unit/test_iresnet.py: ArcFace iResNet students and teachers: arcface_torch's backbone.pth layout read safely and"""

import subprocess
import sys

import numpy as np
import pytest
import torch

from crossres_dist.models import build_model
from crossres_dist.weights import read_state
from tests.conftest import REPO, results, run_cmd, tiny_args, train_cmd
from tests.fixtures.iresnet import (
    arcface_state,
    save,
)


@pytest.mark.launch
def test_iresnet_trains_sharded_and_compiled_on_two_ranks_like_eager_and_exports(tmp_path):
    """An iResNet teacher from a backbone.pth (no classifier), an iResNet student started from
    it with a classifier of its own, the teacher sharded with FSDP2; compiled (student and
    teacher, the GPU configs' path) it trains with the same losses as eager."""
    teacher = save(tmp_path / "backbone.pth", arcface_state((1, 1), 8, 16, 2))
    common = (
        "model.arch=iresnet",
        "model.layers=[1,1]",
        "model.width=8",
        "model.embedding=16",
        # Two stages halve 8 px twice: the 2 x 2 grid the backbone's fc was made for.
        "data.resize_shorter=9",
        "data.crop=8",
        "method.resolutions=[4]",
        "val.resolution=4",
        "val.report_resolutions=[4]",
        "teacher.sharding=full",
        "train.max_steps=3",
        "train.log_every=1",
    )
    eager, run_dir = tmp_path / "eager", tmp_path / "run"
    run_cmd(train_cmd(2, *tiny_args(eager, teacher, *common)))
    compiled = ("compile.student=true", "compile.teacher=true")
    run_cmd(train_cmd(2, *tiny_args(run_dir, teacher, *common, *compiled)), timeout=400)

    def losses(path):
        lines = (path / "train.log").read_text().splitlines()
        return [float(line.split(" loss ")[1].split()[0]) for line in lines if "/3 loss" in line]

    assert len(losses(eager)) == 3 and losses(run_dir) == pytest.approx(losses(eager), rel=1e-3)
    res = results(run_dir)
    assert res["step"] == 3 and res["ranks_agree"]
    checkpoint = run_dir / "checkpoints" / "step_00000003.pt"
    state, spec = read_state(checkpoint)
    assert spec.arch == "iresnet" and spec.embedding == 16 and spec.num_classes == 40
    assert "classifier.weight" in state and not any("_orig_mod" in k for k in state)
    # Export rebuilds it from the checkpoint alone; ONNX Runtime agrees with PyTorch.
    onnx_file = tmp_path / "student.onnx"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "crossres_dist.weights.export",
            str(checkpoint),
            "--onnx",
            str(onnx_file),
            "--size",
            "8",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    import onnxruntime

    model = build_model(spec).eval()
    model.load_state_dict(state)
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    feature, logits = onnxruntime.InferenceSession(str(onnx_file)).run(None, {"image": x})
    with torch.no_grad():
        expected = model(torch.from_numpy(x))
    assert np.allclose(feature, expected[0].numpy(), atol=1e-4)
    assert np.allclose(logits, expected[1].numpy(), atol=1e-4)
