"""The FSDP2-sharded teacher on 1, 2 and 4 CPU ranks (gloo), and the validation-feature cache."""

import json
import sys

import pytest
import torch

from crossres_dist.models import build_model
from crossres_dist.training.validation import teacher_key
from tests.conftest import REPO, TINY_SPEC, child_env, results, run_cmd, tiny_args, train_cmd

VENV_TORCHRUN = str(__import__("pathlib").Path(sys.executable).parent / "torchrun")


@pytest.mark.parametrize("ranks", [1, 2, 4])
@pytest.mark.launch
def test_sharded_teacher_equals_replicated_and_holds_1_over_n(tmp_path, ranks):
    out = tmp_path / "teacher.json"
    run_cmd(
        [
            VENV_TORCHRUN,
            "--standalone",
            f"--nproc_per_node={ranks}",
            "bench/teacher.py",
            "--worker",
            "--out",
            str(out),
            "--layers",
            "1",
            "1",
            "--width",
            "8",
            "--classes",
            "40",
            "--size",
            "48",
            "--repeats",
            "1",
        ],
        env=child_env(PYTHONWARNINGS="ignore"),
    )
    per_rank = json.loads(out.read_text())
    assert len(per_rank) == ranks
    for r in per_rank:
        # Same float32 features (the all-gathered parameters are the same numbers).
        assert r["max_abs_diff"] <= 1e-6
        full, whole = r["full"]["param_bytes"], r["none"]["param_bytes"]
        # About 1/N: FSDP pads each parameter's dim 0 to a multiple of N.
        assert whole / ranks * 0.9 <= full <= whole / ranks * 1.15, (full, whole)
    assert sum(r["full"]["param_bytes"] for r in per_rank) >= per_rank[0]["none"]["param_bytes"]


@pytest.mark.launch
def test_validation_cache_computed_once_and_invalidated(tmp_path, tiny_teacher):
    run_dir = tmp_path / "cache-run"
    first = run_cmd(
        train_cmd(
            2, *tiny_args(run_dir, tiny_teacher, "teacher.sharding=full", "train.max_steps=2")
        )
    )
    assert "validation teacher features: computed for 80 images" in first.stdout
    assert len(list((run_dir / "cache").glob("val_teacher_features-*.pt"))) == 1
    # Resumed (more steps): the cache is reused.
    again = run_cmd(
        train_cmd(
            2, *tiny_args(run_dir, tiny_teacher, "teacher.sharding=full", "train.max_steps=3")
        )
    )
    assert "validation teacher features: cached" in again.stdout
    assert results(run_dir)["step"] == 3
    # Cached features are the teacher's features of the full-resolution validation views.
    cached = torch.load(next((run_dir / "cache").glob("*.pt")), weights_only=True)
    assert cached.shape == (80, TINY_SPEC.feature_dim) and torch.isfinite(cached).all()
    # The key follows the teacher file: rewritten in place (other weights), it is another key.
    teacher_copy = tmp_path / "teacher.pt"
    teacher_copy.write_bytes(tiny_teacher.read_bytes())
    before = teacher_key(str(teacher_copy))
    torch.manual_seed(5)
    torch.save(build_model(TINY_SPEC).state_dict(), teacher_copy)
    assert teacher_key(str(teacher_copy)) != before
    # Another validation set: computed anew, beside the first.
    other_val = run_cmd(
        train_cmd(1, *tiny_args(run_dir, tiny_teacher, "val.every_nth=2", "train.max_steps=4"))
    )
    assert "validation teacher features: computed for 40 images" in other_val.stdout
    assert len(list((run_dir / "cache").glob("val_teacher_features-*.pt"))) == 2


@pytest.mark.launch
def test_deeper_teacher_with_matching_feature_size_is_accepted(tmp_path):
    from crossres_dist.models import ModelSpec

    deeper = tmp_path / "deeper.pt"
    torch.save(
        {
            "student": build_model(
                ModelSpec(layers=(2, 2), width=4, num_classes=40, se_reduction=4)
            ).state_dict(),
            "model_spec": {
                "layers": [2, 2],
                "width": 4,
                "num_classes": 40,
                "se_reduction": 4,
                "bn_momentum": 0.0,
                "expansion": 4,
            },
        },
        deeper,
    )
    run_dir = tmp_path / "deeper-run"
    # The student keeps its own (shallower) shape and starts from scratch.
    run_cmd(
        train_cmd(
            2,
            *tiny_args(
                run_dir, deeper, "student.init=", "teacher.sharding=full", "train.max_steps=2"
            ),
        )
    )
    assert results(run_dir)["ranks_agree"]
    assert "student (1, 1)" in (run_dir / "train.log").read_text()
    assert REPO.is_dir()
