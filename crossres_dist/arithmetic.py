"""CPU arithmetic that does not depend on which x86-64 CPU runs it (``run.reproducible``).

On a CPU, the kind of processor picks the arithmetic in four places, and each changes the order
in which floats are summed, so the bits of a run:
- ATen's vectorised kernels run at the widest ISA the CPU has (AVX2 or AVX512: lanes of 8 or 16);
- oneDNN's convolutions are JIT code whose blocking follows the ISA and the cache sizes;
- MKL's GEMM takes a code path per CPU kind (and vendor);
- the thread count splits every reduction.

``cross_cpu`` pins the first three to what every x86-64 CPU with AVX2 has: ATen at AVX2, oneDNN
off (convolutions through ATen's own kernels, whose GEMM is MKL's), and MKL's conditional
numerical reproducibility. The thread count is the caller's (the demo runs 1 per process). The
first and the third are read when torch and MKL load, so the process runs itself again with them
in its environment, once, before any work; under torchrun the pid stays the same.
"""

from __future__ import annotations

import logging
import os
import sys

import torch

from crossres_dist.errors import CrossresError

log = logging.getLogger(__name__)

MODES = ("", "cross_cpu")
PINS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"}
# Set on the run again, so that a pin the environment did not take is an error, not a loop.
AGAIN = "CROSSRES_PINNED_AGAIN"


def unpinned() -> dict[str, str]:
    """The pins this process's environment lacks."""
    return {k: v for k, v in PINS.items() if os.environ.get(k) != v}


def pin(mode: str, may_run_again: bool) -> None:
    """Make this process's arithmetic `mode`'s ('' leaves the CPU's own). For cross_cpu a
    process whose environment lacks the pins runs itself again with them (`may_run_again`: it
    was started from the command line), or is refused in one line (called in-process)."""
    if mode != "cross_cpu":
        return
    missing = unpinned()
    if missing:
        if os.environ.get(AGAIN) or not may_run_again:
            raise CrossresError(
                "run.reproducible=cross_cpu: the environment lacks "
                + ", ".join(f"{k}={v}" for k, v in missing.items())
                + " (read when torch loads: set them before the process starts)"
            )
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(
            sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **PINS, AGAIN: "1"}
        )
    torch.backends.mkldnn.enabled = False


def describe(mode: str) -> str:
    """One line for the log and the provenance: what the arithmetic is pinned to."""
    threads = torch.get_num_threads()
    if mode != "cross_cpu":
        return (
            f"this CPU's own (ATen {torch.backends.cpu.get_cpu_capability()}, oneDNN "
            f"{'on' if torch.backends.mkldnn.enabled else 'off'}, {threads} threads)"
        )
    return (
        f"cross_cpu (ATen {torch.backends.cpu.get_cpu_capability()}, oneDNN off, MKL_CBWR "
        f"{os.environ.get('MKL_CBWR')}, {threads} threads)"
    )
