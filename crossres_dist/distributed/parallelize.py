"""Applies parallelism, compilation and memory layout to the networks; the model code itself
knows nothing of them.

The student is replicated with DDP (gradients as views into the all-reduce buckets). The frozen
teacher is either replicated (``teacher.sharding=none``) or sharded with FSDP2 (``full``): each
stage's parameters are spread over the ranks, gathered for that stage's forward and freed after
it, so a rank holds about 1/N of the teacher between forwards. Either may be compiled
(``torch.compile``; mode ``reduce-overhead`` adds CUDA graphs, for small micro-batches).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from crossres_dist import distributed

log = logging.getLogger(__name__)


def memory_format_for(
    device: torch.device, channels_last: bool, on_cpu: bool = False
) -> torch.memory_format:
    """NHWC on a GPU when asked (tensor-core convolutions); the CPU stays NCHW unless `on_cpu`
    (model.channels_last_on_cpu)."""
    if channels_last and (device.type == "cuda" or on_cpu):
        return torch.channels_last
    return torch.contiguous_format


def use_compile_cache(directory: str) -> None:
    """Keep compiled code in `directory` across runs (compile.cache): Inductor's FX graph
    cache and AOTAutograd cache, and Triton's kernels, for every compile this process makes.
    Set before the first compile; ranks share the directory safely (the caches lock)."""
    if not directory:
        return
    root = Path(directory).resolve()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(root / "triton")
    os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "1"
    os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "1"
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True


def parallelize_student(
    student: nn.Module,
    device: torch.device,
    world: int,
    memory_format: torch.memory_format,
    compile_mode: str | None = None,
) -> nn.Module:
    """The module the training step calls: the student on `device`, compiled if asked, wrapped
    in DDP on several ranks. The student itself stays unwrapped for checkpoints."""
    student.to(device, memory_format=memory_format)
    if compile_mode is not None:
        # In place: the module's state_dict keys stay free of an _orig_mod prefix.
        student.compile(mode=compile_mode)
    if world == 1:
        return student
    # Gradients as views into the all-reduce buckets: no copy in and out of them.
    return DDP(
        student,
        device_ids=[device.index] if device.type == "cuda" else None,
        gradient_as_bucket_view=True,
    )


def shard_teacher(
    teacher: nn.Module,
    sharding: str,
    device: torch.device,
    precision: str,
    memory_format: torch.memory_format = torch.contiguous_format,
    compile_mode: str | None = None,
) -> nn.Module:
    teacher = _place_teacher(teacher, sharding, device, precision, memory_format)
    if compile_mode is not None:
        teacher.compile(mode=compile_mode)
    return teacher


def _place_teacher(
    teacher: nn.Module,
    sharding: str,
    device: torch.device,
    precision: str,
    memory_format: torch.memory_format,
) -> nn.Module:
    if sharding == "full" and distributed.world_size() == 1:
        # One rank holds the whole teacher either way; FSDP2 would only add an all-gather copy
        # per block and forward (23% of the step at micro-batch 256 on one H200, 2026-11-30).
        log.info("teacher.sharding=full with a single process: nothing to shard, kept whole")
        sharding = "none"
    if sharding == "none":
        return teacher.to(device, memory_format=memory_format)
    # FSDP2 shards only contiguous parameters; channels_last inputs still work with them.
    teacher = teacher.to(device)
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
