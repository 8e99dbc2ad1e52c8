"""CPU arithmetic that does not depend on which x86-64 CPU runs it (``run.reproducible``).

On a CPU, the kind of processor picks the arithmetic in four places, and each changes the order
in which floats are summed, so the bits of a run:
- ATen's vectorised kernels run at the widest ISA the CPU has (AVX2 or AVX512: lanes of 8 or 16);
- oneDNN's convolutions are JIT code whose blocking follows the ISA and the cache sizes;
- MKL's GEMM takes a code path per CPU kind (and vendor);
- the thread count splits every reduction.

``cross_cpu`` pins the ISA of the first three to what every x86-64 CPU with AVX2 has: ATen at
AVX2, oneDNN at AVX2 (``ONEDNN_MAX_CPU_ISA``) and MKL's conditional numerical reproducibility
(``MKL_CBWR=COMPATIBLE``): 1.13 x the time of 60 demo steps, start-up included, most of it the
process starting twice (results/arithmetic-cost/). oneDNN may still block its loops by the CPU's
cache sizes, which one machine cannot vary: ``cross_cpu_strict`` turns oneDNN off as well
(convolutions through ATen's own kernels, whose GEMM is MKL's), at 2.0 x. The thread count is the caller's (the demo runs 1 per process).
The pins are read when torch, oneDNN and MKL load, so the process runs itself again with them in
its environment, once, before any work; under torchrun the pid stays the same.
"""

from __future__ import annotations

import logging
import os
import sys

import torch

from crossres_dist.errors import CrossresError

log = logging.getLogger(__name__)

MODES = ("", "cross_cpu", "cross_cpu_strict")
PINS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"}
# Set on the run again, so that a pin the environment did not take is an error, not a loop.
AGAIN = "CROSSRES_PINNED_AGAIN"


def unpinned() -> dict[str, str]:
    """The pins this process's environment lacks."""
    return {k: v for k, v in PINS.items() if os.environ.get(k) != v}


def pin(mode: str, may_run_again: bool) -> None:
    """Make this process's arithmetic `mode`'s ('' leaves the CPU's own). For cross_cpu a
    process whose environment lacks the pins runs itself again with them (`may_run_again`: it
    was started from the command line), or is refused in one line (called in-process)."""
    if not mode:
        return
    missing = unpinned()
    if missing:
        if os.environ.get(AGAIN) or not may_run_again:
            raise CrossresError(
                f"run.reproducible={mode}: the environment lacks "
                + ", ".join(f"{k}={v}" for k, v in missing.items())
                + " (read when torch loads: set them before the process starts)"
            )
        sys.stdout.flush()
        sys.stderr.flush()
        again = {**os.environ, **PINS, AGAIN: "1"}
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], again)
    if mode == "cross_cpu_strict":
        torch.backends.mkldnn.enabled = False


def describe(mode: str) -> str:
    """One line for the log and the provenance: what the arithmetic is pinned to."""
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "the CPU's ISA")
    if not torch.backends.mkldnn.enabled:
        onednn = "off"
    name = mode or "this CPU's own"
    return (
        f"{name} (ATen {torch.backends.cpu.get_cpu_capability()}, oneDNN {onednn}, MKL_CBWR "
        f"{os.environ.get('MKL_CBWR', 'unset')}, {torch.get_num_threads()} threads)"
    )
