"""Multi-node for real: two hosts with their own addresses, names and slurmd (network namespaces,
tests/cluster/hosts.sh), each with a second interface that reaches nothing. sbatch --nodes=2,
torchrun's c10d rendezvous and mpirun across them end bitwise equal to the same number of ranks
on one host; host names that resolve to the management addresses do not stop them; a bad
rendezvous is refused in one line. A host lost mid-run: test_lost_hosts.py."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.conftest import REPO, free_port, results, tiny_args
from tests.twohost import (
    STEPS,
    env_for,
    one_host_run,
    same_bits,
    sbatch_args,
    submit,
)

pytestmark = pytest.mark.launch


@pytest.fixture(scope="module")
def on_one_host(tmp_path_factory, tiny_teacher):
    """Reference results: 2 and 4 ranks on one host."""
    return {n: one_host_run(tmp_path_factory, tiny_teacher, n) for n in (2, 4)}


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
    node1, node2 = two_hosts.addr("node1"), two_hosts.addr("node2")
    assert f"network: ranks 0, 1 on node1: eth0 {node1} (routes to node1); ranks 2, 3 on " in text
    assert f"node2: eth0 {node2} (routes to node1)" in text
    assert "mgmt0" not in text
    same_bits(results(tmp_path / "run"), on_one_host[4])


def test_torchrun_on_two_hosts_whose_names_resolve_to_a_management_address(
    two_hosts, tmp_path, tiny_teacher, on_one_host
):
    """The case users report most (insightface #1905, #1444): each host name resolves to an
    address the other host cannot reach. The launcher gives torchrun the address that routes to
    the rendezvous, and the bootstrap gives gloo the interface."""
    node1, node2 = two_hosts.addr("node1"), two_hosts.addr("node2")
    endpoint = f"{node1}:{free_port()}"
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
        f"launch: node1 reaches {node1} through eth0 ({node1}); hosts the store: true"
        in (outputs[0])
    )
    assert (
        f"launch: node2 reaches {node1} through eth0 ({node2}); hosts the store: false"
        in (outputs[1])
    )
    assert f"rank 1 on node2: eth0 {node2}" in outputs[0]
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
    network = ["--mca", "btl_tcp_if_include", two_hosts.subnet, "--mca", "oob_tcp_if_include"]
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
        two_hosts.subnet,
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
    node1 = two_hosts.addr("node1")
    assert f"launch: mpi, rank 0 of 2 (local 0), rendezvous {node1}:" in done.stdout
    assert f"rank 0 on node1: eth0 {node1}" in done.stdout
    same_bits(results(run_dir), on_one_host[2])


@pytest.mark.parametrize(
    "host, message",
    [
        ("node9", "rendezvous host 'node9' does not resolve"),
        ("10.77.0.1", "rendezvous host 10.77.0.1 (10.77.0.1): no interface of node2 reaches it"),
    ],
    ids=["unknown-name", "no-route"],
)
@pytest.mark.timed
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
