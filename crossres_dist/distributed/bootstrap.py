"""One bootstrap for torchrun, SLURM (srun, one task per device) and MPI (mpirun / srun --mpi):
the device, and the process group joined through the rendezvous store with every rank's host and
interface logged. What launched the process is launch_env.detect's; which interface reaches the
rendezvous, network.choose_interface's; the collectives outside the step, collectives.py's."""

from __future__ import annotations

import datetime
import logging
import os
import socket

import torch
import torch.distributed as dist

from crossres_dist.distributed.collectives import all_gather_objects
from crossres_dist.distributed.launch_env import DistInfo, LaunchError
from crossres_dist.distributed.network import choose_interface

log = logging.getLogger(__name__)


def uses_agent_store() -> bool:
    """torchrun's agent serves the workers' store (torch's TCPStore sharing)."""
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"


def store_prefix() -> str:
    """The key prefix of this group in the workers' store. A group restarted by torchrun in the
    agent's shared store meets where the dead group's keys still are: a prefix per restart keeps
    its ranks from reading them. A store of the group's own (launch/multinode_torchrun.sh turns
    the sharing off; SLURM and mpirun) is new with each group and needs none; and the restart
    count is each agent's own, so a node that joins a running elastic job counts from 0 and
    would meet nobody under it (pytorch/pytorch#135712)."""
    if not uses_agent_store():
        return "crossres/"
    return f"crossres/restart{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"


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
    # Under torchrun the agent may already serve the store at MASTER_PORT; otherwise rank 0 does.
    agent_store = uses_agent_store()
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
    store = dist.PrefixStore(store_prefix(), store)
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
