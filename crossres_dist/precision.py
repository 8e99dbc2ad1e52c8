"""Mixed precision: which dtype a device computes in, and the autocast context for it.

Shared by the trainer and the tools (evaluation, benchmarks), so that a tool never imports the
training loop to learn how the network is run.
"""

from __future__ import annotations

import contextlib

import torch


def resolve_precision(requested: str, device: torch.device) -> str:
    """'auto' is bf16 on a GPU (no loss scaling needed) and fp32 on the CPU."""
    if requested == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return requested


def autocast_for(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
