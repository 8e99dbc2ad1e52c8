"""Launch for real: a one-node SLURM cluster (sbatch, job arrays, requeue), mpirun, multi-node
torchrun; and the bootstrap's choice and errors with environments set by the test."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crossres_dist.distributed import LaunchError, detect
from tests.conftest import (
    REPO,
    child_env,
    run_cmd,
)

VENV_BIN = str(Path(sys.executable).parent)
SBATCH_CPU = ["--gres=none", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1"]


# ----------------------------------------------------------------------------- bootstrap
def test_detects_torchrun():
    env = {
        "RANK": "3",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "n1",
        "MASTER_PORT": "29500",
        "SLURM_PROCID": "0",
        "SLURM_STEP_ID": "0",
    }  # torchrun inside a SLURM job wins
    info = detect(env)
    assert (
        info.launcher,
        info.rank,
        info.world_size,
        info.local_rank,
        info.master_addr,
        info.master_port,
    ) == ("torchrun", 3, 8, 1, "n1", 29500)


def test_half_set_torchrun_environment_names_the_missing_variable():
    with pytest.raises(LaunchError, match="MASTER_PORT is not set"):
        detect({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "x"})


def test_single_process_and_forced_launcher():
    assert detect({}).launcher == "single"
    with pytest.raises(LaunchError, match="torchrun environment is incomplete: RANK"):
        detect({}, force="torchrun")


# ----------------------------------------------------------------------------- SLURM
def _slurm_env(cluster):
    return child_env(
        SLURM_CONF=cluster["SLURM_CONF"],
        PATH=f"{VENV_BIN}:{os.environ['PATH']}",
        CROSSRES_VENV=str(Path(VENV_BIN).parent),
    )


def _job_id(stdout: str) -> str:
    return stdout.strip().split()[-1]


def _wait_gone(job: str, env: dict, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, env=env)
        if not out.stdout.strip():
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job} still queued or running after {timeout}s")


def _submit_and_wait(args: list[str], env: dict, timeout: float) -> str:
    """sbatch ARGS, then wait until the job (every element of an array) has left the queue;
    polling squeue ends sooner than `sbatch --wait`, whose polls grow far apart. Returns the job
    id."""
    job = _job_id(run_cmd(["sbatch", *args], env=env).stdout)
    _wait_gone(job, env, timeout)
    return job


# ----------------------------------------------------------------------------- MPI and torchrun
def _eval_array(cluster, tmp_path: Path, checkpoint: Path, *options: str) -> tuple[Path, str]:
    """slurm/eval.sh as a 2-element array (one checkpoint x resolutions 8 and 16): the output
    folder, and the name the script gives the checkpoint."""
    listing = tmp_path / "checkpoints.txt"
    listing.write_text(f"{checkpoint}\n")
    out = tmp_path / "eval"
    _submit_and_wait(
        [
            "--array=0-1",
            *SBATCH_CPU,
            f"--output={tmp_path}/eval-%A_%a.out",
            "slurm/eval.sh",
            str(REPO / "tests" / "tiny.yaml"),
            str(listing),
            "8 16",
            str(out),
            f"teacher.checkpoint={checkpoint}",
            *options,
        ],
        _slurm_env(cluster),
        300,
    )
    return out, f"{checkpoint.parent.parent.name}-0"
