"""The distribution sections of the configuration: how ranks are found, the backend, the
timeouts and the watchdog (``dist.*``), and what torch.compile compiles and where it keeps it
(``compile.*``: parallelize applies it with DDP and FSDP2). crossres_dist/config.py composes
them (and reads compile's old keys, model.compile, model.compile_mode, teacher.compile and
train.compile_cache)."""

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


@dataclass
class CompileConfig:
    # torch.compile the student (GPU: fuses the squeeze-excite and BatchNorm element-wise work).
    student: bool = False
    # torch.compile the frozen teacher too.
    teacher: bool = False
    # torch.compile's mode for both: "reduce-overhead" adds CUDA graphs (small micro-batches),
    # "max-autotune" tunes kernels.
    mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    # A directory where compiled code is kept across runs (Inductor's FX graph and AOTAutograd
    # caches, Triton's kernels): a later run, or a restarted one, finds every graph compiled
    # once. "" leaves PyTorch's defaults (a /tmp folder).
    cache: str = ""

    def problem(self) -> str | None:
        return None

    def mode_for(self, network: Literal["student", "teacher"]) -> str | None:
        """torch.compile's mode for the student or the teacher; None: left uncompiled."""
        return self.mode if getattr(self, network) else None
