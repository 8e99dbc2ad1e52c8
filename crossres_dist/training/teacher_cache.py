"""The frozen teacher's descriptors of the training faces, computed once and trained against.

The teacher never changes, and with a fixed crop window (data.crop = data.resize_shorter on
square faces, as dlib's aligned chips are) its view of a face is one of at most four images: the
face as it is, grey (data.grayscale_p), mirrored (data.hflip_p), or both. Each of those is run
through the teacher once, before the first step, and every step reads the rows of its faces
instead of running the teacher (``teacher.feature_cache``).

The store is one file per teacher, view settings and variant, holding one row per image
*content* (SHA-1 of the encoded bytes): runs of other seeds, variants and subsets of the same
faces share it, a face copied elsewhere keeps its row, and a face rewritten in place gets a new
one. A face whose view is not fixed (a non-square image, or a random crop) is not cached: a
batch that holds one runs the teacher as before, so the cache never changes what is computed,
only how often.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import time
from contextlib import AbstractContextManager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from crossres_dist import distributed
from crossres_dist.checkpointing import run_directory as rundir
from crossres_dist.weights import resolve_path
from pipelines import Loader, Sample, eval_plans
from pipelines.dali_pipeline import encoded_bytes

log = logging.getLogger(__name__)


def face_key(path: str) -> tuple[str, bool]:
    """(SHA-1 of the encoded image, whether it is square): the row's key, and whether a
    crop as large as the shorter side leaves it one fixed view."""
    from PIL import Image

    data = encoded_bytes(path).tobytes()
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    return hashlib.sha1(data).hexdigest(), width == height


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def variants_of(loader: Loader) -> list[tuple[bool, bool]]:
    """The (grey, mirrored) views a training face can be given to the teacher."""
    views = loader.views
    greys = (False, True) if views.grayscale_p > 0 else (False,)
    flips = (False, True) if views.hflip_p > 0 else (False,)
    return list(itertools.product(greys, flips))


class TeacherFeatureCache:
    """The teacher's descriptor of every cached training face in each of its variants:
    ``rows[sample, variant]``; ``covered[sample]`` says whether the face has rows."""

    def __init__(self, rows: torch.Tensor, covered: torch.Tensor, variants: list[tuple]):
        self.rows, self.covered = rows, covered
        self.variant_index = {v: i for i, v in enumerate(variants)}
        self.hits = self.misses = 0

    def lookup(self, batch: dict, device: torch.device) -> torch.Tensor | None:
        """The teacher's features of the batch's teacher views, or None when any of its faces
        is not cached (the teacher then runs on the batch as before)."""
        samples = batch["sample"]
        if not bool(self.covered[samples].all()):
            self.misses += 1
            return None
        self.hits += 1
        variant = torch.tensor(
            [
                self.variant_index[(bool(g), bool(f))]
                for g, f in zip(batch["gray"].tolist(), batch["flip"].tolist())
            ]
        )
        return self.rows[samples, variant].to(device, non_blocking=True)

    def log_use(self) -> None:
        log.info(
            "teacher feature cache: %d micro-batches read from it, %d ran the teacher",
            self.hits,
            self.misses,
        )


@torch.no_grad()
def _teacher_rows(
    teacher: torch.nn.Module,
    samples: list[Sample],
    loader: Loader,
    variant: tuple[bool, bool],
    autocast: AbstractContextManager,
) -> torch.Tensor | None:
    """[N, D] on rank 0 (None elsewhere): every rank runs the teacher on its strided share of
    `samples`' centre views in `variant` (as validation's teacher features are made)."""
    rank, world = distributed.rank(), distributed.world_size()
    plans = [
        p for _, p in eval_plans(samples, loader.views, loader.batch_size, [None], rank, world)
    ]
    for plan in plans:
        plan.gray[:], plan.flip[:] = variant
    parts = []
    teacher.eval()
    started = said = time.perf_counter()
    for done, batch in enumerate(loader(iter(plans)), 1):
        with autocast:
            features, _ = teacher(batch["teacher_view"])
        parts.append(features.float())
        if time.perf_counter() - said > 60:  # a long first pass says how far it is
            said = time.perf_counter()
            rate = done * loader.batch_size * world / (said - started)
            log.info(
                "teacher feature cache: %d of %d faces, %.0f faces/s",
                min(done * loader.batch_size * world, len(samples)),
                len(samples),
                rate,
            )
    return distributed.gather_in_order(torch.cat(parts), len(samples))


def _read_store(path: Path) -> dict[str, torch.Tensor]:
    def parse(p: Path) -> dict[str, torch.Tensor]:
        obj = torch.load(p, weights_only=True)
        keys, rows = obj["keys"], obj["rows"]
        if not isinstance(rows, torch.Tensor) or rows.dim() != 2 or len(rows) != len(keys):
            raise ValueError("expected keys and a [N, D] tensor of rows")
        return dict(zip(keys, rows))

    return rundir.read_or_none(path, parse, "teacher feature cache") or {}


def cache_for_run(
    teacher_cfg, output_dir: str, teacher, samples, loader, autocast
) -> TeacherFeatureCache | None:
    """The cache teacher.feature_cache asks for ("auto": under run.output_dir), or None when it
    is off or there is no teacher to run (pretraining, lambda = 0)."""
    if not teacher_cfg.feature_cache or teacher is None:
        return None
    store = teacher_cfg.feature_cache
    if store == "auto":
        store = str(Path(output_dir) / "teacher-features")
    # fp32 runs no autocast; another precision is the autocast's dtype (the features differ).
    precision = str(getattr(autocast, "fast_dtype", "fp32"))
    return build_cache(
        teacher, teacher_cfg.checkpoint, samples, loader, autocast, precision, Path(store)
    )


def build_cache(
    teacher: torch.nn.Module,
    teacher_file: str,
    samples: list[Sample],
    loader: Loader,
    autocast: AbstractContextManager,
    precision: str,
    store_dir: Path,
) -> TeacherFeatureCache:
    """The cache of `samples` (every rank gets it whole): rows already in the store are read,
    the others computed by all ranks together and added to the store by rank 0."""
    views = loader.views
    variants = variants_of(loader)
    keys: list[str] = []
    fixed = np.zeros(len(samples), bool)
    if distributed.rank() == 0:
        found = [face_key(s.path) for s in samples]
        keys = [k for k, _ in found]
        fixed = np.array([square for _, square in found]) & (views.crop == views.resize_shorter)
    keys, fixed = distributed.broadcast_object((keys, fixed))
    settings = {
        "teacher": file_digest(resolve_path(teacher_file)),
        "views": {k: v for k, v in asdict(views).items() if k != "degradations"},
        "backend": loader.backend,
        "interpolation": loader.interpolation,
        "precision": precision,
    }
    name = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    cached = [i for i in range(len(samples)) if fixed[i]]
    rows = None
    for v, variant in enumerate(variants):
        path = store_dir / f"teacher-{name}-grey{int(variant[0])}-flip{int(variant[1])}.pt"
        store = _read_store(path) if distributed.rank() == 0 else {}
        missing = [i for i in cached if keys[i] not in store]
        missing = distributed.broadcast_object(
            sorted({keys[i]: i for i in missing}.values())  # one row per content
        )
        if missing:
            computed = _teacher_rows(
                teacher, [samples[i] for i in missing], loader, variant, autocast
            )
            if distributed.rank() == 0:
                store.update({keys[i]: row for i, row in zip(missing, computed)})
                store_dir.mkdir(parents=True, exist_ok=True)
                order = sorted(store)
                payload = {"keys": order, "rows": torch.stack([store[k] for k in order])}
                rundir.atomic_write(path, lambda f, x=payload: torch.save(x, f))
        table = None
        if distributed.rank() == 0:
            dim = next(iter(store.values())).shape[0] if store else 1
            table = torch.zeros(len(samples), dim)
            for i in cached:
                table[i] = store[keys[i]]
        table = distributed.broadcast_object(table)
        if rows is None:
            rows = torch.zeros(len(samples), len(variants), table.shape[1])
        rows[:, v] = table
        log.info(
            "teacher feature cache: %d of %d training faces (grey %s, mirrored %s), %d images "
            "computed now, the others read from %s",
            len(cached),
            len(samples),
            variant[0],
            variant[1],
            len(missing),
            path,
        )
    if len(cached) < len(samples):
        log.info(
            "teacher feature cache: %d training faces have no fixed view (not square, or "
            "data.crop < data.resize_shorter): batches that hold one run the teacher",
            len(samples) - len(cached),
        )
    covered = torch.from_numpy(fixed.copy())
    return TeacherFeatureCache(rows, covered, variants)
