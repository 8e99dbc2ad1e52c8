"""Multi-node for real: two hosts with their own addresses, names and slurmd (network namespaces,
tests/cluster/hosts.sh), each with a second interface that reaches nothing. sbatch --nodes=2,
torchrun's c10d rendezvous and mpirun across them end bitwise equal to the same number of ranks
on one host; host names that resolve to the management addresses do not stop them; a bad
rendezvous is refused in one line; a node lost mid-run ends the job in bounded time with one
line naming its ranks and host, and the relaunch resumes to the same bits."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import (
    REPO,
    child_env,
    free_port,
    results,
    run_cmd,
    tiny_args,
    wait_for,
)

pytestmark = pytest.mark.launch

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


@pytest.fixture(scope="module")
def on_one_host(tmp_path_factory, tiny_teacher):
    """Reference results: 2 and 4 ranks on one host."""
    return {n: one_host_run(tmp_path_factory, tiny_teacher, n) for n in (2, 4)}


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


def test_sbatch_on_two_nodes_four_ranks_equals_four_ranks_on_one_host(
    two_hosts, tmp_path, tiny_teacher, on_one_host
):
    log = tmp_path / "job.out"
    args = tiny_args(tmp_path / "run", tiny_teacher, *STEPS)
    submit(two_hosts, [*sbatch_args(log, (2, 2)), "slurm/train.sh", *args], 400)
    text = log.read_text()
    assert "launch: slurm, rank 0 of 4" in text
    # The rendezvous is node1 (SLURM's node list); every rank's interface is the one that
    # reaches it, never the management interface.
    assert "network: ranks 0, 1 on node1: eth0 10.78.0.11 (routes to node1); ranks 2, 3 on " in text
    assert "node2: eth0 10.78.0.12 (routes to node1)" in text
    assert "mgmt0" not in text
    same_bits(results(tmp_path / "run"), on_one_host[4])


def test_torchrun_on_two_hosts_whose_names_resolve_to_a_management_address(
    two_hosts, tmp_path, tiny_teacher, on_one_host
):
    """The case users report most (insightface #1905, #1444): each host name resolves to an
    address the other host cannot reach. The launcher gives torchrun the address that routes to
    the rendezvous, and the bootstrap gives gloo the interface."""
    endpoint = f"10.78.0.11:{free_port()}"
    run_dir = tmp_path / "run"
    cmd = ["bash", "launch/multinode_torchrun.sh", "2", "1", endpoint, "job-mgmt"]
    cmd += tiny_args(run_dir, tiny_teacher, *STEPS)
    agents = [
        subprocess.Popen(
            two_hosts.on(host, *cmd, hosts=two_hosts.hosts_mgmt),
            cwd=REPO,
            env=env_for(two_hosts),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for host in ("node1", "node2")
    ]
    outputs = [a.communicate(timeout=300)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0], outputs
    assert (
        "launch: node1 reaches 10.78.0.11 through eth0 (10.78.0.11); hosts the store: true"
        in (outputs[0])
    )
    assert (
        "launch: node2 reaches 10.78.0.11 through eth0 (10.78.0.12); hosts the store: false"
        in (outputs[1])
    )
    assert "rank 1 on node2: eth0 10.78.0.12" in outputs[0]
    same_bits(results(run_dir), on_one_host[2])


@pytest.mark.skipif(
    not shutil.which("mpirun"),
    reason="needs Open MPI (openmpi-bin); runs where make deps installed it as root (CI does)",
)
def test_mpirun_on_two_hosts_whose_names_resolve_to_a_management_address(
    two_hosts, tmp_path, tiny_teacher, on_one_host
):
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (requirements-dev.txt)")
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node1 slots=1\nnode2 slots=1\n")
    run_dir = tmp_path / "run"
    agent = REPO / "tests" / "cluster" / "rsh_agent.sh"
    # Open MPI's own traffic is told its network as on any such cluster; the rendezvous of the
    # trainer is found by the bootstrap, which tries rank 0's addresses.
    network = ["--mca", "btl_tcp_if_include", "10.78.0.0/24", "--mca", "oob_tcp_if_include"]
    cmd = [
        "bash",
        "launch/mpirun.sh",
        "2",
        "--hostfile",
        str(hostfile),
        "--mca",
        "plm_rsh_agent",
        str(agent),
        *network,
        "10.78.0.0/24",
        *("-x", "PATH", "-x", "PYTHONPATH", "-x", "OMP_NUM_THREADS"),
        "--",
        *tiny_args(run_dir, tiny_teacher, *STEPS),
    ]
    done = subprocess.run(
        two_hosts.on("node1", *cmd, hosts=two_hosts.hosts_mgmt),
        cwd=REPO,
        env=env_for(two_hosts, CROSSRES_HOSTS_FILE=str(two_hosts.hosts_mgmt)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "launch: mpi, rank 0 of 2 (local 0), rendezvous 10.78.0.11:" in done.stdout
    assert "rank 0 on node1: eth0 10.78.0.11" in done.stdout
    same_bits(results(run_dir), on_one_host[2])


@pytest.mark.parametrize(
    "host, message",
    [
        ("node9", "rendezvous host 'node9' does not resolve"),
        ("10.77.0.1", "rendezvous host 10.77.0.1 (10.77.0.1): no interface of node2 reaches it"),
    ],
    ids=["unknown-name", "no-route"],
)
def test_a_rendezvous_host_that_cannot_be_reached_is_one_line(two_hosts, tmp_path, host, message):
    cmd = ["bash", "launch/multinode_torchrun.sh", "2", "1", f"{host}:29400", "job-bad"]
    cmd += tiny_args(tmp_path / "run", None)
    start = time.monotonic()
    done = subprocess.run(
        two_hosts.on("node2", *cmd),
        cwd=REPO,
        env=env_for(two_hosts),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and time.monotonic() - start < 30
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_a_node_lost_mid_run_ends_the_job_with_one_line_and_the_relaunch_resumes_to_the_bit(
    two_hosts, tmp_path, tiny_teacher, tmp_path_factory
):
    """node2 loses its network and every process (its worker, its slurmd) at once: rank 0 on
    node1 hears nothing more. Its watchdog names the lost rank and its host and ends the job;
    the relaunch on both hosts resumes from the newest complete checkpoint."""
    long = ("train.max_steps=40", "train.checkpoint_every=10", "val.every=40")
    long += ("train.log_every=2", "dist.watchdog_s=8", "dist.timeout_s=120")
    run_dir = tmp_path / "run"
    log = tmp_path / "job.out"
    args = [*sbatch_args(log, (2, 1), "--no-requeue"), "slurm/train.sh"]
    args += tiny_args(run_dir, tiny_teacher, *long)
    env = env_for(two_hosts)
    job = run_cmd(["sbatch", *args], env=env).stdout.strip().split()[-1]
    wait_for(log, "step 12/40", timeout=240)
    subprocess.run(["ip", "-n", "node2", "link", "set", "eth0", "down"], check=True)
    two_hosts.control("kill", "node2")
    lost_at = time.monotonic()
    wait_for(log, "had no heartbeat", timeout=60)
    # The job ends without node2's slurmd (SLURM declares the node down after SlurmdTimeout).
    subprocess.run(["scancel", job], env=env, check=False)
    wait_gone(two_hosts, job, 120)
    assert time.monotonic() - lost_at < 120
    text = log.read_text()
    lines = [line for line in text.splitlines() if "had no heartbeat" in line]
    assert len(lines) == 1 and "rank 1 (host node2, pid " in lines[0], lines
    assert "Traceback" not in text, text[-3000:]
    # node2 comes back; the relaunch resumes from the newest complete checkpoint.
    subprocess.run(["ip", "-n", "node2", "link", "set", "eth0", "up"], check=True)
    two_hosts.control("revive", "node2")
    run_cmd(["scontrol", "update", "nodename=node2", "state=resume"], env=env, check=False)
    relaunch = tmp_path / "relaunch.out"
    submit(two_hosts, [*sbatch_args(relaunch, (2, 1)), "slurm/train.sh", *args[7:]], 400)
    assert "resuming from" in relaunch.read_text()
    reference = one_host_run(tmp_path_factory, tiny_teacher, 2, *long)
    same_bits(results(run_dir), reference)
