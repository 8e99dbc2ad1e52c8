"""What the two-host tests share (tests/integration/test_multinode.py, test_lost_hosts.py): the
environment of a command run on the cluster, the same run on one host for the bitwise
comparison, and sbatch with its wait."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import child_env, results, run_cmd, tiny_args

VENV_BIN = str(Path(sys.executable).parent)
STEPS = ("train.max_steps=6",)


def env_for(cluster, **extra) -> dict:
    return child_env(
        **cluster.env,
        PATH=f"{VENV_BIN}:{os.environ['PATH']}",
        CROSSRES_VENV=str(Path(VENV_BIN).parent),
        **extra,
    )


def one_host_run(tmp_path_factory, teacher, ranks: int, *overrides: str) -> dict:
    """The same run with `ranks` processes on one host (torchrun --standalone)."""
    run_dir = tmp_path_factory.mktemp(f"one-host-{ranks}") / "run"
    run_cmd(
        [
            f"{VENV_BIN}/torchrun",
            "--standalone",
            f"--nproc_per_node={ranks}",
            "-m",
            "crossres_dist.train",
            *tiny_args(run_dir, teacher, *STEPS, *overrides),
        ],
        env=child_env(),
        timeout=300,
    )
    return results(run_dir)


def same_bits(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    assert a["param_checksum_per_rank"][0] == b["param_checksum_per_rank"][0]
    assert a["final"] == b["final"]


def submit(cluster, args: list[str], timeout: float) -> str:
    job = run_cmd(["sbatch", *args], env=env_for(cluster)).stdout.strip().split()[-1]
    wait_gone(cluster, job, timeout)
    return job


def wait_gone(cluster, job: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = subprocess.run(
            ["squeue", "-h", "-j", job], capture_output=True, text=True, env=env_for(cluster)
        ).stdout.strip()
        if not queued:
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job} still queued or running after {timeout}s")


def sbatch_args(log: Path, nodes_tasks: tuple[int, int], *extra: str) -> list[str]:
    nodes, per_node = nodes_tasks
    return [
        "--gres=none",
        f"--nodes={nodes}",
        f"--ntasks-per-node={per_node}",
        "--cpus-per-task=1",
        f"--output={log}",
        *extra,
    ]
