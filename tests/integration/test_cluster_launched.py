"""The launched half of tests/unit/test_cluster.py: Launch for real: a one-node SLURM cluster (sbatch, job arrays, requeue), mpirun, multi-node"""

import json
import sys
import time

import pytest

from crossres_dist import distributed
from crossres_dist.distributed import LaunchError, detect
from tests.conftest import (
    LFW,
    REPO,
    child_env,
    free_port,
    needs_lfw,
    results,
    run_cmd,
    tiny_args,
    wait_for,
)
from tests.fixtures.cluster import (
    SBATCH_CPU,
    eval_array,
    job_id,
    slurm_env,
    submit_and_wait,
    wait_gone,
)


@pytest.mark.launch
def test_detects_slurm_step_with_host_and_port_from_the_job(slurm_cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_cluster["SLURM_CONF"])  # scontrol reads it
    env = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "16",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_ID": "0",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_JOB_ID": "123456",
    }
    info = detect(env)
    assert (info.launcher, info.rank, info.world_size, info.local_rank) == ("slurm", 5, 16, 1)
    assert info.master_addr == "gpu07"
    assert info.master_port == distributed.slurm_port("123456") == 20000 + 123456 % 20000
    del env["SLURM_LOCALID"]
    with pytest.raises(LaunchError, match="SLURM_LOCALID is not set"):
        detect(env)


@pytest.mark.timed
@pytest.mark.launch
def test_unreachable_rendezvous_fails_in_bounded_time(slurm_cluster, tmp_path, tiny_teacher):
    port = free_port()
    env = child_env(
        SLURM_CONF=slurm_cluster["SLURM_CONF"],
        SLURM_PROCID="1",
        SLURM_NTASKS="2",
        SLURM_LOCALID="1",
        SLURM_STEP_ID="0",
        SLURM_JOB_NODELIST="localhost",
        SLURM_JOB_ID="1",
    )
    args = tiny_args(
        tmp_path / "r", tiny_teacher, "dist.launcher=slurm", f"dist.port={port}", "dist.timeout_s=5"
    )
    start = time.monotonic()
    result = run_cmd(
        [sys.executable, "-m", "crossres_dist.train", *args], env=env, check=False, timeout=90
    )
    assert result.returncode == 2
    assert "cannot reach the rendezvous" in result.stderr and f":{port}" in result.stderr
    assert time.monotonic() - start < 60


@pytest.mark.launch
def test_job_array_trains_each_grid_point_one_on_each_host(two_hosts, tmp_path, tiny_teacher):
    env = slurm_env(two_hosts.env)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        (REPO / "tests" / "sweep_tiny.yaml").read_text() + f"output_dir: {tmp_path / 'grid'}\n"
    )
    submit_and_wait(
        [
            "--array=0-1",
            *SBATCH_CPU,
            "--exclusive",  # a whole host each: the two elements run side by side, one per host
            f"--output={tmp_path}/arr-%A_%a.out",
            "slurm/sweep.sh",
            str(sweep),
            f"teacher.checkpoint={tiny_teacher}",
        ],
        env,
        400,
    )
    runs = sorted((tmp_path / "grid").iterdir())
    assert [r.name for r in runs] == ["000_lambda_feat=0.0", "001_lambda_feat=0.1"]
    hosts = {
        log.read_text().split(" on ", 1)[1].split(",")[0] for log in tmp_path.glob("arr-*.out")
    }
    assert hosts == {"node1", "node2"}
    lambdas = [
        __import__("yaml").safe_load((r / "config.yaml").read_text())["method"]["lambda_feat"]
        for r in runs
    ]
    assert lambdas == [0.0, 0.1]
    summary = run_cmd([sys.executable, "-m", "tools.sweep", "summary", str(sweep)]).stdout
    assert summary.count("\n| ") >= 2 and "8px top-1" in summary and "not finished" not in summary


@pytest.mark.launch
def test_requeue_after_signal_on_two_nodes_resumes_and_finishes(two_hosts, tmp_path, tiny_teacher):
    env = slurm_env(two_hosts.env)
    run_dir = tmp_path / "requeue-run"
    log = tmp_path / "requeue.out"
    args = tiny_args(
        run_dir,
        tiny_teacher,
        "train.max_steps=200",
        "val.every=200",
        "checkpoint.every=200",
        "train.log_every=5",
    )
    two_nodes = [*SBATCH_CPU[:1], "--nodes=2", "--ntasks-per-node=1", *SBATCH_CPU[3:]]
    job = job_id(
        run_cmd(["sbatch", *two_nodes, f"--output={log}", "slurm/train.sh", *args], env=env).stdout
    )
    wait_for(log, "step 10/200", timeout=180)
    # What SLURM does ahead of the time limit (--signal=USR1@300): signal every task of the job.
    run_cmd(["scancel", "--signal=USR1", job], env=env)
    wait_gone(job, env, 400)
    text = log.read_text()
    assert "on node1,node2" in text and "launch: slurm, rank 0 of 2" in text
    assert "checkpoint written; requeueing" in text
    assert "resuming from" in text and "restart 1" in text
    res = results(run_dir)
    assert res["step"] == 200 and res["ranks_agree"]
    # The requeued run continued from the checkpoint (step counter > 0), it did not start over.
    resumed_at = int(text.split("resuming from")[1].split("step_")[1][:8])
    assert 10 <= resumed_at < 200


@needs_lfw
@pytest.mark.launch
def test_eval_array_over_checkpoints_and_resolutions(slurm_cluster, tmp_path, tiny_teacher):
    """Element k evaluates checkpoint k / R at resolution k % R; here on the IJB-C protocol
    (the folder protocol's CLI is tested in test_evaluate.py)."""
    from tools import benchmark_trees

    root = tmp_path / "IJBC"
    benchmark_trees.ijbc(LFW, root, identities=6)
    aligned = tmp_path / "eval" / "aligned"
    options = ["--protocol", "ijbc", "--root", str(root), "--aligned-cache", str(aligned)]
    out, name = eval_array(slurm_cluster, tmp_path, tiny_teacher, *options, "--no-plots")
    for resolution in (8, 16):
        report = json.loads((out / name / f"r{resolution}" / "results.json").read_text())
        rows = report["models"][name]["by_resolution"]
        assert set(rows) == {"full", str(resolution)}
        assert rows[str(resolution)]["verification"]["genuine_pairs"] == 6
    # Both elements used the one shared set of aligned faces.
    assert len(list(aligned.rglob("*.png"))) == 24
    assert not list(aligned.rglob("*.tmp"))
