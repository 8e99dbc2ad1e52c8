"""The training run: set-up with every check before the first step, then the loop.

Read top to bottom: preflight -> data -> networks -> parallelism -> optimisation -> resume ->
validation targets -> loop (micro-steps, optimizer step, logging, validation, checkpoint, stop).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from pipelines import TrainPlanner, ViewSettings, build_views, choose_backend, load_splits
from pipelines.sources import DataError, load_identities, save_identities

from . import distributed, logs
from .check_data import FATAL, check_file
from .checkpoint import CheckpointManager, unwrap
from .config import Config
from .method import CrossResolutionLoss, Curriculum, freeze
from .model import SEResNet, set_bn_frozen, spec_from_config
from .optim import Schedule, build_optimizer
from .parallelize import shard_teacher
from .validate import ValidationData, cached_teacher_features, evaluate_student
from .weights import WeightsError, assign, read_state

log = logging.getLogger(__name__)

# Exit codes a launcher script can act on.
EXIT_PREEMPTED = 3
EXIT_NONFINITE = 4


class SetupError(RuntimeError):
    """A problem found before the first step; the message names the file, key or value."""


class NonFiniteLoss(RuntimeError):
    pass


class Preempted(Exception):
    pass


class StopFlag:
    """Set by SIGTERM / SIGUSR1 (SLURM sends one ahead of the time limit); every rank checks
    the flags of all ranks at each step boundary, so they stop at the same step."""

    def __init__(self) -> None:
        self.raised: int | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame) -> None:
        self.raised = signum


def resolve_precision(requested: str, device: torch.device) -> str:
    if requested == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return requested


def autocast_for(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def preflight(cfg: Config, run_dir: Path, needed_bytes: int) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise SetupError(f"run.output_dir: cannot write to {run_dir}: {err.strerror}") from None
    free = shutil.disk_usage(run_dir).free
    # Two checkpoints may coexist during a save (the new .tmp and the ones kept).
    if free < 2 * needed_bytes:
        raise SetupError(
            f"run.output_dir: {run_dir} has {free / 2**20:.0f} MiB free, a checkpoint needs "
            f"{needed_bytes / 2**20:.0f} MiB (twice that during a save); free some space"
        )


class Trainer:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.run_dir = cfg.run_dir
        self.info = distributed.detect(force=cfg.dist.launcher, port=cfg.dist.port)
        self.device = distributed.pick_device(cfg.train.device, self.info.local_rank)
        self.is_main = self.info.is_main
        logs.setup(self.info.rank)
        distributed.init(self.info, self.device, cfg.dist.backend, cfg.dist.timeout_s)
        self.world = distributed.world_size()
        self.stop_flag = StopFlag()
        self.scalars = logs.Scalars(None)
        try:
            self._setup()
        except (DataError, WeightsError) as err:
            raise SetupError(str(err)) from None

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        cfg, run_dir = self.cfg, self.run_dir
        if self.is_main:
            preflight(cfg, run_dir, needed_bytes=0)
            logs.add_file(run_dir / "train.log")
        self.checkpoints = CheckpointManager(
            run_dir,
            cfg.train.keep_last,
            is_writer=self.is_main,
            kill_during_save_step=cfg.train.inject_kill_during_save,
        )
        resumed = self.checkpoints.latest() if cfg.run.resume == "auto" else None
        self.resume_state = resumed[1] if resumed else None
        if resumed:
            log.info("resuming from %s", resumed[0])

        # Data: one label map for every rank, run and evaluation (from the checkpoint on resume).
        identities = self.resume_state["identities"] if self.resume_state else None
        label_file = run_dir / "identities.json"
        if identities is None and label_file.is_file():
            identities = load_identities(label_file)
        train_set, val_set = load_splits(
            cfg.data.train, cfg.data.val, cfg.data.root, cfg.run.seed, identities
        )
        val_samples = val_set.samples[cfg.data.val_offset :: cfg.data.val_every_nth]
        if not train_set.samples:
            raise SetupError(f"data.train: {cfg.data.train} has no training images")
        if not val_samples:
            raise SetupError(f"data.val: {cfg.data.val} leaves no validation images")
        train_samples = self._exclude_bad_files(train_set.samples + val_samples, train_set.samples)
        val_samples = [s for s in val_samples if s.path not in self._bad]
        self.identities = train_set.identities
        counts = np.bincount([s.label for s in train_samples], minlength=train_set.num_classes)
        if counts.min() < cfg.data.min_images_per_identity:
            names = {label: name for name, label in self.identities.items()}
            label = int(counts.argmin())
            raise SetupError(
                f"data.min_images_per_identity: identity '{names[label]}' has {counts[label]} "
                f"training image(s), fewer than {cfg.data.min_images_per_identity}"
            )
        if self.is_main:
            save_identities(self.identities, label_file)
        num_classes = cfg.model.num_classes or train_set.num_classes
        if num_classes != train_set.num_classes:
            raise SetupError(
                f"model.num_classes: {num_classes}, but {cfg.data.train} has "
                f"{train_set.num_classes} identities; set model.num_classes=0 to infer it"
            )
        log.info(
            "data: %d training and %d validation images of %d identities (%s backend)",
            len(train_samples),
            len(val_samples),
            num_classes,
            choose_backend(cfg.data.backend),
        )

        # Global batch = micro batch x ranks x accumulation, whatever the world size.
        per_step = cfg.data.micro_batch * self.world
        if cfg.optim.global_batch % per_step:
            raise SetupError(
                f"optim.global_batch={cfg.optim.global_batch} is not a multiple of "
                f"data.micro_batch x ranks = {cfg.data.micro_batch} x {self.world}; "
                "change one of them"
            )
        self.accumulation = cfg.optim.global_batch // per_step

        # Networks.
        self.precision = resolve_precision(cfg.train.precision, self.device)
        self.autocast = autocast_for(self.precision, self.device)
        spec = spec_from_config(cfg.model, num_classes)
        # Seeded before the first random initialisation: every rank starts from the same weights
        # (DDP would broadcast rank 0's anyway) and every rerun from the same ones.
        torch.manual_seed(cfg.run.seed)
        self.student = SEResNet(spec)
        self.teacher = None
        if cfg.run.stage == "crossres":
            self.teacher, teacher_state = self._build_teacher(spec)
            if self.resume_state is None and cfg.student.init == "teacher":
                assign(
                    self.student,
                    teacher_state,
                    cfg.teacher.checkpoint,
                    cfg.student.replace_classifier,
                )
        if self.resume_state is None and cfg.student.init not in ("teacher", ""):
            state, _ = read_state(cfg.student.init)
            assign(self.student, state, cfg.student.init, cfg.student.replace_classifier)
        if self.resume_state is not None:
            self.student.load_state_dict(self.resume_state["student"])
        if self.is_main:
            checkpoint_bytes = 3 * sum(
                t.numel() * t.element_size() for t in self.student.state_dict().values()
            )
            preflight(cfg, run_dir, checkpoint_bytes)

        memory_format = (
            torch.channels_last
            if (cfg.model.channels_last and self.device.type == "cuda")
            else torch.contiguous_format
        )
        self.memory_format = memory_format
        self.student.to(self.device, memory_format=memory_format)
        if self.teacher is not None:
            self.teacher = shard_teacher(
                self.teacher, cfg.teacher.sharding, self.device, self.precision, memory_format
            )
        if cfg.model.compile:
            # In place: the module's state_dict keys stay free of an _orig_mod prefix.
            self.student.compile()
        self.model = self.student
        if self.world > 1:
            # Gradients as views into the all-reduce buckets: no copy in and out of them.
            self.model = DDP(
                self.student,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                gradient_as_bucket_view=True,
            )
        self.task = CrossResolutionLoss(self.model, self.teacher, cfg.method.lambda_feat)

        # Optimisation.
        self.views = ViewSettings(
            cfg.data.resize_shorter, cfg.data.crop, cfg.data.grayscale_p, cfg.method.resolutions
        )
        self.curriculum = Curriculum(
            cfg.method.curriculum,
            cfg.method.p,
            cfg.method.curriculum_start,
            cfg.method.curriculum_increment,
            cfg.method.curriculum_step,
        )
        if cfg.run.stage == "pretrain":
            self.curriculum = Curriculum(False, 0.0)
        self.planner = TrainPlanner(
            train_samples,
            self.views,
            cfg.data.micro_batch,
            self.info.rank,
            self.world,
            cfg.run.seed,
            self.curriculum.p_at,
            self.accumulation,
        )
        steps_per_epoch = max(1, self.planner.batches_per_epoch // self.accumulation)
        self.total_steps = cfg.train.max_steps or max(
            1, math.ceil(cfg.train.epochs * steps_per_epoch)
        )
        self.optimizer = build_optimizer(self.student.parameters(), cfg.optim, self.device)
        self.schedule = Schedule(self.optimizer, cfg.optim, self.total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.step = 0
        self.images_seen = 0
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        if self.resume_state is not None:
            self._restore(self.resume_state)

        # Validation targets (all ranks take part: the teacher may be sharded).
        self.val_data = ValidationData(
            val_samples,
            self.views,
            cfg.data.micro_batch,
            cfg.data.backend,
            self.device,
            cfg.data.num_threads,
            cfg.run.seed,
            cfg.method.interpolation,
        )
        self.val_resolutions = list(
            dict.fromkeys([None, cfg.method.val_resolution, *cfg.method.report_resolutions])
        )
        self.val_teacher_features = None
        if self.teacher is not None and cfg.method.lambda_feat > 0:
            self.val_teacher_features = cached_teacher_features(
                self.teacher,
                cfg.teacher.checkpoint,
                self.val_data,
                run_dir / "cache",
                self.autocast,
            )
        if self.is_main:
            cfg.dump(run_dir / "config.yaml")
            self.scalars = logs.Scalars(run_dir / "tensorboard")
        log.info(
            "student %s, %d parameters; teacher %s; precision %s; %d ranks x micro-batch %d "
            "x accumulation %d = %d images per step; %d steps",
            spec.layers,
            sum(p.numel() for p in self.student.parameters()),
            "none" if self.teacher is None else f"sharding={cfg.teacher.sharding}",
            self.precision,
            self.world,
            cfg.data.micro_batch,
            self.accumulation,
            cfg.optim.global_batch,
            self.total_steps,
        )

    def _exclude_bad_files(self, all_samples, train_samples):
        """Unusable files are found before the first step: refused, or skipped if allowed."""
        cfg = self.cfg
        mine = all_samples[self.info.rank :: self.world] if cfg.data.check != "off" else []
        decode = cfg.data.check == "full"
        bad_mine = [
            s.path
            for s in mine
            if set(check_file(s.path, cfg.data.min_side, decode, with_digest=False)[0]) & set(FATAL)
        ]
        bad = set()
        if self.world > 1:
            gathered = [None] * self.world
            torch.distributed.all_gather_object(gathered, bad_mine)
            for part in gathered:
                bad.update(part)
        else:
            bad.update(bad_mine)
        self._bad = bad
        if bad and not cfg.data.skip_bad_files:
            first = sorted(bad)[0]
            raise SetupError(
                f"data: {len(bad)} unreadable image(s), first {first}; run "
                "`python -m crossres_dist.check_data` for a report, or set data.skip_bad_files=true"
            )
        if bad:
            log.warning("skipping %d unreadable image(s), e.g. %s", len(bad), sorted(bad)[0])
        return [s for s in train_samples if s.path not in bad]

    def _build_teacher(self, student_spec):
        cfg = self.cfg
        state, file_spec = read_state(cfg.teacher.checkpoint)
        layers = tuple(cfg.teacher.layers) or (
            file_spec.layers if file_spec else student_spec.layers
        )
        width = cfg.teacher.width or (file_spec.width if file_spec else student_spec.width)
        teacher_spec = spec_from_config(cfg.model, student_spec.num_classes, layers, width)
        teacher = SEResNet(teacher_spec)
        if teacher_spec.feature_dim != student_spec.feature_dim:
            raise SetupError(
                f"teacher.checkpoint: the teacher's feature has {teacher_spec.feature_dim} "
                f"dimensions, the student's {student_spec.feature_dim}; the MSE term needs them "
                "equal (change model.width or teacher.width)"
            )
        assign(teacher, state, cfg.teacher.checkpoint, cfg.student.replace_classifier)
        return freeze(teacher), state

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict:
        return {
            "student": unwrap(self.student).state_dict(),
            "model_spec": {**vars(self.student.spec), "layers": list(self.student.spec.layers)},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "images_seen": self.images_seen,
            "curriculum_p": self.curriculum.p_at(self.images_seen),
            "best_metric": self.checkpoints.best_metric,
            "nonfinite_total": self.nonfinite_total,
            "random": {
                "python": list(random.getstate()[1]),
                "numpy": np.random.get_state()[1].tolist(),
                "torch": torch.get_rng_state(),
            },
            "config": self.cfg.to_dict(),
            "identities": self.identities,
            "world_size": self.world,
        }

    def _restore(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.images_seen = state["images_seen"]
        self.checkpoints.best_metric = state.get("best_metric")
        self.nonfinite_total = state.get("nonfinite_total", 0)
        torch.set_rng_state(state["random"]["torch"])
        random.setstate((3, tuple(state["random"]["python"]), None))
        np.random.set_state(("MT19937", np.array(state["random"]["numpy"], np.uint32), 0, 0, 0.0))
        if state.get("world_size", self.world) != self.world:
            # The data position is the step x the global batch, and each image's draws depend on
            # its position only, so a run resumed on another number of ranks sees the same data.
            log.info("resuming a %d-rank run on %d ranks", state["world_size"], self.world)
        saved_batch = state["config"]["optim"]["global_batch"]
        if saved_batch != self.cfg.optim.global_batch:
            raise SetupError(
                f"optim.global_batch: the checkpoint was trained with {saved_batch}, this run asks "
                f"for {self.cfg.optim.global_batch}; resume with the same global batch"
            )

    def save(self, metric: float | None = None) -> None:
        path = self.checkpoints.save(self.state_dict(), self.step, metric)
        if path is not None:
            log.info("checkpoint %s", path)

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        metrics = {}
        if self.is_main:
            t0 = time.perf_counter()
            metrics = evaluate_student(
                unwrap(self.student),
                self.val_data,
                self.val_resolutions,
                self.val_teacher_features,
                self.cfg.method.lambda_feat,
                self.autocast,
            )
            low = f"val/{self.cfg.method.val_resolution}px"
            log.info(
                "validation at step %d (%.1fs): full top-1 %.4f loss %.4f | %s top-1 %.4f "
                "loss %.4f | %s",
                self.step,
                time.perf_counter() - t0,
                metrics["val/full/top1"],
                metrics["val/full/loss"],
                low[4:],
                metrics[f"{low}/top1"],
                metrics[f"{low}/loss"],
                " ".join(
                    f"{k.split('/')[1]}={v:.3f}" for k, v in metrics.items() if k.endswith("top1")
                ),
            )
        # The other ranks wait here (within dist.timeout_s) and all take rank 0's numbers.
        metrics = distributed.broadcast_object(metrics)
        drive = metrics[f"val/{self.cfg.method.val_resolution}px/loss"]
        self.schedule.after_validation(drive)
        if self.is_main:
            self.scalars.add(metrics, self.step)
        return metrics

    def best_metric(self, metrics: dict[str, float]) -> float:
        """The checkpoint kept as best: highest low-resolution top-1 (method.md); a pretrained
        teacher is judged at full resolution."""
        if self.cfg.run.stage == "pretrain":
            return metrics["val/full/top1"]
        return metrics[f"val/{self.cfg.method.val_resolution}px/top1"]

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict[str, float]:
        cfg = self.cfg
        plans = self.planner.stream(start=self.step * self.accumulation)
        batches = build_views(
            cfg.data.backend,
            plans,
            self.views,
            cfg.data.micro_batch,
            self.device,
            cfg.data.num_threads,
            cfg.run.seed,
            cfg.method.interpolation,
        )
        metrics: dict[str, float] = {}
        if self.step == 0:
            metrics = self.validate()
            self.save(self.best_metric(metrics))
        self.model.train()
        if cfg.model.bn_mode == "frozen":
            set_bn_frozen(self.student)
        progress = self._progress()
        sums = torch.zeros(4, device=self.device)  # loss, ce, mse, correct
        window_start, window_images, window_micro = time.perf_counter(), 0, 0
        while self.step < self.total_steps:
            # Micro-steps: gradients are synchronised only on the last one (no_sync skips the
            # all-reduce that would otherwise happen at every backward).
            for micro in range(self.accumulation):
                batch = next(batches)
                teacher_view = batch["teacher_view"].contiguous(memory_format=self.memory_format)
                student_view = batch["student_view"].contiguous(memory_format=self.memory_format)
                last = micro == self.accumulation - 1
                sync = contextlib.nullcontext() if last or self.world == 1 else self.model.no_sync()
                with sync:
                    with self.autocast:
                        losses = self.task(teacher_view, student_view, batch["labels"])
                    loss = losses["loss"]
                    if self.step + 1 in cfg.train.inject_nan_steps and self.info.rank == 0:
                        loss = loss * float("nan")
                    self.scaler.scale(loss / self.accumulation).backward()
                sums += torch.stack(
                    [
                        loss.detach(),
                        losses["ce"].detach(),
                        losses["mse"].detach(),
                        (losses["logits"].argmax(1) == batch["labels"]).sum().float(),
                    ]
                )
                window_images += len(batch["labels"]) * self.world
                window_micro += 1

            # Optimizer step; a non-finite gradient (the same on every rank after the
            # all-reduce) skips it, fp16 overflows are the scaler's business.
            self.scaler.unscale_(self.optimizer)
            max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), max_norm)
            finite = bool(torch.isfinite(grad_norm))
            if finite or self.precision == "fp16":
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.nonfinite_in_a_row = 0
            else:
                self.nonfinite_in_a_row += 1
                self.nonfinite_total += 1
                log.warning(
                    "step %d: non-finite loss/gradient, step skipped (%d in a row)",
                    self.step + 1,
                    self.nonfinite_in_a_row,
                )
                if self.nonfinite_in_a_row >= cfg.train.max_nonfinite:
                    self.optimizer.zero_grad(set_to_none=True)
                    raise NonFiniteLoss(
                        f"{self.nonfinite_in_a_row} non-finite steps in a row at step "
                        f"{self.step + 1}; the last good checkpoint is in {self.checkpoints.dir} "
                        "(lower optim.lr or use train.precision=fp32)"
                    )
            self.optimizer.zero_grad(set_to_none=True)
            self.schedule.after_step()
            self.step += 1
            self.images_seen += cfg.optim.global_batch
            if progress is not None:
                progress.update(1)

            # Logging: metrics are reduced across ranks only here.
            if self.step % cfg.train.log_every == 0 or self.step == self.total_steps:
                if self.world > 1:
                    torch.distributed.all_reduce(sums)
                n_micro = self.world * window_micro
                elapsed = time.perf_counter() - window_start
                values = {
                    "train/loss": sums[0].item() / n_micro,
                    "train/ce": sums[1].item() / n_micro,
                    "train/mse": sums[2].item() / n_micro,
                    "train/top1": sums[3].item() / max(1, window_images),
                    "train/lr": self.schedule.lr,
                    "train/p": self.curriculum.p_at(self.images_seen - cfg.optim.global_batch),
                    "train/images_per_s": window_images / elapsed,
                }
                if self.is_main:
                    log.info(
                        "step %d/%d loss %.4f ce %.4f mse %.4f top-1 %.3f lr %.2e p %.2f "
                        "%.1f img/s",
                        self.step,
                        self.total_steps,
                        values["train/loss"],
                        values["train/ce"],
                        values["train/mse"],
                        values["train/top1"],
                        values["train/lr"],
                        values["train/p"],
                        values["train/images_per_s"],
                    )
                    self.scalars.add(values, self.step)
                sums.zero_()
                window_start, window_images, window_micro = time.perf_counter(), 0, 0

            # Validation and checkpoints (rank 0; the others wait in the broadcast).
            validated = self.step % cfg.train.val_every == 0 or self.step == self.total_steps
            if validated:
                metrics = self.validate()
                self.save(self.best_metric(metrics))
            elif self.step % cfg.train.checkpoint_every == 0:
                self.save()

            # Preemption: all ranks agree at this step boundary.
            stop = self.stop_flag.raised is not None or self.step == cfg.train.stop_after_step
            if distributed.all_reduce_max(float(stop), self.device) > 0:
                if not validated:
                    self.save()
                if self.step == cfg.train.stop_after_step and self.stop_flag.raised is None:
                    log.info("stopping after step %d as configured", self.step)
                    break
                log.warning("preempted: checkpoint at step %d written, exiting", self.step)
                self._mark_preempted()
                raise Preempted()
        if progress is not None:
            progress.close()
        if self.step == self.total_steps:
            agreement = self.rank_agreement()
            if self.is_main:
                self._write_results(metrics, agreement)
        return metrics

    def rank_agreement(self) -> dict:
        """Every rank's learning rate and parameter checksum (gathered on all ranks): DDP and the
        broadcast plateau decisions must keep them identical."""
        with torch.no_grad():
            checksum = float(sum(p.double().sum() for p in self.student.parameters()))
        mine = [self.schedule.lr, checksum]
        everyone = [mine]
        if self.world > 1:
            everyone = [None] * self.world
            torch.distributed.all_gather_object(everyone, mine)
        return {
            "lr_per_rank": [e[0] for e in everyone],
            "param_checksum_per_rank": [e[1] for e in everyone],
            "ranks_agree": all(e == everyone[0] for e in everyone),
        }

    def _write_results(self, metrics: dict[str, float], agreement: dict) -> None:
        if not agreement["ranks_agree"]:
            log.error("ranks disagree at the end of training: %s", agreement)
        results = {
            **agreement,
            "step": self.step,
            "images_seen": self.images_seen,
            "final": metrics,
            "best_metric": self.checkpoints.best_metric,
            "nonfinite_steps": self.nonfinite_total,
        }
        (self.run_dir / "results.json").write_text(json.dumps(results, indent=1))

    def _mark_preempted(self) -> None:
        """Tell a launcher script that the stop was a preemption with a checkpoint written: the
        exit code alone cannot, since srun may kill the slower ranks once one has exited."""
        marker = os.environ.get("CROSSRES_PREEMPTED_FILE")
        if marker and self.is_main:
            Path(marker).parent.mkdir(parents=True, exist_ok=True)
            Path(marker).write_text(f"{self.step}\n")

    def _progress(self):
        if not (self.is_main and self.cfg.train.progress_bar):
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(
            total=self.total_steps,
            initial=self.step,
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
        )

    def close(self) -> None:
        self.scalars.close()
        # Drop the (possibly FSDP-sharded) teacher before the process group is destroyed.
        self.task = self.teacher = None


def run(cfg: Config) -> int:
    """Train; return the process exit code (0, EXIT_PREEMPTED or EXIT_NONFINITE)."""
    trainer = None
    graceful = False
    try:
        trainer = Trainer(cfg)
        trainer.train()
        graceful = True
        return 0
    except Preempted:
        graceful = True
        return EXIT_PREEMPTED
    except NonFiniteLoss as err:
        log.error("%s", err)
        graceful = True  # every rank saw the same non-finite gradient and stops here
        return EXIT_NONFINITE
    finally:
        if trainer is not None:
            trainer.close()
        distributed.shutdown(graceful)


os.environ.setdefault("PYTHONUNBUFFERED", "1")
