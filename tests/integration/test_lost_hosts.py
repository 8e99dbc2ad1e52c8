"""A host lost mid-run on the two-host cluster (tests/cluster/hosts.sh), each way it can go:

- under torchrun (launch/multinode_torchrun.sh, its supervisor and the restarts it passes): the
  store's host killed, the store's host cut off, the other host cut off;
- under SLURM (rank 0 serves the store): rank 0 frozen, and the job requeued;
- under mpirun (rank 0 serves the store): rank 0 frozen.

Each checks that every surviving host, the cut-off one included, ends within the bound that
docs/operations.md states, with one line that names the lost rank and its host and no traceback
from our code, that nothing of the job is left running on either host, and (but under mpirun,
which restarts nothing) that the relaunch resumes to the bits of the uninterrupted run."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from subprocess import Popen

import pytest

from tests.conftest import REPO, free_port, results, tiny_args, wait_for
from tests.twohost import env_for, one_host_run, same_bits, sbatch_args, wait_gone

pytestmark = [pytest.mark.launch, pytest.mark.timed]

# Long enough that the loss lands mid-run, short enough that the relaunch is quick.
RUN = ("train.max_steps=40", "checkpoint.every=10", "val.every=40", "train.log_every=2")
WATCHDOG_S = 5
LIVENESS = (f"dist.watchdog_s={WATCHDOG_S}", "dist.timeout_s=120")
# The launcher's two bounds (launch/multinode_torchrun.sh), small for the tests.
STORE_LOST_S, JOIN_TIMEOUT = 4, 5
PROBE_S = 2.0  # the supervisor's probe interval and deadline
BEAT_S = max(0.5, min(5.0, WATCHDOG_S / 10))  # the watchdog's interval (watchdog.py)
STORE_CALL_S = max(2.0, 2 * BEAT_S)  # and its store calls' deadline
# A loaded 2-core machine starts and ends processes slowly: every bound gets this much more.
SLACK_S = 10
# The bounds docs/operations.md states:
# - a rank's watchdog names a lost peer or a silent store within this;
WATCHDOG_BOUND = WATCHDOG_S + BEAT_S + STORE_CALL_S
# - a host whose store went silent ends its agent within this (the supervisor: a probe's
#   interval and deadline, then 3 s for the agent to go before SIGKILL);
CUT_OFF_BOUND = STORE_LOST_S + 2 * PROBE_S + 3
# - the store's host, once its peer is gone, ends when torchrun's rendezvous gives up.
STORE_HOST_BOUND = WATCHDOG_BOUND + JOIN_TIMEOUT


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_teacher) -> dict:
    return one_host_run(tmp_path_factory, tiny_teacher, 2, *RUN, *LIVENESS)


def launch_on(two_hosts, host: str, args: list[str], log: Path, job: str, **launch) -> Popen:
    """launch/multinode_torchrun.sh on `host`: its process, which is the supervisor itself
    (every script on the way execs). `launch`: endpoint, nnodes, and the launcher's settings."""
    endpoint, nnodes = launch.pop("endpoint"), launch.pop("nnodes", "2")
    env = env_for(two_hosts, STORE_LOST_S=str(STORE_LOST_S), JOIN_TIMEOUT=str(JOIN_TIMEOUT))
    env.update({key: str(value) for key, value in launch.items()})
    cmd = ["bash", "launch/multinode_torchrun.sh", nnodes, "1", endpoint, job, *args]
    with open(log, "w") as out:
        return subprocess.Popen(
            two_hosts.on(host, *cmd), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def launch_both(two_hosts, args: list[str], logs: Path, tag: str, **launch) -> dict:
    """The launcher on both hosts (the store on node1): host -> its process."""
    launch.setdefault("endpoint", f"{two_hosts.addr('node1')}:{free_port()}")
    return {
        host: launch_on(two_hosts, host, args, logs / f"{tag}-{host}.log", f"job-{tag}", **launch)
        for host in ("node1", "node2")
    }


def ended_within(agent: subprocess.Popen, since: float, bound: float) -> float:
    """How long after `since` the agent ended; fails past the bound (and ends it)."""
    try:
        agent.wait(timeout=max(1.0, since + bound + SLACK_S - time.monotonic()))
    except subprocess.TimeoutExpired:
        agent.kill()
        raise AssertionError(f"still running {bound + SLACK_S:.0f} s after the loss") from None
    return time.monotonic() - since


def our_lines(text: str, pattern: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(pattern, line)]


def no_traceback_of_ours(text: str) -> None:
    """torchrun's agent prints its own tracebacks; none may pass through our code."""
    frames = our_lines(text, r'^\s*File ".*crossres_dist/')
    assert not frames, "\n".join(frames)


def relaunch_resumes_bitwise(two_hosts, args, logs: Path, uninterrupted: dict) -> None:
    agents = launch_both(two_hosts, args, logs, "relaunch")
    for host, agent in agents.items():
        assert agent.wait(timeout=300) == 0, (logs / f"relaunch-{host}.log").read_text()[-3000:]
    assert "resuming from" in (logs / "relaunch-node1.log").read_text()


def test_the_store_host_killed_ends_the_other_host_with_one_line(
    two_hosts, tmp_path, tiny_teacher, uninterrupted
):
    run_dir = tmp_path / "run"
    args = tiny_args(run_dir, tiny_teacher, *RUN, *LIVENESS)
    agents = launch_both(two_hosts, args, tmp_path, "loss")
    wait_for(tmp_path / "loss-node1.log", "step 12/40", timeout=240)
    two_hosts.control("kill-job", "node1")
    lost_at = time.monotonic()
    # Its connections close: the next collective fails at once, the store is refused.
    took = ended_within(agents["node2"], lost_at, WATCHDOG_BOUND)
    agents["node1"].wait(timeout=30)
    text = (tmp_path / "loss-node2.log").read_text()
    lines = our_lines(text, r"rank 0 \(host node1")
    assert len(lines) == 1 and "it serves the rendezvous store" in lines[0], (took, lines)
    no_traceback_of_ours(text)
    assert two_hosts.leftovers() == {}
    relaunch_resumes_bitwise(two_hosts, args, tmp_path, uninterrupted)
    same_bits(results(run_dir), uninterrupted)


@pytest.mark.parametrize("cut", ["node1", "node2"], ids=["store-host-cut-off", "other-cut-off"])
def test_a_host_cut_off_ends_both_hosts_in_bounded_time_and_the_relaunch_resumes(
    two_hosts, tmp_path, tiny_teacher, uninterrupted, cut
):
    """No FIN, no reset: the cut-off host's packets go nowhere. Each side's watchdog names the
    other; the host that no longer reaches the store (node2 whichever is cut) is ended by the
    launcher's supervisor, the store's host (node1) when torchrun's rendezvous gives up on its
    peer. The cut-off host ends too."""
    run_dir = tmp_path / "run"
    args = tiny_args(run_dir, tiny_teacher, *RUN, *LIVENESS)
    agents = launch_both(two_hosts, args, tmp_path, "loss")
    wait_for(tmp_path / "loss-node1.log", "step 12/40", timeout=240)
    two_hosts.control("cut", cut)
    lost_at = time.monotonic()
    try:
        took = {
            "node2": ended_within(agents["node2"], lost_at, CUT_OFF_BOUND),
            "node1": ended_within(agents["node1"], lost_at, STORE_HOST_BOUND),
        }
    finally:
        two_hosts.control("link", cut)
    node1, node2 = ((tmp_path / f"loss-{h}.log").read_text() for h in ("node1", "node2"))
    named = our_lines(node1, r"watchdog: rank 1 \(host node2, pid \d+\) has had no heartbeat")
    assert len(named) == 1, (took, named)
    named = our_lines(node2, r"watchdog: rank 0 \(host node1: it serves the rendezvous store")
    assert len(named) == 1, (took, named)
    ended = our_lines(node2, r"launch: the rendezvous store \S+ has not answered for \d+ s")
    assert len(ended) == 1 and "this host, node2, is cut off" in ended[0], (took, ended)
    assert agents["node2"].returncode == 5
    no_traceback_of_ours(node1 + node2)
    assert two_hosts.leftovers() == {}
    relaunch_resumes_bitwise(two_hosts, args, tmp_path, uninterrupted)
    same_bits(results(run_dir), uninterrupted)


def test_a_frozen_rank_0_under_slurm_ends_the_job_and_the_requeue_resumes(
    two_hosts, tmp_path, tiny_teacher, uninterrupted
):
    """Under srun rank 0 serves the store itself: frozen, it answers nothing. Rank 1 names it
    within the watchdog's bound, srun ends the job (the frozen process too), and slurm/train.sh
    requeues it (--requeue); the requeued job resumes to the uninterrupted run's bits."""
    run_dir = tmp_path / "run"
    log = tmp_path / "job.out"
    args = [*sbatch_args(log, (2, 1), "--requeue"), "slurm/train.sh"]
    args += tiny_args(run_dir, tiny_teacher, *RUN, *LIVENESS)
    env = env_for(two_hosts)
    job = subprocess.run(
        ["sbatch", *args], env=env, capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    wait_for(log, "step 12/40", timeout=240)
    frozen = two_hosts.control("freeze", "node1").split()
    frozen_at = time.monotonic()
    assert len(frozen) == 1, frozen
    wait_for(log, "has had no heartbeat", timeout=WATCHDOG_BOUND + SLACK_S)
    took = time.monotonic() - frozen_at
    wait_for(log, "requeueing", timeout=60)
    wait_gone(two_hosts, job, 300)
    text = log.read_text()
    named = our_lines(text, r"watchdog: rank 0 \(host node1: it serves the rendezvous store")
    assert len(named) == 1, (took, named)
    assert re.search(
        r"a rank was lost \(srun's exit \d+\): requeueing \S+ \(requeue 1 of 3\)", text
    )
    assert "resuming from" in text
    no_traceback_of_ours(text)
    assert two_hosts.leftovers() == {}
    same_bits(results(run_dir), uninterrupted)


@pytest.mark.skipif(
    not shutil.which("mpirun"),
    reason="needs Open MPI (openmpi-bin); runs where make deps installed it as root (CI does)",
)
def test_a_frozen_rank_0_under_mpirun_ends_the_job_with_one_line(two_hosts, tmp_path, tiny_teacher):
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (requirements-dev.txt)")
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node1 slots=1\nnode2 slots=1\n")
    agent = REPO / "tests" / "cluster" / "rsh_agent.sh"
    network = ["--mca", "btl_tcp_if_include", two_hosts.subnet]
    network += ["--mca", "oob_tcp_if_include", two_hosts.subnet]
    cmd = ["bash", "launch/mpirun.sh", "2", "--hostfile", str(hostfile)]
    cmd += ["--mca", "plm_rsh_agent", str(agent), *network]
    cmd += ["-x", "PATH", "-x", "PYTHONPATH", "-x", "OMP_NUM_THREADS", "--"]
    cmd += tiny_args(tmp_path / "run", tiny_teacher, *RUN, "train.max_steps=5000", *LIVENESS)
    log = tmp_path / "mpirun.log"
    with open(log, "w") as out:
        mpirun = subprocess.Popen(
            two_hosts.on("node1", *cmd),
            cwd=REPO,
            env=env_for(two_hosts, CROSSRES_HOSTS_FILE=str(two_hosts.hosts)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(log, "step 12/5000", timeout=240)
        assert len(two_hosts.control("freeze", "node1").split()) == 1
        frozen_at = time.monotonic()
        # Rank 1 ends within the watchdog's bound; mpirun then ends the job, the frozen rank too.
        took = ended_within(mpirun, frozen_at, WATCHDOG_BOUND + 10)
    finally:
        if mpirun.poll() is None:
            mpirun.kill()
    text = log.read_text()
    named = our_lines(text, r"watchdog: rank 0 \(host node1: it serves the rendezvous store")
    assert len(named) == 1, (took, text[-3000:])
    assert mpirun.returncode != 0
    no_traceback_of_ours(text)
    assert two_hosts.leftovers() == {}


# An elastic job (launch/multinode_torchrun.sh 1:2). Its rendezvous waits LAST_CALL_S for a
# second node once one has joined, and drops a node whose agent missed 3 heartbeats.
LAST_CALL_S, KEEP_ALIVE_S = 3, 1
ELASTIC = {"nnodes": "1:2", "LAST_CALL_S": LAST_CALL_S, "KEEP_ALIVE_S": KEEP_ALIVE_S}
# After the loss, node1's rank names it (WATCHDOG_BOUND), the rendezvous drops the lost node and
# waits its last call, and node1's agent starts the group again without it, which on a loaded
# 2-core machine takes up to a minute (torch and the run's set-up in a fresh process).
REGROUP_S = 60
ALONE_BOUND = WATCHDOG_BOUND + 3 * KEEP_ALIVE_S + LAST_CALL_S + REGROUP_S


@pytest.mark.parametrize("loss", ["kill-job", "cut"], ids=["killed", "cut-off"])
def test_an_elastic_job_goes_on_alone_without_its_lost_host_and_finishes(
    two_hosts, tmp_path, tiny_teacher, uninterrupted, loss
):
    """launch/multinode_torchrun.sh 1:2, node2 lost mid-run (its job killed, or its link cut):
    node1 goes on at world size 1 from the newest checkpoint, with the global batch kept by twice
    the accumulation (said in one line), and finishes the run. It trains on the same images for
    the same steps as the uninterrupted two-host run; its bits are not that run's."""
    run_dir = tmp_path / "run"
    args = tiny_args(run_dir, tiny_teacher, *RUN, *LIVENESS)
    agents = launch_both(two_hosts, args, tmp_path, "elastic", **ELASTIC)
    wait_for(tmp_path / "elastic-node1.log", "step 12/40", timeout=240)
    two_hosts.control(loss, "node2")
    lost_at = time.monotonic()
    try:
        ended_within(agents["node2"], lost_at, CUT_OFF_BOUND)
        ended_within(agents["node1"], lost_at, ALONE_BOUND)
    finally:
        two_hosts.control("link", "node2")
    text = (tmp_path / "elastic-node1.log").read_text()
    assert agents["node1"].returncode == 0, text[-3000:]
    assert len(our_lines(text, r"rank 1 \(host node2")) == 1, text[-3000:]
    resumed = our_lines(text, r"resuming a 2-rank run on 1 rank")
    assert len(resumed) == 1 and resumed[0].endswith(
        "resuming a 2-rank run on 1 rank: accumulation 2 -> 4, the global batch of 32 kept"
    ), resumed
    done = results(run_dir)
    assert done["step"] == uninterrupted["step"] == 40
    assert done["images_seen"] == uninterrupted["images_seen"]
    assert len(done["lr_per_rank"]) == 1
    assert done["param_checksum_per_rank"][0] != uninterrupted["param_checksum_per_rank"][0]
    # How far it ends from the two-host run (docs/operations.md quotes these).
    print({"elastic": done["final"], "two hosts": uninterrupted["final"]})
    no_traceback_of_ours(text)
    assert two_hosts.leftovers() == {}


def test_an_elastic_job_takes_its_lost_host_back_at_the_next_restart(
    two_hosts, tmp_path, tiny_teacher
):
    """node2 lost, node1 alone at world size 1; node2's launcher started again while the job
    runs: node1's agent sees it wait, stops its rank at a step boundary with a checkpoint, and
    the group starts again on both hosts, at world size 2, to the end of the run."""
    run_dir = tmp_path / "run"
    # Long enough alone (about 30 s on 2 idle cores) for node2's launcher to start again.
    long_run = ("train.max_steps=600", "checkpoint.every=20", "val.every=600")
    args = tiny_args(run_dir, tiny_teacher, *long_run, "train.log_every=10", *LIVENESS)
    endpoint = f"{two_hosts.addr('node1')}:{free_port()}"
    agents = launch_both(two_hosts, args, tmp_path, "rejoin", endpoint=endpoint, **ELASTIC)
    node1_log = tmp_path / "rejoin-node1.log"
    wait_for(node1_log, "step 20/600", timeout=240)
    two_hosts.control("kill-job", "node2")
    agents["node2"].wait(timeout=30)
    wait_for(node1_log, "resuming a 2-rank run on 1 rank", timeout=ALONE_BOUND)
    back = launch_on(
        two_hosts,
        "node2",
        args,
        tmp_path / "back-node2.log",
        "job-rejoin",
        endpoint=endpoint,
        **ELASTIC,
    )
    wait_for(node1_log, "resuming a 1-rank run on 2 ranks", timeout=REGROUP_S + 30)
    for agent, log in ((agents["node1"], node1_log), (back, tmp_path / "back-node2.log")):
        assert agent.wait(timeout=300) == 0, log.read_text()[-3000:]
    text = node1_log.read_text()
    assert len(our_lines(text, r"resuming a 1-rank run on 2 ranks: accumulation 4 -> 2")) == 1
    done = results(run_dir)
    assert done["step"] == 600 and done["images_seen"] == 600 * 32
    assert len(done["lr_per_rank"]) == 2 and done["ranks_agree"]
    no_traceback_of_ours(text)
    assert two_hosts.leftovers() == {}
