"""The launched half of tests/unit/test_splits.py: Clean splits: train / validation (selection) / test (reporting), drawn with data.split_seed"""

# The fixtures come from the unit half and are requested by name: not redefinitions.
# ruff: noqa: F811

import json

import pytest

from crossres_dist.checkpointing.manager import load_checkpoint
from tests.conftest import (
    error_lines,
    run_cmd,
    tiny_args,
    train_cmd,
)
from tests.fixtures.splits import (
    evaluate,
)


@pytest.mark.launch
def test_run_seed_changes_the_order_but_not_the_split(students):
    """Two students with other run.seed train on the same images: the recorded split and its
    fingerprints are equal, the weights are not."""
    records, sums = [], []
    for run_dir in students.values():
        state = load_checkpoint(run_dir / "checkpoints" / "step_00000002.pt")
        records.append(state["splits"])
        sums.append(json.loads((run_dir / "results.json").read_text())["param_checksum_per_rank"])
        assert json.loads((run_dir / "splits.json").read_text()) == state["splits"]
    assert records[0] == records[1] and records[0]["split_seed"] == 0
    assert records[0]["counts"] == {"train": 240, "val": 80, "test": 80}
    assert sums[0] != sums[1]


@pytest.mark.launch
def test_resume_refuses_another_split(students, tiny_teacher):
    run_dir = students[1]
    args = tiny_args(run_dir, tiny_teacher, "run.seed=1", "data.test=split:2", "train.max_steps=2")
    refused = run_cmd(train_cmd(1, *args, "data.split_seed=5"), check=False)
    assert refused.returncode == 2
    assert "data.split_seed: the checkpoint in" in refused.stderr
    assert "was trained with split_seed=0, this run asks for 5" in refused.stderr


@pytest.mark.launch
def test_evaluator_refuses_training_images_and_reports_them_when_allowed(tmp_path, students):
    best = students[1] / "checkpoints" / "best.pt"
    # The test split of another split_seed holds images this student trained on.
    refused = evaluate(tmp_path / "e1", best, "data.split_seed=3", check=False)
    assert refused.returncode == 2
    error = error_lines(refused.stderr)
    assert len(error) == 1 and "are training images of this checkpoint" in error[0]
    assert "--allow-overlap" in error[0] and not (tmp_path / "e1" / "results.json").exists()
    evaluate(tmp_path / "e2", best, "data.split_seed=3", "--allow-overlap")
    report = json.loads((tmp_path / "e2" / "results.json").read_text())
    leaked = report["models"]["student"]["provenance"]["overlap_with_training"]
    assert leaked > 0
    assert f"trained on {leaked} of these images" in (tmp_path / "e2" / "results.md").read_text()
    # Its own test split is clean; its validation split chose best.pt (reported, not refused).
    evaluate(tmp_path / "e3", best)
    own = json.loads((tmp_path / "e3" / "results.json").read_text())["models"]["student"]
    assert own["provenance"]["overlap_with_training"] == 0
    assert own["provenance"]["overlap_with_selection"] == 0
    evaluate(tmp_path / "e4", best, "--split", "val")
    val = json.loads((tmp_path / "e4" / "results.json").read_text())["models"]["student"]
    assert val["provenance"]["overlap_with_selection"] == 80


@pytest.mark.launch
def test_evaluator_checks_the_checkpoint_a_student_started_from(tmp_path, students):
    """A student started from another one (trained on split_seed 0) but split with
    split_seed 4: its own test split holds images its starting point trained on."""
    start = students[1] / "checkpoints" / "best.pt"
    student_dir = tmp_path / "student"
    out = run_cmd(
        train_cmd(
            1,
            *tiny_args(
                student_dir, start, "train.max_steps=1", "data.test=split:2", "data.split_seed=4"
            ),
        )
    )
    assert "were training images of the checkpoint it starts from" in out.stdout
    checkpoint = student_dir / "checkpoints" / "best.pt"
    refused = evaluate(tmp_path / "e", checkpoint, "data.split_seed=4", check=False)
    assert refused.returncode == 2 and "or the one it started from" in refused.stderr
    # Both records travel with the checkpoint: its own split and its starting point's.
    lineage = load_checkpoint(checkpoint)["lineage"]
    assert [r["split_seed"] for r in lineage] == [0]
    assert load_checkpoint(checkpoint)["splits"]["split_seed"] == 4


@pytest.mark.launch
def test_resumed_trainer_keeps_best_from_a_new_best_checkpoint(tmp_path, tiny_teacher):
    """End to end: the step-3 checkpoint was a new best and records it; after the resume, the
    later checkpoints may only replace best.pt if they beat it."""
    run_dir = tmp_path / "run"
    common = ("train.max_steps=9", "val.every=3", "optim.lr=0.3")
    run_cmd(train_cmd(1, *tiny_args(run_dir, tiny_teacher, *common, "train.stop_after_step=3")))
    at_three = load_checkpoint(run_dir / "checkpoints" / "step_00000003.pt")
    best_three = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert at_three["best_metric"] == best_three["best_metric"]
    run_cmd(train_cmd(1, *tiny_args(run_dir, tiny_teacher, *common)))
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["best_metric"] >= at_three["best_metric"]
    assert json.loads((run_dir / "results.json").read_text())["best_metric"] == best["best_metric"]
