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
import sys
import threading
from collections import Counter
from dataclasses import dataclass

import torch
import torch.distributed as dist

from crossres_dist.errors import CrossresError

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


# ------------------------------------------------------------------ the network to the others
@dataclass(frozen=True)
class Route:
    """How this host reaches the rendezvous host: the interface and the address it leaves from."""

    host: str
    address: str  # the rendezvous host's address
    interface: str
    local_address: str
    is_local: bool  # the rendezvous host is this host


def interface_addresses() -> dict[str, str]:
    """Every IPv4 interface of this host and its address (Linux's SIOCGIFADDR)."""
    import fcntl
    import struct

    found = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue  # no IPv4 address on it
            found[name] = socket.inet_ntoa(packed[20:24])
    return found


def resolve(host: str, timeout_s: float = 10.0) -> str:
    """The IPv4 address of `host`, or a LaunchError within `timeout_s` (a resolver that does
    not answer must not hold the job)."""
    answer: list = []

    def lookup():
        try:
            answer.append(socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0])
        except (OSError, UnicodeError) as err:
            answer.append(err)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not answer:
        raise LaunchError(f"rendezvous host {host!r} did not resolve within {timeout_s:.0f} s")
    if isinstance(answer[0], BaseException):
        raise LaunchError(
            f"rendezvous host {host!r} does not resolve ({answer[0]}); give its address"
        )
    return answer[0]


def route_to(host: str, port: int = 9) -> Route:
    """The interface whose address routes to `host`: the kernel's own choice for a packet to
    it (a connected UDP socket sends nothing). Refused in one line when no interface does."""
    address = resolve(host)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((address, port))
        except OSError as err:
            raise LaunchError(
                f"rendezvous host {host} ({address}): no interface of {socket.gethostname()} "
                f"reaches it ({err.strerror}); check the address, or the network this host is on"
            ) from None
        local = s.getsockname()[0]
    interfaces = interface_addresses()
    name = next((n for n, a in interfaces.items() if a == local), "lo")
    return Route(host, address, name, local, address in interfaces.values() or local == address)


def choose_interface(master_addr: str) -> str:
    """Point gloo and NCCL at the interface that reaches the rendezvous host, unless the user
    named one (GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME). Left alone, both take the address the
    host name resolves to: on many clusters a management address that the other nodes cannot
    reach, or a container bridge. Returns what was chosen, for the log."""
    named = {v: os.environ[v] for v in SOCKET_IFNAME_VARS if os.environ.get(v)}
    if named:
        return ", ".join(f"{k}={v}" for k, v in named.items()) + " (as set)"
    route = route_to(master_addr)
    for variable in SOCKET_IFNAME_VARS:
        os.environ[variable] = route.interface
    return f"{route.interface} {route.local_address} (routes to {master_addr})"


SOCKET_IFNAME_VARS = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")


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
    network = choose_interface(info.master_addr)
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
    # Every rank's host and interface, in one line on rank 0: what a lost node is named by.
    global RANK_HOSTS
    everyone = all_gather_objects((socket.gethostname(), network))
    RANK_HOSTS = [host for host, _ in everyone]
    by_choice: dict[tuple[str, str], list[int]] = {}
    for r, (host, chosen) in enumerate(everyone):
        by_choice.setdefault((host, chosen), []).append(r)
    log.info(
        "network: %s",
        "; ".join(f"{ranks_text(r)} on {h}: {c}" for (h, c), r in by_choice.items()),
    )


# The host of every rank, once the group has met: the watchdog names a rank's host by it even
# when the store that holds the ranks' own records no longer answers.
RANK_HOSTS: list[str] = []


def ranks_text(ranks: list[int]) -> str:
    """'rank 3' or 'ranks 2, 3'."""
    return f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"


def main(argv: list[str] | None = None) -> int:
    """``python -m crossres_dist.distributed route HOST``: ``INTERFACE LOCAL_ADDRESS IS_LOCAL``
    (the launchers' one answer to "which of my addresses do the other nodes reach")."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "route":
        print("usage: python -m crossres_dist.distributed route HOST", file=sys.stderr)
        return 2
    try:
        route = route_to(args[1])
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(route.interface, route.local_address, "1" if route.is_local else "0")
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
