"""The training run: the components wired with every check before the first step (run
directory, data, networks and head, parallelism, optimisation, resume, validation), then the loop
(train_step, then what the cadence asks: log, validate, save, stop). docs/layout.md draws it;
training/process.py runs it as a process and turns its ending into an exit code."""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from crossres_dist import arithmetic, distributed, logs
from crossres_dist.checkpointing import run_directory as rundir
from crossres_dist.checkpointing.manager import (
    CheckpointManager,
    Keyed,
    resume_point,
    save_agreed,
)
from crossres_dist.data import (
    ValidationChoice,
    excluded_during_run,
    loader_for,
    prepare_run_data,
    record_lineage,
    undecodable,
    view_settings,
)
from crossres_dist.distributed.parallelize import (
    memory_format_for,
    parallelize_student,
    shard_teacher,
)
from crossres_dist.distributed.watchdog import start_for_run
from crossres_dist.errors import SetupError
from crossres_dist.heads import classifier_kind
from crossres_dist.heads.training_head import TrainingHead
from crossres_dist.models import ModelSpec, set_bn_frozen, spec_from_config
from crossres_dist.precision import autocast_for, resolve_precision
from crossres_dist.training.batchnorm import BatchNormReestimation
from crossres_dist.training.imprint import imprint_classifier
from crossres_dist.training.objective import (
    CrossResolutionLoss,
    CrossResolutionObjective,
    Curriculum,
)
from crossres_dist.training.optimizer import Schedule, accumulation_steps, build_optimizer
from crossres_dist.training.state import (
    RunRecord,
    StudentState,
    TrainState,
    check_resumable,
    write_results,
)
from crossres_dist.training.step_control import (
    Cadence,
    MetricWindow,
    NonFiniteSteps,
    Preempted,
    StopFlag,
    log_window,
    mark_preempted,
)
from crossres_dist.training.student_teacher import (
    build_networks,
    class_count,
    starting_checkpoints,
)
from crossres_dist.training.teacher_cache import cache_for_run
from crossres_dist.training.validation import Validator
from crossres_dist.weights import WeightsError
from pipelines import ResilientViews, TrainPlanner
from pipelines.sources import DataError

if TYPE_CHECKING:  # for the reader only: config.py composes this package's sections
    from crossres_dist.config import Config

log = logging.getLogger(__name__)


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
        self.run_lock: rundir.RunLock | None = None
        self.watchdog = start_for_run(self.info, self.world, cfg.dist.watchdog_s)
        try:
            self._setup()
        except (DataError, WeightsError) as err:
            self.close()
            raise SetupError(str(err)) from None
        except BaseException:
            self.close()  # release the run lock and stop the watchdog: nothing is left held
            raise

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        """Every check before the first step, in phases: the run directory, the data, the
        networks, the optimisation, the validation targets."""
        saving = self.cfg.checkpoint
        self.run_lock = rundir.lock_run(
            self.run_dir, saving.lock_stale_s, self.is_main, distributed.broadcast_object
        )
        if self.is_main:
            logs.add_file(self.run_dir / "train.log")
        self.checkpoints = CheckpointManager(self.run_dir, saving.keep_last, is_writer=self.is_main)
        self.checkpoints.kill_during_save_step = self.cfg.debug.inject_kill_during_save
        self.resume_state = resume_point(self.checkpoints, saving.resume)
        train_samples, val_samples, num_classes = self._setup_data()
        spec = self._setup_networks(num_classes)
        self._setup_optimisation(spec, train_samples)
        self._setup_validation(val_samples)
        if self.is_main:
            rundir.write_text(self.run_dir / "config.yaml", self.cfg.dumps())
            self.scalars = logs.Scalars(self.run_dir / "tensorboard")
        log.info(
            "student %s, %d parameters; teacher %s; precision %s, arithmetic %s; %d ranks x "
            "micro-batch %d x accumulation %d = %d images per step; %d steps",
            spec.layers,
            sum(p.numel() for p in self.student.parameters()),
            "none" if self.teacher is None else f"sharding={self.cfg.teacher.sharding}",
            self.precision,
            arithmetic.describe(self.cfg.run.reproducible),
            self.world,
            self.cfg.data.micro_batch,
            self.accumulation,
            self.cfg.optim.global_batch,
            self.total_steps,
        )

    def _setup_data(self) -> tuple[list, list, int]:
        """The run's data (crossres_dist/data/: prepare_run_data), the accumulation that keeps the
        global batch, and the classifier's size; returns the samples and that size."""
        cfg = self.cfg
        val = cfg.val
        choice = ValidationChoice(val.every_nth, val.offset, val.min_images, val.select_by)
        data = prepare_run_data(
            cfg.data,
            choice,
            run_dir=self.run_dir,
            resume_state=self.resume_state,
            checkpoints_dir=self.checkpoints.dir,
            rank=self.info.rank,
            world=self.world,
        )
        self.skipped_before_run = data.skipped_before_run
        self.identities, self.splits, self._held_out = data.identities, data.splits, data.held_out
        self.verification_sets = data.verification
        self.has_unlabelled = any(s.label < 0 for s in data.train)
        self.accumulation = accumulation_steps(
            cfg.optim.global_batch, cfg.data.micro_batch, self.world
        )
        return data.train, data.val, class_count(cfg.model, cfg.data.train, data.num_classes)

    def _setup_networks(self, num_classes: int) -> ModelSpec:
        """The student (from the teacher, a checkpoint, or the resumed state), the frozen
        teacher, their parallelism, and the objective."""
        cfg = self.cfg
        self.precision = resolve_precision(cfg.train.precision, self.device)
        self.autocast = autocast_for(self.precision, self.device)
        spec = spec_from_config(cfg.model, num_classes, input_size=cfg.data.crop)
        # No labelled source (pure feature distillation): no classifier, not one over nobody.
        spec = replace(spec, classifier=classifier_kind(cfg.head) if num_classes else "none")
        self.student, self.teacher = build_networks(cfg, spec, self.resume_state)
        self.head = TrainingHead(cfg.head, spec, cfg.run.seed, self.device, self.world)
        self.lineage = record_lineage(
            starting_checkpoints(cfg), self.resume_state, self._held_out, self.splits, self.is_main
        )
        if self.is_main:
            self.checkpoints.preflight(self.student)
        self.memory_format = memory_format_for(
            self.device, cfg.model.channels_last, cfg.model.channels_last_on_cpu
        )
        if self.teacher is not None:
            self.teacher = shard_teacher(
                self.teacher,
                cfg.teacher.sharding,
                self.device,
                self.precision,
                self.memory_format,
                cfg.compile.mode_for("teacher"),
            )
        self.model = parallelize_student(
            self.student,
            self.device,
            self.world,
            self.memory_format,
            cfg.compile.mode_for("student"),
        )
        lambda_feat = cfg.method.lambda_feat if self.teacher is not None else 0.0
        self.objective = CrossResolutionObjective.for_run(
            cfg.method, lambda_feat, self.head, self.has_unlabelled
        )
        self.task = CrossResolutionLoss(
            self.model, self.teacher, self.objective, cfg.method.paired and self.teacher is not None
        )
        return spec

    def _setup_optimisation(self, spec: ModelSpec, train_samples: list) -> None:
        """The views and their loader, the curriculum, the batch plans, the optimizer and its
        schedule; the resumed state restored."""
        cfg = self.cfg
        self.views = view_settings(cfg.data, cfg.method, spec)
        self.loader = loader_for(
            cfg.data, self.views, self.device, cfg.run.seed, cfg.method.interpolation
        )
        self.curriculum = Curriculum.from_config(cfg.method, cfg.run.stage)
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
        nets = self.student, self.teacher
        teacher = self.teacher if self.objective.uses_teacher else None
        self.teacher_cache = cache_for_run(
            cfg.teacher, cfg.run.output_dir, teacher, train_samples, self.loader, self.autocast
        )
        if self.resume_state is None:  # a resumed run has its classifier
            imprint_classifier(cfg.student, nets, train_samples, self.loader, self.autocast)
        self.optimizer = build_optimizer(self.student, self.head, cfg.optim, self.device)
        self.schedule = Schedule(self.optimizer, cfg.optim, self.total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.state = TrainState(self.curriculum.p_at)
        self.on_step = None  # a benchmark's hook, called after every optimizer step
        self._register_checkpoint_parts()
        if self.resume_state is not None:
            check_resumable(
                self.resume_state, self.total_steps, cfg.optim.global_batch, self.checkpoints.dir
            )
            self.checkpoints.load_state_dict(self.resume_state)
        self.nonfinite = NonFiniteSteps(self.device, self.state.nonfinite_total)
        self.cadence = Cadence.from_config(
            cfg.train, cfg.val, cfg.checkpoint.every, self.total_steps
        )

    def _setup_validation(self, val_samples: list) -> None:
        """Validation (BatchNorm re-estimated first if val.bn_recalibrate asks) and the teacher's
        features of the validation views (all ranks: it may be sharded), cached when valid."""
        cfg = self.cfg
        recalibrate = None
        if cfg.val.bn_recalibrate != "off":
            reestimate = BatchNormReestimation(
                cfg.val,
                self.planner,
                self.loader,
                cfg.run.seed,
                self.autocast,
                self.memory_format,
                paired=self.task.paired,
                bn_frozen=cfg.model.bn_mode == "frozen",
                find_bad=self._undecodable,
                on_excluded=self._excluded_during_run,
            )

            def recalibrate() -> None:
                p_now = self.curriculum.p_at(self.state.images_seen)
                reestimate(self.student, self.state.step, p_now, self.world)

        self.validator = Validator(
            cfg.val,
            val_samples,
            loader=self.loader,
            teacher=self.teacher,
            objective=self.objective,
            autocast=self.autocast,
            recalibrate_bn=recalibrate,
            verification_sets=self.verification_sets,
            stage=cfg.run.stage,
            timeout_s=cfg.dist.timeout_s,
            teacher_file=cfg.teacher.checkpoint,
            cache_dir=self.run_dir / "cache",
        )

    # ------------------------------------------------------------------ checkpoint state
    def _register_checkpoint_parts(self) -> None:
        """What a checkpoint holds, part by part, in the order of its keys (and of a resume)."""
        self.checkpoints.register(
            student=StudentState(self.student),
            optimizer=Keyed("optimizer", self.optimizer),
            schedule=Keyed("schedule", self.schedule),
            scaler=Keyed("scaler", self.scaler),
            train_state=self.state,
            run=RunRecord(self.cfg, self.identities, self.splits, self.lineage, self.world),
            head=self.head.checkpoint_part(self.student, self.optimizer),
        )

    def save(self, metric: float | None = None) -> None:
        state = self.checkpoints.state_dict()  # every registered part's
        save_agreed(self.checkpoints, state, self.state.step, self.device, metric)

    def validate(self) -> dict[str, float]:
        """Validation (validation.py: Validator), then what depends on it: the plateau schedule
        and TensorBoard."""
        with self.head.for_validation(self.student):
            metrics = self.validator(self.student, self.state.step)
        self.schedule.after_validation(self.validator.plateau_metric(metrics))
        if self.is_main:
            self.scalars.add(metrics, self.state.step)
        return metrics

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict[str, float]:
        """One optimizer step at a time (train_step), then what the cadence asks at that step
        (log, validate, save) and, at sync points, the ranks' agreement on a preemption."""
        state = self.state
        batches = ResilientViews(
            self.planner,
            state.step * self.accumulation,
            self.loader,
            self._undecodable,
            self._excluded_during_run,
        )
        metrics: dict[str, float] = {}
        if state.step == 0:
            metrics = self.validate()
            self.save(self.validator.best_metric(metrics))
        elif state.step == self.total_steps:
            # A finished run started again (a requeue after the last save, a rerun array task):
            # nothing to train, but results.json gets the final metrics, not an empty set.
            log.info("the run is already at step %d of %d: validating only", state.step, state.step)
            metrics = self.validate()
        self.model.train()
        if self.cfg.model.bn_mode == "frozen":
            set_bn_frozen(self.student)
        progress = logs.progress_bar(
            self.total_steps, state.step, self.is_main and self.cfg.train.progress_bar
        )
        window = MetricWindow(self.device)
        while state.step < self.total_steps:
            self.train_step(batches, window)
            if progress is not None:
                progress.update(1)
            if self.on_step is not None:
                self.on_step(state.step)
            now = self.cadence.at(state.step)
            if now.sync:
                state.nonfinite_total = self.nonfinite.check(
                    state.nonfinite_total, self.cfg.train.max_nonfinite, self.checkpoints.dir
                )
            if now.log:
                self._log(window)
            if now.validate:
                metrics = self.validate()
                self.save(self.validator.best_metric(metrics))
            elif now.save:
                self.save()
            if now.sync and self._stop_here(now):
                break
        if progress is not None:
            progress.close()
        if state.step == self.total_steps:
            self._write_results(metrics)
        return metrics

    def train_step(self, batches, window: MetricWindow) -> None:
        """One optimizer step: the micro-steps of the global batch (gradients all-reduced only on
        the last), then the update, decided on the device: a non-finite gradient (the same on
        every rank after the all-reduce) makes the fused kernel skip it, as the fp16 scaler does
        for overflows; the host learns of it at the next sync point."""
        step = self.state.step + 1
        self.head.before_step(step)
        for micro in range(self.accumulation):
            batch = next(batches)
            teacher_view = batch["teacher_view"].contiguous(memory_format=self.memory_format)
            student_view = batch["student_view"].contiguous(memory_format=self.memory_format)
            last = micro == self.accumulation - 1
            sync = contextlib.nullcontext() if last or self.world == 1 else self.model.no_sync()
            cached = self.teacher_cache and self.teacher_cache.lookup(batch, self.device)
            with sync:
                with self.autocast:
                    losses = self.task(teacher_view, student_view, batch["labels"], cached)
                loss = losses["loss"]
                if step in self.cfg.debug.inject_nan_steps and self.info.rank == 0:
                    loss = loss * float("nan")
                self.scaler.scale(loss / self.accumulation).backward()
            window.add({**losses, "loss": loss}, batch["labels"], self.world)
        self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), max_norm)
        if self.precision == "fp16":
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            nonfinite = (~torch.isfinite(grad_norm)).float()
            self.optimizer.found_inf = nonfinite
            self.optimizer.step()
            self.nonfinite.update(nonfinite, step)
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.after_step()
        self.state.step = step
        self.state.images_seen += self.cfg.optim.global_batch

    def _log(self, window: MetricWindow) -> None:
        """The window's means over every rank (reduced only here), to the log and TensorBoard."""
        values = window.reduce(self.world, torch.distributed.all_reduce)
        values["train/lr"] = self.schedule.lr
        images_before = self.state.images_seen - self.cfg.optim.global_batch
        values["train/p"] = self.curriculum.p_at(images_before)
        if self.is_main:
            log_window(values, self.state.step, self.total_steps)
            self.scalars.add(values, self.state.step)

    def _stop_here(self, now) -> bool:
        """At a sync point: every rank agrees whether any was signalled (SIGTERM, SLURM's USR1)
        and then checkpoints and raises Preempted; train.stop_after_step stops quietly."""
        signalled = self.stop_flag.raised is not None
        if distributed.all_reduce_max(float(signalled), self.device) <= 0 and not now.stop:
            return False
        if not now.save:
            self.save()
        if now.stop and self.stop_flag.raised is None:
            log.info("stopping after step %d as configured", self.state.step)
            return True
        log.warning("preempted: checkpoint at step %d written, exiting", self.state.step)
        if self.is_main:
            mark_preempted(self.state.step)
        raise Preempted()

    def _undecodable(self, paths: list[str]) -> dict[str, str]:
        return undecodable(paths, self.cfg.data.backend, self.device)

    def _excluded_during_run(self, bad: dict[str, str], position: int) -> None:
        excluded_during_run(bad, position, self.planner, self.cfg.data, self.info.rank)

    def _write_results(self, metrics: dict[str, float]) -> None:
        if self.teacher_cache is not None:
            self.teacher_cache.log_use()
        write_results(
            self.run_dir / "results.json",
            self.student,
            self.state,
            self.is_main,
            lr=self.schedule.lr,
            excluded=sorted(self.planner.excluded),
            final=metrics,
            best_metric=self.checkpoints.best_metric,
            skipped_before_run=sorted(self.skipped_before_run),
        )

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        if self.run_lock is not None:
            self.run_lock.release()
            self.run_lock = None
        self.scalars.close()
        # Drop the (possibly FSDP-sharded) teacher before the process group is destroyed.
        self.task = self.teacher = None
