"""The distribution section of the configuration (``dist.*``): how ranks are found, the
backend, the timeouts and the watchdog; crossres_dist/config.py composes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class DistConfig:
    # How ranks are found: "auto" (torchrun, then SLURM, then MPI, else one process) or forced.
    launcher: Literal["auto", "torchrun", "slurm", "mpi", "single"] = "auto"
    # "nccl" (GPU), "gloo" (CPU), or "auto" (from the device).
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    # Every collective (and the wait for rank-0 validation) fails after this many seconds.
    timeout_s: int = 1800
    # A rank without a heartbeat for this long (frozen, SIGSTOP, a hung node) ends the job so
    # that torchrun / SLURM restarts it from the last checkpoint; 0 = off. Far below timeout_s.
    watchdog_s: int = 300
    # The rendezvous port under SLURM or MPI; 0 = derived from the job id / chosen free.
    port: int = 0

    def problem(self) -> str | None:
        return None
