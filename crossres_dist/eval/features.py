"""Distributed feature extraction, and its cache.

Every rank extracts a strided shard of the images (``pipelines.eval_plans``); rank 0 gathers the
shards back into image order (the padding removed). The same gather serves validation's teacher
features. Extraction goes chunk by chunk; each finished chunk is written to the cache, so an
extraction of IJB-C's 469k images that is preempted resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from crossres_dist import distributed
from crossres_dist.checkpointing import run_directory as rundir
from crossres_dist.models import build_model
from crossres_dist.verification import embed_mirrored
from crossres_dist.weights import WeightsError, read_state
from pipelines import Loader, ViewSettings
from pipelines.degradations import condition_label
from pipelines.packed import container_of
from pipelines.sources import Sample

log = logging.getLogger(__name__)
# Images per resumable chunk: large enough that the pipeline stays busy, small enough that a
# preemption loses little.
CHUNK = 4096


def load_model(path: str, device: torch.device) -> torch.nn.Module:
    state, spec = read_state(path)
    if spec is None:
        raise WeightsError(f"{path}: cannot tell the network's shape from this file")
    model = build_model(spec)
    model.load_state_dict(state, strict=False)
    return model.to(device).eval()


class Extractor:
    """Runs one network over images under one condition, on every rank together. ``flip``
    adds the features of the mirrored face to each image's; ``mirror="separate"`` keeps both
    instead (the verification protocol's XNorm needs each), without the logits."""

    def __init__(
        self,
        model: torch.nn.Module,
        views: ViewSettings,
        batch: int,
        backend: str,
        device: torch.device,
        threads: int,
        autocast,
        interpolation: str = "linear",
        flip: bool = False,
        mirror: str = "",
    ):
        self.model, self.views, self.batch = model, views, batch
        self.backend, self.device, self.threads = backend, device, threads
        self.autocast, self.interpolation, self.flip = autocast, interpolation, flip
        self.mirror = mirror or ("sum" if flip else "none")

    @property
    def feature_columns(self) -> int:
        dim = self.model.spec.feature_dim
        return 2 * dim if self.mirror == "separate" else dim

    def __call__(self, samples: list[Sample], condition, bar=None) -> torch.Tensor | None:
        """[N, D + classes]: features then logits of every sample, in order, on rank 0 ([N, 2D]
        with mirror="separate")."""
        loader = Loader(
            self.backend, self.views, self.batch, self.device, self.threads, 0, self.interpolation
        )
        return embed_mirrored(
            self.model, loader, samples, condition, self.autocast, bar, self.mirror
        )


_DIGESTS: dict[tuple, str] = {}


def content_digest(path: str) -> str:
    """SHA-256 of a file's contents (a checkpoint's), remembered per (path, size, mtime)."""
    stat = Path(container_of(path)).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def feature_settings(extractor: Extractor) -> dict:
    """Everything besides the images and the checkpoint that changes a feature: the decoding
    backend as it runs, the views (geometry, normalisation, degradation ranges), the resizing
    interpolation and the mirrored-face sum. Recorded in results.json as well."""
    from pipelines import choose_backend

    settings = {
        "backend": choose_backend(extractor.backend),
        "views": asdict(extractor.views),
        "interpolation": extractor.interpolation,
        "flip": extractor.flip,
    }
    if extractor.mirror == "separate":  # the other modes' keys stay what they were
        settings["mirror"] = "separate"
    return settings


def cache_key(checkpoint: str, samples: list[Sample], settings: dict, condition) -> str:
    """The checkpoint's contents, every image's path, size and modification time (not its
    bytes), the feature settings and the condition: an image replaced or rewritten, another
    backend or interpolation, a retrained checkpoint under the same name each make another key;
    an in-place edit that keeps an image's size and modification time does not
    (docs/benchmarks.md says so)."""
    files = []
    for s in samples:
        stat = Path(container_of(s.path)).stat()
        files.append([s.path, stat.st_size, stat.st_mtime_ns])
    parts = [content_digest(checkpoint), files, settings, condition]
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def cache_path(extractor: Extractor, checkpoint: str, samples, condition, cache: Path) -> Path:
    key = cache_key(checkpoint, samples, feature_settings(extractor), condition)
    return cache / f"{key}.pt"


def _pair(obj, count: int):
    features, logits = obj
    if len(features) != count or len(logits) != count:
        raise ValueError(f"expected {count} rows")
    return features, logits


def extract_cached(
    extractor: Extractor,
    checkpoint: str,
    samples: list[Sample],
    condition,
    cache: Path,
    label: str = "",
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(features, logits) of every sample on rank 0 (None elsewhere), from ``cache/KEY.pt`` when
    there. Otherwise extracted chunk by chunk into ``cache/KEY.parts/``: a restarted job keeps
    the chunks already done. Rank 0 shows a progress bar (images/s, time left)."""
    final = cache_path(extractor, checkpoint, samples, condition, cache)
    parts_dir = final.with_suffix(".parts")
    rank = distributed.rank()
    cached = None
    if rank == 0:
        cached = rundir.read_or_none(
            final, lambda f: _pair(torch.load(f, weights_only=True), len(samples)), "feature cache"
        )
    if distributed.broadcast_object(cached is not None):
        return cached
    chunks = [samples[i : i + CHUNK] for i in range(0, len(samples), CHUNK)]
    done = set()
    if rank == 0:
        parts_dir.mkdir(parents=True, exist_ok=True)
        done = {i for i in range(len(chunks)) if (parts_dir / f"{i:05d}.pt").is_file()}
        if done:
            log.info(
                "%s: resuming extraction, %d of %d chunks cached", label, len(done), len(chunks)
            )
    done = distributed.broadcast_object(done)
    bar = None
    if rank == 0:
        from tqdm import tqdm

        bar = tqdm(
            total=len(samples),
            initial=sum(len(chunks[i]) for i in done),
            unit="img",
            desc=f"{label} at {condition_label(condition)}",
            file=sys.stderr,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
        )
    for i, chunk in enumerate(chunks):
        if i in done:
            continue
        rows = extractor(chunk, condition, bar)
        if rank == 0:
            rundir.atomic_write(parts_dir / f"{i:05d}.pt", lambda f, x=rows: torch.save(x, f))
    if bar is not None:
        bar.close()
    if rank != 0:
        return None
    rows = torch.cat(
        [torch.load(parts_dir / f"{i:05d}.pt", weights_only=True) for i in range(len(chunks))]
    )
    dim = extractor.feature_columns
    result = rows[:, :dim].contiguous(), rows[:, dim:].contiguous()
    rundir.atomic_write(final, lambda f: torch.save(result, f))
    shutil.rmtree(parts_dir, ignore_errors=True)
    return result
