"""Which launcher started this process and where its rendezvous is: torchrun, a SLURM step,
an MPI launch or one local process (``detect``). A half-set environment is an error that names
the missing variable, never a guess."""

from __future__ import annotations

import os
import socket
import subprocess
from collections import Counter
from dataclasses import dataclass

from crossres_dist.distributed.network import interface_addresses
from crossres_dist.errors import LaunchError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
SLURM_VARS = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_NODELIST", "SLURM_JOB_ID")
MPI_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


@dataclass(frozen=True)
class DistInfo:
    launcher: str
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _require(env: dict, names: tuple[str, ...], launcher: str) -> dict[str, str]:
    missing = [n for n in names if not env.get(n)]
    if missing:
        raise LaunchError(
            f"{launcher} environment is incomplete: {missing[0]} is not set "
            f"(needs {', '.join(names)})"
        )
    return {n: env[n] for n in names}


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``node[01-04]`` -> ``node01``), via scontrol."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError) as err:
        raise LaunchError(
            f"SLURM_JOB_NODELIST={nodelist!r}: scontrol show hostnames failed: {err}"
        ) from None
    raise LaunchError(f"SLURM_JOB_NODELIST={nodelist!r} names no host")


def slurm_port(job_id: str, base: int = 20000, span: int = 20000) -> int:
    """A port derived from the job id, so concurrent jobs on one node do not collide."""
    return base + int(job_id) % span


def detect(env: dict | None = None, force: str = "auto", port: int = 0) -> DistInfo:
    env = dict(os.environ if env is None else env)
    launcher = force
    if launcher == "auto":
        if any(n in env for n in ("RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID")):
            launcher = "torchrun"
        elif "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:
            launcher = "slurm"
        elif any(n in env for n in MPI_RANK_VARS):
            launcher = "mpi"
        else:
            launcher = "single"

    if launcher == "torchrun":
        v = _require(env, TORCHRUN_VARS, "torchrun")
        return DistInfo(
            "torchrun",
            int(v["RANK"]),
            int(v["WORLD_SIZE"]),
            int(v["LOCAL_RANK"]),
            v["MASTER_ADDR"],
            int(v["MASTER_PORT"]),
        )
    if launcher == "slurm":
        v = _require(env, SLURM_VARS, "SLURM")
        return DistInfo(
            "slurm",
            int(v["SLURM_PROCID"]),
            int(v["SLURM_NTASKS"]),
            int(v["SLURM_LOCALID"]),
            first_slurm_host(v["SLURM_JOB_NODELIST"]),
            port or slurm_port(v["SLURM_JOB_ID"]),
        )
    if launcher == "mpi":
        return _detect_mpi(port)
    if launcher == "single":
        return DistInfo("single", 0, 1, 0, "127.0.0.1", port or _free_port())
    raise LaunchError(f"dist.launcher: unknown launcher {launcher!r}")


def _detect_mpi(port: int) -> DistInfo:
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise LaunchError(f"MPI launch detected but mpi4py cannot be imported: {err}") from None
    comm = MPI.COMM_WORLD
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local_rank = local.Get_rank()
    local.Free()
    # Rank 0 offers every address it has; each rank takes the first it can connect to. The
    # address its host name resolves to may be a management one that the other nodes cannot
    # reach, so it is tried first, never trusted.
    probe = None
    if comm.Get_rank() == 0:
        probe = socket.create_server(("", 0), backlog=min(4096, max(16, comm.Get_size())))
        try:
            named = [socket.gethostbyname(socket.gethostname())]
        except OSError:
            named = []
        offered = list(dict.fromkeys([*named, *interface_addresses().values()]))
        offered.sort(key=lambda a: a.startswith("127."))  # loopback last: one host only
        endpoint = (offered, probe.getsockname()[1], port or _free_port(), socket.gethostname())
    else:
        endpoint = None
    offered, probe_port, chosen, host0 = comm.bcast(endpoint, root=0)
    addr = next((a for a in offered if _connects(a, probe_port)), None)
    reached = comm.allgather(addr)
    failed = None in reached
    if comm.Get_rank() == 0 and len(reached) > 1 and not failed:
        # Rank 0 binds where the others reached it, not where its host name points.
        addr = Counter(reached[1:]).most_common(1)[0][0]
    comm.Barrier()
    if probe is not None:
        probe.close()
    if failed:
        raise LaunchError(
            f"rank {comm.Get_rank()}: none of rank 0's addresses ({', '.join(offered)}, host "
            f"{host0}) can be reached from {socket.gethostname()}"
            if addr is None
            else "another rank cannot reach rank 0 (it says so in its own line)"
        )
    return DistInfo("mpi", comm.Get_rank(), comm.Get_size(), local_rank, addr, chosen)


def _connects(address: str, port: int, timeout_s: float = 2.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]
