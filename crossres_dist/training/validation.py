"""Validation on rank 0, and the teacher's validation features computed once by all ranks.

Validation runs only the student: the teacher's features of the (undegraded) validation views are
computed at start by every rank together, each its share, gathered on rank 0 and cached on disk
next to the run, keyed by the teacher weights and the validation set. A sharded teacher is thus
never needed whole on rank 0, and a resumed run does not pay for it again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from contextlib import AbstractContextManager
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from crossres_dist import distributed
from crossres_dist.checkpointing import run_directory as rundir
from crossres_dist.training.objective import CrossResolutionObjective, teacher_reliability
from crossres_dist.training.settings import ValConfig
from crossres_dist.verification import VerificationSuite, embed_mirrored
from crossres_dist.verification.suite import resolution_name
from crossres_dist.weights import resolve_path
from pipelines import Loader, Sample, eval_plans
from pipelines.packed import container_of

log = logging.getLogger(__name__)


class ValidationData:
    def __init__(self, samples: list[Sample], loader: Loader, cache_mb: int = 0):
        self.samples, self.loader = samples, loader
        self.views, self.batch, self.device = loader.views, loader.batch_size, loader.device
        self.cache_bytes = cache_mb * 2**20
        self._memo: dict[tuple, list] = {}

    def batches(self, resolutions: list[int | None], rank: int = 0, world: int = 1):
        """(resolution, batch) pairs in a fixed order; padded entries have batch['valid'] False.
        The views are the same at every validation (centre crops, fixed degradation), so when
        they fit in ``cache_mb`` they are made once and kept."""
        key = (tuple(resolutions), rank, world)
        if key in self._memo:
            yield from self._memo[key]
            return
        views_bytes = len(self.samples) / world * len(resolutions) * 2 * 3 * self.views.crop**2 * 4
        keep = [] if views_bytes <= self.cache_bytes else None
        for item in self._make(resolutions, rank, world):
            if keep is not None:
                keep.append(item)
            yield item
        if keep is not None:
            self._memo[key] = keep

    def _make(self, resolutions: list[int | None], rank: int, world: int):
        plans = eval_plans(self.samples, self.views, self.batch, resolutions, rank, world)
        stream = self.loader(itertools.cycle([p for _, p in plans]))
        for resolution, plan in plans:
            batch = next(stream)
            batch["valid"] = torch.from_numpy(plan.valid).to(self.device)
            yield resolution, batch
        del stream

    def fingerprint(self) -> str:
        """The validation images (path, label, size and modification time: an image replaced
        in place is a new one) and the views, for the teacher-feature cache's key."""
        files = []
        for s in self.samples:
            stat = Path(container_of(s.path)).stat()
            files.append([s.path, s.label, stat.st_size, stat.st_mtime_ns])
        text = json.dumps(files + [asdict(self.views)])
        return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def teacher_key(teacher_source: str) -> str:
    path = resolve_path(teacher_source)
    stat = path.stat()
    return hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[
        :16
    ]


@torch.no_grad()
def compute_teacher_features(
    teacher: torch.nn.Module,
    data: ValidationData,
    autocast: AbstractContextManager,
    with_reliability: bool = False,
) -> torch.Tensor | None:
    """All ranks run the teacher on their share; rank 0 returns [N, D] in sample order, or
    [N, D + 2] with its reliability on each face (objective.teacher_reliability) appended."""
    rank, world = distributed.rank(), distributed.world_size()
    teacher.eval()
    parts = []
    for _, batch in data.batches([None], rank, world):
        with autocast:
            features, logits = teacher(batch["teacher_view"])
        features = features.float()
        if with_reliability:
            features = torch.cat([features, teacher_reliability(logits, batch["labels"])], 1)
        parts.append(features)
    return distributed.gather_in_order(torch.cat(parts), len(data.samples))


def cached_teacher_features(
    teacher: torch.nn.Module,
    teacher_source: str,
    data: ValidationData,
    cache_dir: Path,
    autocast: AbstractContextManager,
    with_reliability: bool = False,
) -> torch.Tensor | None:
    """The teacher's validation features on rank 0 (None elsewhere), from cache when valid,
    with its reliability appended when asked (another file: the plain one stays for runs that
    do not ask). A cache file that cannot be read (a half-written file from a lost node) is set
    aside and rebuilt, with a warning."""
    key = f"{teacher_key(teacher_source)}-{data.fingerprint()}"
    kind = "targets" if with_reliability else "features"
    path = cache_dir / f"val_teacher_{kind}-{key}.pt"
    cached = None
    if distributed.rank() == 0:
        cached = rundir.read_or_none(
            path,
            lambda p: _features(torch.load(p, weights_only=True), len(data.samples)),
            "teacher-feature cache",
        )
    if distributed.broadcast_object(cached is not None):
        log.info("validation teacher features: cached %s", path.name)
        return cached
    features = compute_teacher_features(teacher, data, autocast, with_reliability)
    if distributed.rank() == 0:
        cache_dir.mkdir(parents=True, exist_ok=True)
        rundir.atomic_write(path, lambda f: torch.save(features, f))
        log.info(
            "validation teacher features: computed for %d images -> %s", len(features), path.name
        )
    return features


def _features(obj, count: int) -> torch.Tensor:
    if not isinstance(obj, torch.Tensor) or obj.dim() != 2 or len(obj) != count:
        raise ValueError(f"expected a [{count}, D] tensor")
    return obj


@torch.no_grad()
def evaluate_student(
    student: torch.nn.Module,
    data: ValidationData,
    resolutions: list[int | None],
    teacher_features: torch.Tensor | None,
    objective: CrossResolutionObjective,
    autocast: AbstractContextManager,
    similarity: bool = False,
) -> dict[str, float]:
    """Loss (the training objective, against the teacher's features of the undegraded view) and
    top-1 (when the student has a classifier) at each resolution (None = full), on this process
    alone; with `similarity`, also the cosine similarity of the student's descriptor to the
    teacher's (val.select_by=feature)."""
    similarity = similarity and teacher_features is not None
    was_training = student.training
    student.eval()
    sums: dict[int | None, dict[str, float]] = {}
    offsets: dict[int | None, int] = {}
    for resolution, batch in data.batches(resolutions):
        with autocast:
            features, logits = student(batch["student_view"])
        valid = batch["valid"]
        labels = batch["labels"][valid]
        features, logits = features.float()[valid], logits.float()[valid]
        target = reliability = None
        if teacher_features is not None:
            start = offsets.get(resolution, 0)
            target = teacher_features[start : start + len(labels)].to(features.device)
            offsets[resolution] = start + len(labels)
            if objective.weighs_by_teacher:
                target, reliability = target[:, :-2], target[:, -2:]
        terms = objective(
            features, logits, labels, target, reduction="sum", reliability=reliability
        )
        s = sums.setdefault(
            resolution, {"ce": 0.0, "loss": 0.0, "correct": 0.0, "n": 0.0, "cos": 0.0}
        )
        s["ce"] += terms["ce"].item()
        s["loss"] += terms["loss"].item()
        if logits.shape[1]:
            s["correct"] += (logits.argmax(1) == labels).sum().item()
        if similarity:
            s["cos"] += F.cosine_similarity(features, target.float(), dim=1).sum().item()
        s["n"] += len(labels)
    student.train(was_training)
    metrics = {}
    classifies = logits.shape[1] > 0  # none without a labelled source
    for resolution, s in sums.items():
        name = resolution_name(resolution)
        if classifies:
            metrics[f"val/{name}/top1"] = s["correct"] / s["n"]
            metrics[f"val/{name}/ce"] = s["ce"] / s["n"]
        metrics[f"val/{name}/loss"] = s["loss"] / s["n"]
        if similarity:
            metrics[f"val/{name}/teacher_cos"] = s["cos"] / s["n"]
    if similarity:
        metrics["val/teacher_cos"] = sum(s["cos"] / s["n"] for s in sums.values()) / len(sums)
    return metrics


class Validator:
    """A validation at a step: BatchNorm statistics re-estimated first when val.bn_recalibrate
    asks for it (all ranks), then the verification sets at every validated resolution (every
    rank embeds its share, rank 0 scores), then the student on rank 0 at full resolution and at
    every validated resolution, and rank 0's metrics handed to every rank. Owns the validation
    views and the teacher's features of them (computed once by all ranks, cached on disk)."""

    def __init__(
        self,
        val_cfg: ValConfig,
        samples: list[Sample],
        *,
        loader: Loader,
        teacher: torch.nn.Module | None,
        objective: CrossResolutionObjective,
        autocast: AbstractContextManager,
        recalibrate_bn=None,
        verification_sets: list | None = None,
        stage: str,
        timeout_s: float,
        teacher_file: str,
        cache_dir: Path,
    ) -> None:
        """`stage`: run.stage; `timeout_s`: dist.timeout_s (how long rank 0 may take);
        `teacher_file`: teacher.checkpoint, which names the cached teacher features kept in
        `cache_dir`."""
        self.val_cfg, self.stage = val_cfg, stage
        self.timeout_s = timeout_s
        self.data = ValidationData(samples, loader, val_cfg.cache_mb)
        self.resolutions = list(
            dict.fromkeys([None, val_cfg.resolution, *val_cfg.report_resolutions])
        )
        self.objective, self.autocast = objective, autocast
        self.recalibrate_bn = recalibrate_bn  # None: val.bn_recalibrate=off
        self.verification = None
        if verification_sets:
            self.verification = VerificationSuite(
                verification_sets, self.resolutions, val_cfg.verification_degrade
            )
        self.teacher_features = None
        if teacher is not None and (objective.uses_teacher or val_cfg.select_by == "feature"):
            self.teacher_features = cached_teacher_features(
                teacher,
                teacher_file,
                self.data,
                cache_dir,
                autocast,
                objective.weighs_by_teacher,
            )

    def __call__(self, student: torch.nn.Module, step: int) -> dict[str, float]:
        if self.recalibrate_bn is not None:
            self.recalibrate_bn()
        t0 = time.perf_counter()
        verified = self._verify(student) if self.verification is not None else {}
        metrics = {}
        if distributed.rank() == 0:
            metrics = evaluate_student(
                student,
                self.data,
                self.resolutions,
                self.teacher_features,
                self.objective,
                self.autocast,
                similarity=self.val_cfg.select_by == "feature",
            )
            metrics.update(verified)
            self._log(metrics, step, time.perf_counter() - t0)
        # The other ranks wait here (within dist.timeout_s) and all take rank 0's numbers.
        return distributed.broadcast_object(metrics)

    def _verify(self, student: torch.nn.Module) -> dict[str, float]:
        """The verification sets, every rank embedding its share (so none waits for rank 0 to
        embed them all); rank 0's scores, {} elsewhere."""
        was_training = student.training
        student.eval()
        t0 = time.perf_counter()
        loader = self.data.loader
        metrics = self.verification(
            lambda samples, condition: embed_mirrored(
                student, loader, samples, condition, self.autocast
            )
        )
        student.train(was_training)
        seconds = time.perf_counter() - t0
        if seconds > self.timeout_s / 4:
            log.warning(
                "the verification sets took %.0f s, more than a quarter of dist.timeout_s=%d: "
                "a slower validation could time out; raise dist.timeout_s or validate fewer "
                "sets or resolutions",
                seconds,
                self.timeout_s,
            )
        return metrics

    def _log(self, metrics: dict[str, float], step: int, seconds: float) -> None:
        low = f"{self.val_cfg.resolution}px"
        if self.verification is not None:
            log.info("verification at step %d: %s", step, verification_line(metrics))
        if "val/full/top1" in metrics:
            log.info(
                "validation at step %d (%.1fs): full top-1 %.4f loss %.4f | %s top-1 %.4f "
                "loss %.4f | %s",
                step,
                seconds,
                metrics["val/full/top1"],
                metrics["val/full/loss"],
                low,
                metrics[f"val/{low}/top1"],
                metrics[f"val/{low}/loss"],
                " ".join(
                    f"{k.split('/')[1]}={v:.3f}" for k, v in metrics.items() if k.endswith("top1")
                ),
            )
        else:  # no classifier (no labelled source): the cosines to the teacher say it
            log.info(
                "validation at step %d (%.1fs): full loss %.4f | %s loss %.4f",
                step,
                seconds,
                metrics["val/full/loss"],
                low,
                metrics[f"val/{low}/loss"],
            )
        if "val/teacher_cos" in metrics:
            cosines = " ".join(
                f"{k.split('/')[1]}={v:.3f}"
                for k, v in metrics.items()
                if k.endswith("/teacher_cos") and k != "val/teacher_cos"
            )
            log.info(
                "validation at step %d: cosine to the teacher %s | mean %.4f",
                step,
                cosines,
                metrics["val/teacher_cos"],
            )

    def plateau_metric(self, metrics: dict[str, float]) -> float:
        """What optim's plateau schedule watches (lower is better): the low-resolution
        validation loss, or with val.select_by=verification the verification error, or with
        val.select_by=feature 1 - the mean cosine to the teacher."""
        if self.val_cfg.select_by == "verification":
            return 1.0 - metrics["val/verification/accuracy"]
        if self.val_cfg.select_by == "feature":
            return 1.0 - metrics["val/teacher_cos"]
        return metrics[f"val/{self.val_cfg.resolution}px/loss"]

    def best_metric(self, metrics: dict[str, float]) -> float:
        """The checkpoint kept as best: highest low-resolution top-1 (method.md; a pretrained
        teacher is judged at full resolution), or with val.select_by=verification the mean
        verification accuracy over the sets and resolutions, or with val.select_by=feature the
        mean cosine to the teacher over the validated resolutions."""
        if self.val_cfg.select_by == "verification":
            return metrics["val/verification/accuracy"]
        if self.val_cfg.select_by == "feature":
            return metrics["val/teacher_cos"]
        if self.stage == "pretrain":
            return metrics["val/full/top1"]
        return metrics[f"val/{self.val_cfg.resolution}px/top1"]


def verification_line(metrics: dict[str, float]) -> str:
    """``lfw full 0.987 8px 0.702 ... | cfp_fp ... | mean 0.842``: every set's accuracy at
    every resolution, in the order validated."""
    by_set: dict[str, list[str]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 5 and parts[:2] == ["val", "verification"] and parts[4] == "accuracy":
            by_set.setdefault(parts[2], []).append(f"{parts[3]} {value:.3f}")
    sets = [f"{name} {' '.join(cells)}" for name, cells in by_set.items()]
    return " | ".join([*sets, f"mean {metrics['val/verification/accuracy']:.3f}"])
