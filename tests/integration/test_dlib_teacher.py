"""dlib's face network as the teacher of a real run (configs/dlib_recipe.yaml): the student
starts as the teacher with its classifier at the teacher's class centres, trains, and writes a
checkpoint that evaluation rebuilds; a damaged teacher is one line before any data is read."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from crossres_dist.eval.align_faces import align_set
from tests.conftest import LFW, needs_dlib, needs_lfw, run_cmd, train_cmd

pytestmark = [pytest.mark.launch, needs_lfw, needs_dlib]
TEACHER = "dlib_face_recognition_resnet_model_v1"


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    """Four LFW people, 8 faces each, aligned as the network needs them."""
    raw = tmp_path_factory.mktemp("raw")
    for person in sorted(LFW.iterdir())[:4]:
        (raw / person.name).mkdir()
        for image in sorted(person.glob("*.jpg"))[:8]:
            shutil.copy(image, raw / person.name / image.name)
    out = tmp_path_factory.mktemp("aligned")
    counts = align_set(str(raw), out, "dlib150", workers=1)
    assert counts["aligned"] >= 30
    return out


def small_run(run_dir: Path, chips: Path, *extra: str) -> list[str]:
    return train_cmd(
        1,
        "--config",
        "configs/dlib_recipe.yaml",
        f"data.train={chips}",
        f"run.output_dir={run_dir.parent}",
        f"run.name={run_dir.name}",
        "data.micro_batch=8",
        "optim.global_batch=8",
        "train.max_steps=2",
        "val.every=2",
        "val.report_resolutions=[8]",
        "val.min_images=4",
        "train.progress_bar=false",
        *extra,
    )


def test_the_student_starts_as_the_teacher_and_recognises_at_step_0(tmp_path, chips):
    run_dir = tmp_path / "student"
    run_cmd(small_run(run_dir, chips), timeout=300)
    log = (run_dir / "train.log").read_text()
    assert "the teacher's centres of 4 classes" in log
    step0 = re.search(r"validation at step 0 .*full top-1 ([0-9.]+) .*8px top-1 ([0-9.]+)", log)
    # A real face network with its classifier at its own class centres: the held-out faces of
    # these people are recognised at full resolution before any step, far less at 8 px.
    assert float(step0[1]) >= 0.85 and float(step0[2]) < float(step0[1])
    final = json.loads((run_dir / "results.json").read_text())
    assert final["step"] == 2 and final["nonfinite_steps"] == 0
    saved = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert saved["model_spec"]["arch"] == "dlib_resnet" and saved["model_spec"]["input_size"] == 150


def test_a_damaged_teacher_is_one_line_before_any_data(tmp_path, chips):
    from crossres_dist.weights.dlib_dat import find_packaged

    damaged = tmp_path / "damaged.dat"
    damaged.write_bytes(find_packaged(TEACHER).read_bytes()[:5000])
    result = run_cmd(small_run(tmp_path / "s", chips, f"teacher.checkpoint={damaged}"), check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {damaged}: truncated") and "at byte" in lines[-1]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "s" / "splits.json").exists()  # refused before the data was read
