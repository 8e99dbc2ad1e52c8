"""The launched half of tests/unit/test_run_directory.py: Run directories that cannot be wedged (2 ranks each): damaged side files are rebuilt,"""

import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from crossres_dist.checkpointing.manager import load_checkpoint
from tests.conftest import (
    REPO,
    UNTIL_STOPPED,
    child_env,
    children,
    error_lines,
    needs_root,
    preempted_step,
    results,
    run_cmd,
    tiny_args,
    tmpfs,
    train_cmd,
    wait_for,
)
from tests.fixtures.run_directory import (
    truncate,
)


@pytest.mark.launch
def test_damaged_side_files_and_a_deleted_best_are_rebuilt(tmp_path, tiny_teacher):
    run_dir = tmp_path / "run"
    args = tiny_args(run_dir, tiny_teacher, "train.max_steps=6")
    run_cmd(train_cmd(2, *args, "train.stop_after_step=3"))
    (cache,) = (run_dir / "cache").glob("val_teacher_features-*.pt")
    truncate(cache)  # a node lost power during the write
    (run_dir / "checkpoints" / "best.pt").unlink()
    resumed = run_cmd(train_cmd(2, *args))
    assert "teacher-feature cache" in resumed.stdout and "is unreadable" in resumed.stdout
    assert "best.pt is missing" in resumed.stdout
    assert results(run_dir)["step"] == 6
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["best_metric"] == results(run_dir)["best_metric"]
    assert load_checkpoint(cache).shape[0] == 80  # rebuilt whole
    # A run asked for fewer steps than its checkpoint holds refuses with the key to change.
    shorter = run_cmd(train_cmd(1, *args, "train.max_steps=4"), check=False)
    error = error_lines(shorter.stderr)
    assert shorter.returncode == 2 and error, shorter.stderr[-2000:]
    assert "train.max_steps:" in error[0] and "step 6, past the 4 steps" in error[0]
    # A start before any checkpoint exists reads the label map: an empty one is rebuilt too.
    (run_dir / "identities.json").write_text("")
    fresh = run_cmd(train_cmd(2, *args, "checkpoint.resume=never", "train.max_steps=1"))
    assert "label map" in fresh.stdout and "is unreadable" in fresh.stdout
    assert len(json.loads((run_dir / "identities.json").read_text())) == 40
    assert list((run_dir / "checkpoints").glob("superseded-*/step_00000006.pt"))


@pytest.mark.launch
def test_unreadable_checkpoints_are_set_aside_never_pruned_over(tmp_path, tiny_teacher):
    run_dir = tmp_path / "run"
    ckpts = run_dir / "checkpoints"
    args = tiny_args(run_dir, tiny_teacher, "train.max_steps=9")
    run_cmd(train_cmd(2, *args, "train.stop_after_step=6"))
    for step in (3, 6):
        truncate(ckpts / f"step_{step:08d}.pt")
    best_step = load_checkpoint(ckpts / "best.pt")["step"]
    resumed = run_cmd(train_cmd(2, *args))
    assert "resuming from best.pt" in resumed.stdout.replace(str(ckpts) + "/", "")
    assert sorted(p.name for p in (ckpts / "corrupt").iterdir()) == [
        "step_00000003.pt",
        "step_00000006.pt",
    ]
    assert results(run_dir)["step"] == 9
    # keep-last counted only readable checkpoints: the newest ones are here, whole.
    kept = sorted(p.name for p in ckpts.glob("step_*.pt"))
    assert kept == [f"step_{s:08d}.pt" for s in range(best_step + 3, 10, 3)][-2:]
    for path in ckpts.glob("step_*.pt"):
        load_checkpoint(path)

    # Nothing readable at all: a refusal that says what to do, not a silent start from 0.
    for path in [*ckpts.glob("step_*.pt"), ckpts / "best.pt"]:
        truncate(path)
    refused = run_cmd(train_cmd(2, *args), check=False)
    assert refused.returncode != 0
    error = error_lines(refused.stderr)
    assert error and "every checkpoint in" in error[0] and "checkpoint.resume=never" in error[0]
    # The refusal set every unreadable file aside (none deleted), so nothing can be pruned over.
    assert len(list((ckpts / "corrupt").iterdir())) == 2 + len(kept) + 1


@pytest.mark.launch
def test_second_job_on_a_locked_directory_refuses_and_a_stale_lock_is_taken_over(
    tmp_path, tiny_teacher
):
    run_dir = tmp_path / "run"
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        first = subprocess.Popen(
            train_cmd(2, *tiny_args(run_dir, tiny_teacher, *UNTIL_STOPPED)),
            cwd=REPO,
            env=child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(log, "step 5/5000")
            holder = json.loads((run_dir / "run.lock").read_text())
            second = run_cmd(
                train_cmd(2, *tiny_args(run_dir, tiny_teacher, "train.max_steps=2")), check=False
            )
            assert second.returncode != 0 and first.poll() is None
            error = error_lines(second.stderr)
            assert error, second.stderr[-2000:]
            assert f"is in use by job {holder['job']}" in error[0]
            assert f"host {socket.gethostname()}, pid {holder['pid']}" in error[0]
        finally:
            os.killpg(first.pid, signal.SIGTERM)  # preempt the first job: it checkpoints
            first.wait(timeout=120)
    text = log.read_text()
    assert "preempted: checkpoint at step" in text
    preempted_at = preempted_step(text)
    assert (run_dir / "run.lock").read_text() == ""  # released on the way out

    # A lock left by a process that is gone (a node rebooted): taken over, with a log line.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run_dir / "run.lock").write_text(
        json.dumps({"host": socket.gethostname(), "pid": dead.pid, "job": "old", "started": "x"})
    )
    # It resumes the preempted run, asked to end where that run stopped: a finished run started
    # again validates its last checkpoint, trains nothing and writes its results.
    target = f"train.max_steps={preempted_at}"
    taken = run_cmd(train_cmd(2, *tiny_args(run_dir, tiny_teacher, target)))
    assert "taking over a stale run lock: job old" in taken.stdout
    assert (
        f"resuming from {run_dir / 'checkpoints' / f'step_{preempted_at:08d}.pt'}" in taken.stdout
    )
    assert f"already at step {preempted_at} of {preempted_at}: validating only" in taken.stdout
    assert results(run_dir)["step"] == preempted_at and results(run_dir)["final"]


@pytest.mark.timed
@pytest.mark.launch
def test_frozen_rank_ends_the_job_in_seconds_and_the_restart_resumes(tmp_path, tiny_teacher):
    run_dir = tmp_path / "run"
    log = tmp_path / "out.log"
    args = tiny_args(
        run_dir,
        tiny_teacher,
        "train.max_steps=120",
        "checkpoint.every=10",
        "val.every=1000",
        "train.log_every=10",
        "dist.watchdog_s=5",
        "dist.timeout_s=300",  # without the watchdog the job would wait this long
    )
    cmd = train_cmd(2, *args, max_restarts=1)
    with open(log, "w") as out:
        agent = subprocess.Popen(
            cmd, cwd=REPO, env=child_env(), stdout=out, stderr=subprocess.STDOUT
        )
        try:
            wait_for(log, "step 20/120")
            frozen = children(agent.pid)[1]
            os.kill(frozen, signal.SIGSTOP)
            stopped_at = time.monotonic()
            wait_for(log, f"pid {frozen}) has had no heartbeat", timeout=60)
            detected = time.monotonic() - stopped_at
            assert agent.wait(timeout=240) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
            try:
                os.kill(frozen, signal.SIGKILL)
            except (ProcessLookupError, UnboundLocalError):
                pass
    text = log.read_text()
    assert detected < 30, detected
    assert "watchdog: rank 1 (host" in text and "resuming from" in text
    assert results(run_dir)["step"] == 120 and results(run_dir)["ranks_agree"]


@needs_root
@pytest.mark.launch
def test_full_disk_during_a_save_is_one_line_and_leaves_no_tmp(tmp_path, tiny_teacher):
    with tmpfs(tmp_path / "disk", "4m") as disk:
        run_dir = disk / "run"
        log = tmp_path / "out.log"
        args = tiny_args(run_dir, tiny_teacher, *UNTIL_STOPPED, "checkpoint.every=5")
        with open(log, "w") as out:
            job = subprocess.Popen(
                train_cmd(2, *args), cwd=REPO, env=child_env(), stdout=out, stderr=subprocess.STDOUT
            )
            wait_for(log, "step_00000010.pt")
            filler = disk / "filler"
            with open(filler, "wb", buffering=0) as f:  # another job fills the disk
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass
            code = job.wait(timeout=120)
        text = log.read_text()
        # torchrun reports the failed workers with a traceback of its own: what the workers
        # printed is everything before its first line.
        workers = re.split(r".*torch[./]distributed[./]elastic", text, maxsplit=1)[0]
        assert code != 0
        lines = [line for line in text.splitlines() if "disk full: cannot write step_" in line]
        assert len(lines) == 1, text[-3000:]  # from rank 0 only; rank 1 stops quietly with it
        assert lines[0].startswith("error: disk full: cannot write step_")
        assert f"in {run_dir / 'checkpoints'}: a checkpoint needs about" in lines[0]
        assert "Traceback" not in workers and "Connection closed" not in workers, workers[-3000:]
        # Rank 0 exits 2; rank 1 either does too or is ended by torchrun: never 1 (a crash).
        assert re.search(r"exitcode\s*:\s*2", text) and not re.search(r"exitcode\s*:\s*1\b", text)
        assert not list((run_dir / "checkpoints").glob("*.tmp"))
        filler.unlink()
        # The save that failed is the first after the disk filled: step 15 or a later one,
        # depending on how many steps ran while the filler wrote.
        failed_at = int(lines[0].split("cannot write step_")[1][:8])
        newest = max(int(p.stem[5:]) for p in (run_dir / "checkpoints").glob("step_*.pt"))
        assert newest == failed_at - 5 >= 10
        target = f"train.max_steps={newest + 2}"
        resumed = run_cmd(train_cmd(2, *tiny_args(run_dir, tiny_teacher, target)))
        assert f"step_{newest:08d}.pt" in resumed.stdout.split("resuming from")[1].splitlines()[0]
        assert results(run_dir)["step"] == newest + 2
