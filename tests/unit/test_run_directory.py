"""Run directories that cannot be wedged (2 ranks each): damaged side files are rebuilt,
unreadable checkpoints are set aside, a deleted best.pt comes back, one job per directory, a
frozen rank ends the job in seconds, a full disk is one line. Each ends in a resumable run
directory or in a one-line error that says what to do."""

import threading

import pytest
import torch

from crossres_dist import logs
from crossres_dist.checkpointing import manager as checkpoint
from crossres_dist.checkpointing import run_directory as rundir
from tests.conftest import (
    needs_root,
    tmpfs,
)


@needs_root
def test_a_full_disk_under_torch_save_is_disk_full_and_tensorboard_only_warns(
    tmp_path, caplog, monkeypatch
):
    escaped = []  # what reaches the process's thread hook (it prints a traceback)
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    with tmpfs(tmp_path / "disk", "256k") as disk:
        # torch.save's zip writer raises RuntimeError ("unexpected pos"), not OSError, when the
        # disk fills under it: it is a DiskFullError all the same, with no file left behind.
        with pytest.raises(rundir.DiskFullError, match=r"^disk full: cannot write step.pt in "):
            checkpoint.atomic_save({"w": torch.zeros(1 << 20)}, disk / "step.pt")
        assert not list(disk.iterdir())
        with open(disk / "filler", "wb", buffering=0) as f:  # unbuffered: nothing left to flush
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        scalars = logs.Scalars(disk / "tensorboard")
        for step in range(50):
            scalars.add({"train/loss": 1.0}, step)
        scalars.close()
        assert scalars.writer is None
        assert "tensorboard: cannot write scalars any more" in caplog.text
        # The writer thread's own traceback stays out of the log: the one line says it.
        assert not escaped, [f"{e.thread.name}: {e.exc_value!r}" for e in escaped]
