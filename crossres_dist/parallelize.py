"""Applies parallelism to the networks; the model code itself knows nothing of it.

The student is replicated with DDP (in the trainer). The frozen teacher is either replicated
(``teacher.sharding=none``) or sharded with FSDP2 (``full``): each stage's parameters are spread
over the ranks, gathered for that stage's forward and freed after it, so a rank holds about 1/N
of the teacher between forwards.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from . import distributed

log = logging.getLogger(__name__)


def shard_teacher(
    teacher: nn.Module,
    sharding: str,
    device: torch.device,
    precision: str,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> nn.Module:
    if sharding == "none":
        return teacher.to(device, memory_format=memory_format)
    # FSDP2 shards only contiguous parameters; channels_last inputs still work with them.
    teacher = teacher.to(device)
    if not distributed.is_initialized():
        log.info("teacher.sharding=full with a single process: nothing to shard")
        return teacher
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # Gather parameters in the compute dtype on GPU: half the all-gather bytes in bf16.
    param_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    policy = MixedPrecisionPolicy(
        param_dtype=param_dtype if device.type == "cuda" else None, reduce_dtype=None
    )
    for stage in teacher.stages():
        for block in stage:
            fully_shard(block, mp_policy=policy, reshard_after_forward=True)
    fully_shard(teacher, mp_policy=policy, reshard_after_forward=True)
    teacher.eval()
    return teacher


def local_parameter_bytes(module: nn.Module) -> int:
    """Bytes of parameters this rank holds (the local shard of a sharded parameter)."""
    total = 0
    for p in module.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        total += local.numel() * local.element_size()
    return total
