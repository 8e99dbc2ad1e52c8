"""The verification sets a run or an evaluation scores, at every resolution, on every rank
together.

A cross-resolution pair keeps its first image at full resolution and degrades the second (the
probe) to r px; with ``both`` degraded, the first image is degraded too. So at full resolution
every image is embedded, and at r px only the probes (or every image, with ``both``): on a
12,000-image set at six resolutions that is 42,000 images, each with its mirror image.

Every rank embeds a strided share (``pipelines.eval_plans``), rank 0 gathers them in order and
scores each set with insightface's ten folds (``metric.ten_fold``). The other ranks are busy
with their own share meanwhile, and none waits for rank 0 longer than its scoring takes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch

from crossres_dist import distributed
from crossres_dist.errors import SetupError
from crossres_dist.verification.binfile import BinError, VerificationSet, find_bins, read_bin
from crossres_dist.verification.metric import ten_fold
from pipelines import eval_plans
from pipelines.sources import Sample

log = logging.getLogger(__name__)
# What embeds images under one condition on every rank: [n, 2D] (each image's features, then
# its mirror image's) on rank 0, None elsewhere.
Embed = Callable[[list[Sample], object], "torch.Tensor | None"]


def resolution_name(resolution: int | None) -> str:
    return "full" if resolution is None else f"{resolution}px"


def verification_paths(setting: list[str] | str, train: str) -> list[Path]:
    """data.verification as files: the list as given, or with ``auto`` the ``*.bin`` files
    beside a packed data.train (insightface's val_targets)."""
    if setting == "auto" or setting == ["auto"]:
        folder = Path(train)
        found = find_bins(folder) if folder.is_dir() else []
        if not found:
            log.info(
                "data.verification=auto: no *.bin set in %s; no verification sets are scored",
                train,
            )
        return found
    return [Path(p) for p in ([setting] if isinstance(setting, str) and setting else setting)]


def load_sets(
    paths: list[Path],
    rank: int,
    world: int,
    cache_dir: Path | None = None,
) -> list[VerificationSet]:
    """Every set read before any network runs, the first problem refused in one line naming
    the file (their images are decoded by the caller: data.check.refuse_undecodable, with
    `images_of` and `image_namer`)."""
    sets = read_once(paths, rank, world, cache_dir)
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise BinError(f"two verification sets are named '{twice}': rename one of the files")
    return sets


def read_once(
    paths: list[Path], rank: int, world: int, cache_dir: Path | None
) -> list[VerificationSet]:
    """The sets as rank 0 reads them, handed to every rank: one read of each file (and one
    repacked copy, where one is needed) per job, not one per rank; rank 0's refusal is every
    rank's."""
    read: list[VerificationSet] | str = []
    if rank == 0:
        try:
            read = [read_bin(p, cache_dir) for p in paths]
        except BinError as err:
            read = str(err)
    if world > 1:
        read = distributed.broadcast_object(read)
    if isinstance(read, str):
        raise BinError(read)
    return read


def images_of(sets: list[VerificationSet]) -> list[str]:
    """Every image locator of the sets, in set and pair order."""
    return [locator for s in sets for locator in s.images]


def image_namer(sets: list[VerificationSet]) -> Callable[[str], str]:
    """How an error names a set's image: its file, its index and its pair."""
    where = {locator: (s, i) for s in sets for i, locator in enumerate(s.images)}

    def name(locator: str) -> str:
        vset, index = where[locator]
        return f"{vset.path}: image {index} (pair {index // 2})"

    return name


class VerificationSuite:
    """The sets, the resolutions (None = full) and which side of a pair is degraded."""

    def __init__(
        self, sets: list[VerificationSet], resolutions: list[int | None], degrade: str = "probe"
    ):
        if degrade not in ("probe", "both"):
            raise SetupError(f"degrade={degrade!r}: 'probe' or 'both'")
        self.sets = sets
        self.resolutions = list(dict.fromkeys([None, *resolutions]))
        self.degrade = degrade

    def samples(self, vset: VerificationSet, resolution: int | None) -> list[Sample]:
        """The images embedded at `resolution`: every one at full resolution and with both
        sides degraded, else the probes (each pair's second image)."""
        images = vset.images if resolution is None or self.degrade == "both" else vset.images[1::2]
        return [Sample(p, 0) for p in images]

    def __call__(self, embed: Embed) -> dict[str, float]:
        """val/verification/SET/RES/{accuracy,accuracy_std,val@far=0.001,xnorm} of every set at
        every resolution and their mean accuracy (val/verification/accuracy), on rank 0; {}
        elsewhere. Every rank takes part."""
        metrics: dict[str, float] = {}
        for vset in self.sets:
            full = embed(self.samples(vset, None), None)
            for resolution in self.resolutions:
                rows = (
                    full
                    if resolution is None
                    else embed(self.samples(vset, resolution), resolution)
                )
                if distributed.rank() != 0:
                    continue
                scores = score_pairs(vset, full, rows, resolution, self.degrade)
                key = f"val/verification/{vset.name}/{resolution_name(resolution)}"
                for name in ("accuracy", "accuracy_std", "val@far=0.001", "xnorm"):
                    metrics[f"{key}/{name}"] = scores[name]
        if metrics:
            accuracies = [v for k, v in metrics.items() if k.endswith("/accuracy")]
            metrics["val/verification/accuracy"] = float(np.mean(accuracies))
        return metrics


def score_pairs(
    vset: VerificationSet,
    full: torch.Tensor,
    rows: torch.Tensor,
    resolution: int | None,
    degrade: str = "probe",
    gallery: torch.Tensor | None = None,
) -> dict:
    """ten_fold of one set at one resolution: `full` the embeddings [2N, 2D] of every image at
    full resolution, `rows` those at `resolution` (of the probes, or of every image with
    ``both``); each row an image's features, then its mirror image's. `gallery`: every image's
    full-resolution embeddings by another network, whose first faces of the pairs are then
    compared with this network's probes (a gallery enrolled by the teacher, say)."""
    full = full.double().numpy().reshape(len(full), 2, -1)
    rows = rows.double().numpy().reshape(len(rows), 2, -1)
    if resolution is None:
        first, second = full[0::2], full[1::2]
    elif degrade == "both":
        first, second = rows[0::2], rows[1::2]
    else:
        first, second = full[0::2], rows
    if gallery is not None:
        first = gallery.double().numpy().reshape(len(gallery), 2, -1)[0::2]
    return ten_fold(first[:, 0], second[:, 0], vset.issame, first[:, 1], second[:, 1])


@torch.no_grad()
def embed_mirrored(
    model: torch.nn.Module,
    loader,
    samples: list[Sample],
    condition,
    autocast: AbstractContextManager,
    bar=None,
    mirror: str = "separate",
) -> torch.Tensor | None:
    """The model's features of `samples` under `condition`, every rank its share, gathered on
    rank 0 in order: [n, 2D] with ``mirror="separate"`` (each image's features, then its mirror
    image's); with ``"sum"`` (their sum) or ``"none"`` [n, D + C], the features then the
    logits (evaluation keeps them)."""
    rank, world = distributed.rank(), distributed.world_size()
    plans = eval_plans(samples, loader.views, loader.batch_size, [condition], rank, world)
    stream = loader(iter(p for _, p in plans))
    parts = []
    for _, plan in plans:
        images = next(stream)["student_view"]
        with autocast:
            features, logits = model(images)
            if mirror != "none":
                # Mirroring the network's input equals mirroring the face: the crop and the
                # degradation are symmetric.
                mirrored, _ = model(torch.flip(images, dims=[-1]))
        if mirror == "separate":
            parts.append(torch.cat([features.float(), mirrored.float()], 1))
        else:
            if mirror == "sum":
                features = features.float() + mirrored.float()
            parts.append(torch.cat([features.float(), logits.float()], 1))
        if bar is not None:
            bar.update(min(int(plan.valid.sum()) * world, bar.total - bar.n))
    del stream
    return distributed.gather_in_order(torch.cat(parts), len(samples))
