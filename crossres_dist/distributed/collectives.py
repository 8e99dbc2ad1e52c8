"""The few collectives the library makes outside the step (objects, agreement on a failure,
ordered gathers) and the group's shutdown; each is a no-op without a process group."""

from __future__ import annotations

import gc

import torch
import torch.distributed as dist

from crossres_dist.errors import CrossresError


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
