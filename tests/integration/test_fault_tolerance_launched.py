"""The launched half of tests/unit/test_fault_tolerance.py: Preemption, worker loss, exact resume, interrupted saves, non-finite losses, preflight."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from crossres_dist.checkpointing.manager import load_checkpoint
from tests.conftest import (
    ORL,
    REPO,
    UNTIL_STOPPED,
    child_env,
    children,
    free_port,
    needs_root,
    preempted_step,
    results,
    run_cmd,
    tiny_args,
    tmpfs,
    train_cmd,
    wait_for,
)


@pytest.mark.launch
def test_kill_during_save_leaves_a_partial_file_that_is_ignored(tmp_path, tiny_teacher):
    run_dir = tmp_path / "killed"
    args = tiny_args(run_dir, tiny_teacher, "checkpoint.every=1", "val.every=100")
    died = run_cmd(train_cmd(1, *args, "debug.inject_kill_during_save=4"), check=False)
    assert died.returncode == -signal.SIGKILL
    ckpts = run_dir / "checkpoints"
    assert (ckpts / "step_00000004.pt.tmp").is_file() and not (ckpts / "step_00000004.pt").exists()
    assert (ckpts / "step_00000003.pt").is_file()
    resumed = run_cmd(train_cmd(1, *args))
    assert "removing a partial checkpoint (a save was interrupted)" in resumed.stdout
    assert "resuming from" in resumed.stdout and "step_00000003.pt" in resumed.stdout
    assert results(run_dir)["step"] == 6 and not list(ckpts.glob("*.tmp"))


@pytest.mark.launch
def test_resumed_run_equals_uninterrupted_run_bitwise(tmp_path, tiny_teacher):
    common = (
        "train.max_steps=6",
        "val.every=3",
        "method.curriculum=true",
        "method.curriculum_step=64",
        "optim.scheduler=plateau",
        "optim.plateau_patience=0",
        # Every degradation step's plan fields, noise's counter-based values included.
        "method.degradations=[downsample, gaussian_blur:0.5, jpeg:0.5, noise:0.5]",
    )
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run_cmd(train_cmd(2, *tiny_args(straight, tiny_teacher, *common)))
    run_cmd(train_cmd(2, *tiny_args(interrupted, tiny_teacher, *common, "train.stop_after_step=3")))
    assert not (interrupted / "results.json").exists()
    run_cmd(train_cmd(2, *tiny_args(interrupted, tiny_teacher, *common)))
    a = load_checkpoint(straight / "checkpoints" / "step_00000006.pt")
    b = load_checkpoint(interrupted / "checkpoints" / "step_00000006.pt")
    for key in a["student"]:
        assert torch.equal(a["student"][key], b["student"][key]), key
    assert a["schedule"] == b["schedule"] and a["curriculum_p"] == b["curriculum_p"] > 0.1
    for group_a, group_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(group_a["momentum_buffer"], group_b["momentum_buffer"])


@pytest.mark.launch
def test_signal_to_one_rank_stops_all_at_a_step_boundary(tmp_path, tiny_teacher):
    run_dir = tmp_path / "sigterm"
    log = tmp_path / "out.log"
    args = tiny_args(
        run_dir,
        tiny_teacher,
        *UNTIL_STOPPED,
    )
    with open(log, "w") as out:
        agent = subprocess.Popen(
            train_cmd(2, *args),
            cwd=REPO,
            env=child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(log, "step 10/5000")
        workers = children(agent.pid)
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGTERM)  # the rank that does not log or checkpoint
        agent.wait(timeout=120)
    text = log.read_text()
    assert "preempted: checkpoint at step" in text  # said by rank 0: the ranks agreed
    step = preempted_step(text)
    assert 10 <= step < 5000
    assert (run_dir / "checkpoints" / f"step_{step:08d}.pt").is_file()
    assert "exitcode  : 3" in text or "exitcode: 3" in text


@pytest.mark.launch
def test_worker_killed_under_torchrun_restarts_and_completes(tmp_path, tiny_teacher):
    run_dir = tmp_path / "restart"
    log = tmp_path / "out.log"
    args = tiny_args(
        run_dir,
        tiny_teacher,
        "train.max_steps=120",
        "checkpoint.every=10",
        "val.every=1000",
        "train.log_every=10",
    )
    cmd = train_cmd(2, *args, max_restarts=2)
    with open(log, "w") as out:
        agent = subprocess.Popen(
            cmd, cwd=REPO, env=child_env(), stdout=out, stderr=subprocess.STDOUT
        )
        wait_for(log, "step 30/120")
        os.kill(children(agent.pid)[1], signal.SIGKILL)
        assert agent.wait(timeout=240) == 0
    text = log.read_text()
    assert "resuming from" in text
    res = results(run_dir)
    assert res["step"] == 120 and res["ranks_agree"]


@pytest.mark.timed
@pytest.mark.launch
def test_dead_peer_becomes_an_error_in_bounded_time(tmp_path, tiny_teacher):
    """No launcher agent to clean up: rank 1 dies, rank 0 must not hang past dist.timeout_s."""
    port = free_port()
    run_dir = tmp_path / "dead-peer"
    args = tiny_args(
        run_dir,
        tiny_teacher,
        *UNTIL_STOPPED,
        "dist.timeout_s=20",
    )
    log = tmp_path / "rank0.log"
    procs = []
    for rank in range(2):
        env = child_env(
            RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        out = open(log if rank == 0 else os.devnull, "w")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "crossres_dist.train", *args],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )
    wait_for(log, "step 10/5000")
    procs[1].kill()
    start = time.monotonic()
    code = procs[0].wait(timeout=120)
    assert code == 6 and time.monotonic() - start < 60  # EXIT_PEER_LOST
    # One line names the lost rank and its host; no traceback from our code.
    text = log.read_text()
    lines = [line for line in text.splitlines() if "lost rank 1 (host " in line]
    assert len(lines) == 1 and "a collective failed" in lines[0], text[-2000:]
    assert "Traceback" not in text, text[-3000:]


@pytest.mark.launch
def test_nan_steps_are_skipped_and_counted(tmp_path, tiny_teacher):
    run_dir = tmp_path / "one-nan"
    out = run_cmd(train_cmd(1, *tiny_args(run_dir, tiny_teacher, "debug.inject_nan_steps=[2]")))
    assert "1 non-finite loss/gradient step(s) skipped (the last at step 2;" in out.stdout
    res = results(run_dir)
    assert res["nonfinite_steps"] == 1 and res["step"] == 6


@pytest.mark.launch
def test_nan_steps_in_a_row_stop_with_the_last_good_checkpoint(tmp_path, tiny_teacher):
    run_dir = tmp_path / "nans"
    result = run_cmd(
        train_cmd(
            2,
            *tiny_args(
                run_dir,
                tiny_teacher,
                "debug.inject_nan_steps=[3,4,5]",
                "checkpoint.every=1",
                "train.max_nonfinite=3",
                "checkpoint.keep_last=10",
            ),
        ),
        check=False,
    )
    assert result.returncode != 0
    assert "3 non-finite steps in a row at step 5" in result.stdout + result.stderr
    good = load_checkpoint(run_dir / "checkpoints" / "step_00000002.pt")["student"]
    last = load_checkpoint(run_dir / "checkpoints" / "step_00000004.pt")["student"]
    assert all(torch.isfinite(v).all() for v in last.values() if v.is_floating_point())
    # Skipped steps changed no weight (only BatchNorm's num_batches_tracked counter moves).
    assert all(torch.equal(good[k], last[k]) for k in good if good[k].is_floating_point())
    assert not (run_dir / "checkpoints" / "step_00000005.pt").exists()


@needs_root
@pytest.mark.launch
def test_preflight_refuses_too_little_disk(tmp_path, tiny_teacher):
    with tmpfs(tmp_path / "small", "64k") as small:
        result = run_cmd(train_cmd(1, *tiny_args(small / "run", tiny_teacher)), check=False)
    assert result.returncode == 2
    assert "KiB free" in result.stderr or "MiB free" in result.stderr, result.stderr[-1000:]


@pytest.mark.launch
def test_preflight_refuses_unreadable_images_unless_told_to_skip(tmp_path, tiny_teacher):
    data = tmp_path / "faces"
    for identity in sorted(ORL.glob("s*"))[:40]:
        (data / identity.name).mkdir(parents=True)
        for image in sorted(identity.glob("*.png")):
            (data / identity.name / image.name).write_bytes(image.read_bytes())
    broken = data / "s3" / "4.png"
    broken.write_bytes(broken.read_bytes()[:200])  # truncated
    args = tiny_args(tmp_path / "run", tiny_teacher, f"data.train={data}")
    refused = run_cmd(train_cmd(1, *args), check=False)
    assert refused.returncode == 2 and str(broken) in refused.stderr
    assert "data.skip_bad_files=true" in refused.stderr
    skipped = run_cmd(train_cmd(1, *args, "data.skip_bad_files=true", "train.max_steps=2"))
    assert "skipping 1 unusable image(s) (truncated 1)" in skipped.stdout
