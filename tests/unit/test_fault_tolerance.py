"""Preemption, worker loss, exact resume, interrupted saves, non-finite losses, preflight."""

import torch

from crossres_dist.checkpointing.manager import CheckpointManager, load_checkpoint


def test_corrupt_newest_checkpoint_falls_back_to_an_older_one(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=3)
    for step in (1, 2):
        manager.save({"step": step, "w": torch.ones(3) * step}, step)
    newest = manager.step_path(2)
    newest.write_bytes(newest.read_bytes()[:20])  # truncated after the rename (disk failure)
    path, state = manager.find_latest()
    assert path.name == "step_00000001.pt" and state["step"] == 1
    # Set aside, so that it can never sort newer than the checkpoints written after the resume.
    assert (manager.dir / "corrupt" / "step_00000002.pt").is_file() and not newest.exists()


def test_keep_last_k_and_best(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step, metric in [(1, 0.5), (2, 0.9), (3, 0.7), (4, 0.6)]:
        manager.save({"step": step}, step, metric)
    assert [p.name for p in manager.complete()] == ["step_00000003.pt", "step_00000004.pt"]
    assert load_checkpoint(manager.best_path)["step"] == 2
