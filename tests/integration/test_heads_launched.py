"""The launched half of tests/unit/test_heads.py: Margin heads (crossres_dist/heads/) against hand computations, and PartialFC"""

import json
import shutil

import pytest
import torch

from tests.conftest import child_env, results, run_cmd, tiny_args, train_cmd
from tests.fixtures.heads import (
    TORCHRUN,
)


@pytest.mark.launch
def test_partial_fc_equals_the_unsharded_head_and_samples_alike_on_1_2_and_4_ranks(tmp_path):
    sampled_by_world = {}
    for ranks in (1, 2, 4):
        out = tmp_path / f"check-{ranks}.json"
        worker = ["bench/partial_fc.py", "--worker", "--check", "--out", str(out)]
        sizes = ["--classes", "40", "--dim", "16", "--batch", "16"]
        run_cmd([*TORCHRUN, f"--nproc_per_node={ranks}", *worker, *sizes], env=child_env())
        per_rank = json.loads(out.read_text())
        assert len(per_rank) == ranks
        for r in per_rank:
            for head, v in r["heads"].items():
                assert v["loss"] == pytest.approx(v["reference_loss"], abs=1e-4), head
                assert v["feature_grad_diff"] <= 1e-5, head
                assert v["weight_grad_diff"] <= 1e-5 * v["grad_scale"], head
                assert v["statistics"] == pytest.approx(v["reference_statistics"], rel=1e-6)
        labels = set(per_rank[0]["labels"])
        for step in ("0", "1", "2"):
            union = sorted(c for r in per_rank for c in r["sampled"][step])
            for r in per_rank:  # each rank samples inside its own slice
                start, end = r["bounds"]
                assert all(start <= c < end for c in r["sampled"][step])
            assert labels <= set(union)  # every class of the global batch is kept
            sampled_by_world.setdefault(step, []).append(union)
    for step, unions in sampled_by_world.items():
        # The same classes whatever the number of ranks, and about half of them at rate 0.5.
        assert unions[0] == unions[1] == unions[2], step
        assert 10 < len(unions[0]) < 40


@pytest.mark.launch
def test_adaface_partial_fc_resumes_exactly_and_on_another_number_of_ranks(tmp_path, tiny_teacher):
    settings_ = ["head.name=adaface", "head.partial_fc=true", "train.precision=fp32"]
    whole = tmp_path / "whole"
    run_cmd(train_cmd(2, *tiny_args(whole, tiny_teacher, *settings_)), timeout=300)
    halves = tmp_path / "halves"
    first = tiny_args(halves, tiny_teacher, *settings_, "train.stop_after_step=3")
    run_cmd(train_cmd(2, *first), timeout=300)
    checkpoint = halves / "checkpoints" / "step_00000003.pt"
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["student"]["fc.weight"].shape[0] == 40  # the whole classifier, from 2 slices
    assert saved["partial_fc_momentum"].shape == saved["student"]["fc.weight"].shape
    assert saved["model_spec"]["classifier"] == "cosine"
    elsewhere = tmp_path / "on-one-rank"
    shutil.copytree(halves, elsewhere)
    run_cmd(train_cmd(2, *tiny_args(halves, tiny_teacher, *settings_)), timeout=300)
    # Resumed on the same 2 ranks: bitwise the uninterrupted run.
    assert results(halves)["param_checksum_per_rank"] == results(whole)["param_checksum_per_rank"]
    assert results(halves)["final"] == results(whole)["final"]
    # Resumed on 1 rank: the classifier's slices become one; it finishes, near the 2-rank run
    # (only the order of the float sums differs).
    run_cmd(train_cmd(1, *tiny_args(elsewhere, tiny_teacher, *settings_)), timeout=300)
    one, two = results(elsewhere), results(whole)
    assert one["step"] == 6 and one["ranks_agree"]
    assert one["param_checksum_per_rank"][0] == pytest.approx(
        two["param_checksum_per_rank"][0], rel=1e-4
    )
    final = torch.load(elsewhere / "checkpoints" / "step_00000006.pt", weights_only=True)
    assert final["student"]["fc.weight"].shape == saved["student"]["fc.weight"].shape
