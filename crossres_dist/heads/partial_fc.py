"""PartialFC: the classifier of a margin head sharded by class over the ranks, with sampled
negative classes, for 100k to millions of identities.

What it computes follows insightface's PartialFC (An et al., 2022, "Killing Two Birds with One
Stone: Efficient and Robust Training of Face Recognition CNNs by Partial FC"):
- rank r holds the class centres of a contiguous slice of the classes (1/N of the memory);
- the features and labels of the whole global batch are all-gathered;
- each rank keeps, for this step, every class of its slice that is a label in the global batch
  and samples the others at ``head.partial_fc_rate``;
- the margin is applied to the target cosines that fall in the slice, and a softmax spread over
  the ranks (an all-reduce of the row maxima, then of the sums of exponentials and of the target
  logits) gives the cross-entropy of the global batch.

Where this differs, and why:
- the negatives are drawn per class from a counter-based hash of (seed, step, class), each kept
  with probability rate, not a fixed number per rank: the sampled set is then the same whatever
  the number of ranks, so a run resumed on another number of ranks draws what it would have, and
  at rate 1 every class is kept and the loss equals the unsharded head's;
- so that the shapes do not change from step to step (a new shape recompiles under
  torch.compile and defeats CUDA graphs), the kept classes are padded to a fixed number of
  columns per rank, rate x the slice plus six standard deviations of the draw plus the global
  batch (its labels are always kept), and the padding is masked out of the softmax: the loss and
  the gradients are those of the kept classes alone. More kept than that (about once in 10**9
  steps) widens that step's columns;
- the class centres start from rows drawn per block of classes from (seed, block), so the
  starting classifier does not depend on the number of ranks either;
- the backbone's gradient is scaled by the number of ranks on its way back through the gather,
  because DDP then averages it: the backbone receives the gradient of the global batch's mean
  loss, as with the unsharded head.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from crossres_dist.models import CosineClassifier

# Rows of the initial classifier drawn from one generator: any sharding gets the same rows.
INIT_BLOCK = 4096
INIT_STD = 0.01


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_bounds(num_classes: int, rank: int, world: int) -> tuple[int, int]:
    """Rank `rank`'s classes [start, end): contiguous, the first num_classes % world one longer."""
    base, extra = divmod(num_classes, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def initial_rows(seed: int, start: int, end: int, dim: int) -> torch.Tensor:
    """Rows [start, end) of the initial classifier, N(0, INIT_STD), the same for any sharding."""
    rows = []
    for block in range(start // INIT_BLOCK, math.ceil(end / INIT_BLOCK) if end > start else 0):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + block)
        values = torch.randn(INIT_BLOCK, dim, generator=generator) * INIT_STD
        first = block * INIT_BLOCK
        rows.append(values[max(start - first, 0) : min(end - first, INIT_BLOCK)])
    return torch.cat(rows) if rows else torch.zeros(0, dim)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 (wrapping arithmetic)."""
    x = x ^ (x >> 30) & 0x3FFFFFFFF
    x = x * -4658895280553007687
    x = x ^ (x >> 27) & 0x1FFFFFFFFF
    x = x * -7723592293110705685
    return x ^ (x >> 31) & 0x1FFFFFFFF


def class_uniform(seed: int, step: int, classes: torch.Tensor) -> torch.Tensor:
    """A uniform draw in [0, 1) per class for this step: a pure function of (seed, step, class)."""
    key = (seed * 0x9E3779B1 + step * 0x85EBCA77) & 0x7FFFFFFF
    mixed = _mix(classes.to(torch.int64) * 2 + key * 0x100000001)
    return ((mixed >> 40) & 0xFFFFFF).to(torch.float32) / 2**24


class _GatherRows(torch.autograd.Function):
    """All-gather of every rank's rows; backward hands each rank the sum over ranks of the
    gradient of its own rows, times the number of ranks (DDP then averages the backbone)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor) -> torch.Tensor:
        rank, world = _world()
        ctx.rank, ctx.world, ctx.count = rank, world, len(rows)
        if world == 1:
            return rows
        parts = [torch.empty_like(rows) for _ in range(world)]
        dist.all_gather(parts, rows.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        if ctx.world == 1:
            return grad
        grad = grad.contiguous()
        dist.all_reduce(grad)
        mine = grad[ctx.rank * ctx.count : (ctx.rank + 1) * ctx.count]
        return mine * ctx.world


class _DistributedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy over the rows of logits whose columns are spread over the ranks
    (`target`: each row's target column here, -1 where it is on another rank)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _, world = _world()
        row_max = (
            logits.max(dim=1).values
            if logits.shape[1]
            else logits.new_full((len(logits),), -math.inf)
        )
        if world > 1:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX)
        exp = torch.exp(logits - row_max[:, None])
        sums = exp.sum(dim=1)
        here = target >= 0
        rows = torch.nonzero(here).flatten()
        target_logit = torch.zeros_like(sums)
        target_logit[rows] = logits[rows, target[rows]] - row_max[rows]
        if world > 1:
            dist.all_reduce(sums)
            dist.all_reduce(target_logit)
        probabilities = exp / sums[:, None]
        ctx.save_for_backward(probabilities, target)
        return (sums.log() - target_logit).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        probabilities, target = ctx.saved_tensors
        rows = torch.nonzero(target >= 0).flatten()
        grad_logits = probabilities.clone()
        grad_logits[rows, target[rows]] -= 1.0
        return grad_logits * (grad / len(probabilities)), None


class PartialFC(nn.Module):
    """This rank's slice of the class centres, and the margin head's loss of the global batch
    (see the module's docstring)."""

    def __init__(
        self, num_classes: int, dim: int, margin: nn.Module, rate: float, seed: int
    ) -> None:
        super().__init__()
        self.rank, self.world = _world()
        self.num_classes, self.dim = num_classes, dim
        self.start, self.end = shard_bounds(num_classes, self.rank, self.world)
        self.weight = nn.Parameter(initial_rows(seed, self.start, self.end, dim))
        self.margin, self.rate, self.seed = margin, rate, seed
        # Stops the margin's own all-reduce of its statistics: it sees the whole batch already.
        self.margin.batch_is_global = True
        self.step = 0  # the sampling's step, set by the trainer before each micro-step
        self.fixed_shape = True  # pad the kept classes to columns(); False: exactly the kept

    def columns(self, batch_rows: int) -> int:
        """The classifier columns of this rank every step: the whole slice at rate 1, else rate x
        the slice, six standard deviations of the Bernoulli draw, and the `batch_rows` labels of
        the global batch, at most the slice."""
        local = self.end - self.start
        if self.rate >= 1.0:
            return local
        spread = math.sqrt(local * self.rate * (1.0 - self.rate))
        return min(local, math.ceil(self.rate * local + 6.0 * spread) + batch_rows)

    def sampled(self, labels: torch.Tensor) -> torch.Tensor:
        """The classes of this slice kept this step (global indices, ascending): every label of
        the batch, and the others with probability rate."""
        classes = torch.arange(self.start, self.end, device=labels.device)
        if self.rate >= 1.0:
            return classes
        keep = class_uniform(self.seed, self.step, classes) < self.rate
        keep[(labels[(labels >= self.start) & (labels < self.end)] - self.start)] = True
        return classes[keep]

    def forward(
        self, features: torch.Tensor, labels: torch.Tensor, counted: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy of the global batch (the same on every rank), and how many of this
        rank's first `counted` rows (all: None) the nearest sampled centre classifies
        correctly."""
        everyone = _GatherRows.apply(features)
        all_labels = labels
        if self.world > 1:
            parts = [torch.empty_like(labels) for _ in range(self.world)]
            dist.all_gather(parts, labels.contiguous())
            all_labels = torch.cat(parts)
        kept = self.sampled(all_labels)
        column = torch.full((self.num_classes,), -1, dtype=torch.int64, device=labels.device)
        column[kept] = torch.arange(len(kept), device=labels.device)
        inside = (all_labels >= self.start) & (all_labels < self.end)
        target = torch.where(inside, column[all_labels.clamp(0, self.num_classes - 1)], -1)
        padding = 0
        if self.fixed_shape:
            padding = max(self.columns(len(all_labels)) - len(kept), 0)
        # Padded columns point at the slice's first row and are masked out below.
        rows_used = F.pad(kept - self.start, (0, padding))
        cos = F.linear(
            F.normalize(everyone.float(), dim=1), F.normalize(self.weight[rows_used], dim=1)
        )
        logits = self.margin(cos, target, everyone)
        if padding:
            padded = torch.arange(len(rows_used), device=labels.device) >= len(kept)
            logits = logits.masked_fill(padded, -math.inf)
            cos = cos.masked_fill(padded, -2.0)  # below every cosine: never the nearest
        ce = _DistributedCrossEntropy.apply(logits, target)
        rows = (len(labels), len(labels) if counted is None else counted)
        kept = F.pad(kept, (0, padding), value=-1)
        return {"ce": ce, "correct": self._correct(cos.detach(), kept, all_labels, rows)}

    @torch.no_grad()
    def _correct(self, cos, kept, all_labels, rows: tuple[int, int]) -> torch.Tensor:
        best, where = cos.max(dim=1) if cos.shape[1] else (None, None)
        if best is None:
            best = cos.new_full((len(cos),), -2.0)
            predicted = torch.full_like(all_labels, -1)
        else:
            predicted = kept[where]  # -1 where only padding was there
        if self.world > 1:
            bests = [torch.empty_like(best) for _ in range(self.world)]
            preds = [torch.empty_like(predicted) for _ in range(self.world)]
            dist.all_gather(bests, best)
            dist.all_gather(preds, predicted)
            winner = torch.stack(bests).argmax(dim=0)
            predicted = torch.stack(preds).gather(0, winner[None])[0]
        local_rows, counted = rows
        mine = slice(self.rank * local_rows, self.rank * local_rows + counted)
        return (predicted[mine] == all_labels[mine]).sum().float()

    # ---------------------------------------------------------------- the whole classifier
    def gather_weight(self) -> torch.Tensor | None:
        """The whole [C, D] classifier on rank 0 (None elsewhere); every rank takes part."""
        return _gather_shards(self.weight.detach(), self.num_classes, self.world)

    def load_full(self, weight: torch.Tensor) -> None:
        """This rank's slice of a whole classifier (a checkpoint's, from any number of ranks)."""
        with torch.no_grad():
            self.weight.copy_(weight[self.start : self.end].to(self.weight.device))

    @contextlib.contextmanager
    def as_full_classifier(self, model: nn.Module, attribute: str):
        """For validation: rank 0's network gets the whole classifier as a CosineClassifier for
        the duration (every rank takes part in the gather)."""
        full = self.gather_weight()
        if full is None:
            yield
            return
        original = getattr(model, attribute)
        cosine = CosineClassifier(full)
        setattr(model, attribute, cosine)
        try:
            yield
        finally:
            setattr(model, attribute, original)


def _gather_shards(shard: torch.Tensor, num_classes: int, world: int) -> torch.Tensor | None:
    """Every rank's rows of a class-sharded tensor, whole on rank 0 (shards padded to one
    length for the collective)."""
    rank, _ = _world()
    if world == 1:
        return shard.clone()
    longest = shard_bounds(num_classes, 0, world)
    length = longest[1] - longest[0]
    padded = torch.zeros(length, *shard.shape[1:], dtype=shard.dtype, device=shard.device)
    padded[: len(shard)] = shard
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    if rank != 0:
        return None
    rows = []
    for r, part in enumerate(parts):
        start, end = shard_bounds(num_classes, r, world)
        rows.append(part[: end - start])
    return torch.cat(rows)


def gather_momentum(optimizer: torch.optim.Optimizer, pfc: PartialFC) -> torch.Tensor | None:
    """The whole momentum buffer of the classifier (rank 0), for a checkpoint that resumes on
    any number of ranks."""
    state = optimizer.state.get(pfc.weight, {})
    buffer = state.get("momentum_buffer")
    if buffer is None:
        buffer = torch.zeros_like(pfc.weight)
    return _gather_shards(buffer.detach(), pfc.num_classes, pfc.world)
