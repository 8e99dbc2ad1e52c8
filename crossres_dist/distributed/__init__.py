"""Distribution: what launched the process (``launch_env``: torchrun, SLURM, MPI), which
interface reaches the rendezvous (``network``), the group joined (``bootstrap``), the few
collectives outside the step (``collectives``), how the student and the teacher are spread over
the ranks (``parallelize``), the heartbeat watchdog (``watchdog``) and the supervisor that bounds
torchrun's agent (``supervise``). The package face re-exports the first four, which the rest of
the project calls as ``distributed.X``."""

from crossres_dist.distributed.bootstrap import init, pick_device, ranks_text
from crossres_dist.distributed.collectives import (
    PeerStopped,
    agree_on_failure,
    all_gather_objects,
    all_reduce_max,
    broadcast_object,
    gather_in_order,
    is_initialized,
    rank,
    shutdown,
    world_size,
)
from crossres_dist.distributed.launch_env import (
    MPI_RANK_VARS,
    SLURM_VARS,
    TORCHRUN_VARS,
    DistInfo,
    LaunchError,
    detect,
    first_slurm_host,
    slurm_port,
)
from crossres_dist.distributed.network import (
    SOCKET_IFNAME_VARS,
    Route,
    choose_interface,
    interface_addresses,
    main,
    resolve,
    route_to,
)

__all__ = [
    "DistInfo",
    "LaunchError",
    "MPI_RANK_VARS",
    "PeerStopped",
    "Route",
    "SLURM_VARS",
    "SOCKET_IFNAME_VARS",
    "TORCHRUN_VARS",
    "agree_on_failure",
    "all_gather_objects",
    "all_reduce_max",
    "broadcast_object",
    "choose_interface",
    "detect",
    "first_slurm_host",
    "gather_in_order",
    "init",
    "interface_addresses",
    "is_initialized",
    "main",
    "pick_device",
    "rank",
    "ranks_text",
    "resolve",
    "route_to",
    "shutdown",
    "slurm_port",
    "world_size",
]
