"""One bootstrap for torchrun, SLURM (srun, one task per device) and MPI (mpirun / srun --mpi).

Detection order: a torchrun environment, else a SLURM step, else an MPI launch, else a single
local process. A half-set environment is an error that names the missing variable, never a guess.
"""

from __future__ import annotations

import datetime
import gc
import logging
import os
import socket
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import CrossresError

log = logging.getLogger(__name__)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
SLURM_VARS = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_NODELIST", "SLURM_JOB_ID")
MPI_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


class LaunchError(CrossresError, RuntimeError):
    """The launch environment is incomplete or the rendezvous cannot be reached."""


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
    if comm.Get_rank() == 0:
        addr = socket.gethostbyname(socket.gethostname())
        endpoint = (addr, port or _free_port())
    else:
        endpoint = None
    addr, chosen = comm.bcast(endpoint, root=0)
    return DistInfo("mpi", comm.Get_rank(), comm.Get_size(), local_rank, addr, chosen)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def pick_device(requested: str, local_rank: int) -> torch.device:
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise LaunchError("train.device=cuda but no CUDA device is visible")
    index = local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def init(
    info: DistInfo, device: torch.device, backend: str = "auto", timeout_s: int = 1800
) -> None:
    """Join the process group. The TCP store connect and every collective time out after
    `timeout_s`, so an unreachable rendezvous or a dead peer becomes an error, not a hang."""
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    log.info(
        "launch: %s, rank %d of %d (local %d), rendezvous %s:%d, backend %s",
        info.launcher,
        info.rank,
        info.world_size,
        info.local_rank,
        info.master_addr,
        info.master_port,
        backend,
    )
    if info.world_size == 1 and info.launcher == "single":
        return
    timeout = datetime.timedelta(seconds=timeout_s)
    device_id = device if device.type == "cuda" else None
    # Under torchrun the agent already serves the store at MASTER_PORT; otherwise rank 0 does.
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    try:
        store = dist.TCPStore(
            info.master_addr,
            info.master_port,
            info.world_size,
            is_master=info.rank == 0 and not agent_store,
            timeout=timeout,
            wait_for_workers=False,
        )
    except (RuntimeError, OSError) as err:
        raise LaunchError(
            f"rank {info.rank}: cannot reach the rendezvous {info.master_addr}:{info.master_port} "
            f"within {timeout_s}s: {err}"
        ) from None
    # A group restarted by torchrun (--max-restarts) meets in the same agent store: a fresh key
    # prefix per restart keeps its ranks from reading the dead group's addresses.
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.PrefixStore(f"crossres/restart{restart}/", store)
    dist.init_process_group(
        backend,
        store=store,
        rank=info.rank,
        world_size=info.world_size,
        timeout=timeout,
        device_id=device_id,
    )


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def broadcast_object(obj, src: int = 0):
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank ([obj] without a process group)."""
    if not is_initialized() or world_size() == 1:
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


class PeerStopped(CrossresError, RuntimeError):
    """Another rank stopped with an error it has reported itself (in one line): this rank ends
    quietly with the same exit code rather than with a traceback from the broken collective."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(what)
        self.code = code


def agree_on_failure(error: BaseException | None, device: torch.device, what: str) -> None:
    """After work that only some ranks do (rank 0 writing a checkpoint): every rank learns whether
    any failed. The rank that failed raises its own error; the others raise PeerStopped."""
    failed = all_reduce_max(float(error is not None), device) > 0
    if error is not None:
        error.agreed = True  # every rank stops here: the process group can be left in order
        raise error
    if failed:
        raise PeerStopped(2, what)


def gather_in_order(mine: torch.Tensor, count: int) -> torch.Tensor | None:
    """Rank r holds rows r, r + world, ... of a `count`-row result (eval_plans' strided shards,
    padded to equal length); rank 0 gets the rows back in order, padding removed."""
    world = world_size()
    if world > 1:
        gathered = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(gathered, mine)
        mine = torch.stack(gathered, dim=1).reshape(-1, mine.shape[1])
    return mine[:count].cpu() if rank() == 0 else None


def all_reduce_max(value: float, device: torch.device) -> float:
    if not is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def shutdown(graceful: bool = True) -> None:
    """Leave the process group. After a normal end all ranks first meet in a barrier: a rank
    that tears gloo down while a peer still talks to it can abort ("terminate called ...")."""
    if is_initialized():
        # FSDP2 modules hold communication state in reference cycles; freeing them before the
        # group goes avoids a rare abort at exit (seen with 4 gloo ranks on 2 cores).
        gc.collect()
        if graceful:
            dist.barrier()
        dist.destroy_process_group()
