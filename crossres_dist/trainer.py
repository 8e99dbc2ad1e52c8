"""The training run: set-up with every check before the first step, then the loop.

Read top to bottom: preflight -> data -> networks -> parallelism -> optimisation -> resume ->
validation targets -> loop (micro-steps, optimizer step, logging, validation, checkpoint, stop).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch

from pipelines import Loader, ResilientViews, TrainPlanner, ViewSettings
from pipelines.degradations import Degradations, parse_steps
from pipelines.sources import DataError

from . import distributed, logs, rundir
from .batchnorm import BatchNormReestimation
from .checkpoint import CheckpointError, CheckpointManager, load_checkpoint, unwrap
from .config import Config
from .data import (
    check_degradations,
    excluded_during_run,
    prepare_run_data,
    record_lineage,
    undecodable,
)
from .errors import SetupError
from .loop import (
    Cadence,
    MetricWindow,
    NonFiniteLoss,
    NonFiniteSteps,
    Preempted,
    StopFlag,
)
from .method import CrossResolutionLoss, CrossResolutionObjective, Curriculum
from .models import ModelSpec, build_model, set_bn_frozen, spec_from_config
from .networks import build_teacher
from .optim import Schedule, build_optimizer
from .parallelize import memory_format_for, parallelize_student, shard_teacher
from .precision import autocast_for, resolve_precision
from .state import random_state, restore_random_state
from .validate import ValidationData, cached_teacher_features, evaluate_student
from .watchdog import Watchdog
from .weights import WeightsError, assign, read_state

log = logging.getLogger(__name__)

# Exit codes a launcher script can act on.
EXIT_PREEMPTED = 3
EXIT_NONFINITE = 4


class Trainer:
    def __init__(self, cfg: Config) -> None:
        check_degradations(cfg)
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
        self.watchdog = None
        if self.world > 1 and cfg.dist.watchdog_s > 0:
            self.watchdog = Watchdog(
                self.info.rank,
                self.world,
                self.info.master_addr,
                self.info.master_port,
                cfg.dist.watchdog_s,
            ).start()
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
        self._lock_run_dir()
        self.checkpoints = CheckpointManager(
            self.run_dir,
            self.cfg.train.keep_last,
            is_writer=self.is_main,
        )
        self.checkpoints.kill_during_save_step = self.cfg.debug.inject_kill_during_save
        self.resume_state = self._find_resume_point()
        train_samples, val_samples, num_classes = self._setup_data()
        spec = self._setup_networks(num_classes)
        self._setup_optimisation(spec, train_samples)
        self._setup_validation(val_samples)
        if self.is_main:
            rundir.write_text(self.run_dir / "config.yaml", self.cfg.dumps())
            self.scalars = logs.Scalars(self.run_dir / "tensorboard")
        cfg = self.cfg
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

    def _lock_run_dir(self) -> None:
        """One job per run directory: rank 0 locks it before writing anything in it."""
        locked = None
        if self.is_main:
            rundir.preflight(self.run_dir, needed_bytes=0)
            try:
                self.run_lock = rundir.RunLock(self.run_dir, self.cfg.run.lock_stale_s)
                self.run_lock.acquire()
            except rundir.RunLockedError as err:
                self.run_lock, locked = None, str(err)
        locked = distributed.broadcast_object(locked)
        if locked:
            raise SetupError(locked)
        if self.is_main:
            logs.add_file(self.run_dir / "train.log")

    def _setup_data(self) -> tuple[list, list, int]:
        """The run's data (crossres_dist/data.py: prepare_run_data); returns the training and
        validation samples and the number of identities."""
        data = prepare_run_data(
            self.cfg,
            self.run_dir,
            self.resume_state,
            self.checkpoints.dir,
            self.info.rank,
            self.world,
        )
        self.skipped_before_run = data.skipped_before_run
        self.identities, self.splits, self._held_out = data.identities, data.splits, data.held_out
        self.accumulation = data.accumulation
        return data.train, data.val, data.num_classes

    def _setup_networks(self, num_classes: int) -> ModelSpec:
        """The student (from the teacher, a checkpoint, or the resumed state), the frozen
        teacher, their parallelism, and the objective."""
        cfg = self.cfg
        self.precision = resolve_precision(cfg.train.precision, self.device)
        self.autocast = autocast_for(self.precision, self.device)
        spec = spec_from_config(cfg.model, num_classes, input_size=cfg.data.crop)
        # Seeded before the first random initialisation: every rank starts from the same weights
        # (DDP would broadcast rank 0's anyway) and every rerun from the same ones.
        torch.manual_seed(cfg.run.seed)
        self.student = build_model(spec)
        self.teacher = None
        if cfg.run.stage == "crossres":
            self.teacher, teacher_state = build_teacher(cfg, spec)
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
        self.lineage = record_lineage(
            cfg, self.resume_state, self._held_out, self.splits, self.is_main
        )
        if self.is_main:
            checkpoint_bytes = 3 * sum(
                t.numel() * t.element_size() for t in self.student.state_dict().values()
            )
            rundir.preflight(self.run_dir, checkpoint_bytes)

        self.memory_format = memory_format_for(self.device, cfg.model.channels_last)
        if self.teacher is not None:
            self.teacher = shard_teacher(
                self.teacher,
                cfg.teacher.sharding,
                self.device,
                self.precision,
                self.memory_format,
                cfg.model.compile_mode if cfg.teacher.compile else None,
            )
        self.model = parallelize_student(
            self.student,
            self.device,
            self.world,
            self.memory_format,
            cfg.model.compile_mode if cfg.model.compile else None,
        )
        lambda_feat = cfg.method.lambda_feat if self.teacher is not None else 0.0
        self.objective = CrossResolutionObjective(lambda_feat, cfg.method.feature_loss)
        self.task = CrossResolutionLoss(
            self.model, self.teacher, self.objective, cfg.method.paired and self.teacher is not None
        )
        return spec

    def _setup_optimisation(self, spec: ModelSpec, train_samples: list) -> None:
        """The views and their loader, the curriculum, the batch plans, the optimizer and its
        schedule; the resumed state restored."""
        cfg = self.cfg
        self.views = ViewSettings(
            cfg.data.resize_shorter,
            cfg.data.crop,
            cfg.data.grayscale_p,
            cfg.method.resolutions,
            cfg.data.hflip_p,
            # The network's own input normalisation, from its spec.
            spec.channels,
            spec.mean,
            spec.scale,
            Degradations(
                steps=parse_steps(cfg.method.degradations),
                resolutions=tuple(cfg.method.resolutions),
                blur_sigma=tuple(cfg.method.blur_sigma),
                jpeg_quality=tuple(cfg.method.jpeg_quality),
                noise_sigma=tuple(cfg.method.noise_sigma),
            ),
        )
        # One loader settings object for every stream of batches this run makes.
        self.loader = Loader(
            cfg.data.backend,
            self.views,
            cfg.data.micro_batch,
            self.device,
            cfg.data.num_threads,
            cfg.run.seed,
            cfg.method.interpolation,
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
        self.nonfinite_total = 0
        self.on_step = None  # a benchmark's hook, called after every optimizer step
        if self.resume_state is not None:
            self._restore(self.resume_state)
        self.nonfinite = NonFiniteSteps(self.device, self.nonfinite_total)
        self.bn_reestimation = BatchNormReestimation(
            cfg.model,
            self.planner,
            self.loader,
            cfg.run.seed,
            self.autocast,
            self.memory_format,
            paired=self.task.paired,
            find_bad=self._undecodable,
            on_excluded=self._excluded_during_run,
        )
        self.cadence = Cadence.from_config(cfg.train, self.total_steps)

    def _setup_validation(self, val_samples: list) -> None:
        """The validation views, and the teacher's features of them (all ranks take part: the
        teacher may be sharded), from the cache when it is valid."""
        cfg = self.cfg
        self.val_data = ValidationData(val_samples, self.loader, cfg.data.val_cache_mb)
        self.val_resolutions = list(
            dict.fromkeys([None, cfg.method.val_resolution, *cfg.method.report_resolutions])
        )
        self.val_teacher_features = None
        if self.teacher is not None and self.objective.uses_teacher:
            self.val_teacher_features = cached_teacher_features(
                self.teacher,
                cfg.teacher.checkpoint,
                self.val_data,
                self.run_dir / "cache",
                self.autocast,
            )

    def _find_resume_point(self) -> dict | None:
        """Rank 0 chooses the checkpoint (setting aside what it cannot read); every rank loads
        the one it names, so all resume from the same step."""
        chosen, state, error = None, None, None
        if self.is_main:
            try:
                if self.cfg.run.resume == "never":
                    self.checkpoints.start_fresh()
                else:
                    found = self.checkpoints.find_latest()
                    if found is not None:
                        chosen, state = str(found[0]), found[1]
            except CheckpointError as err:
                error = str(err)
        chosen, error = distributed.broadcast_object((chosen, error))
        if error:
            raise SetupError(error)
        if chosen is None:
            return None
        log.info("resuming from %s", chosen)
        return state if self.is_main else load_checkpoint(Path(chosen))

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict:
        return {
            "student": unwrap(self.student).state_dict(),
            "model_spec": self.student.spec.as_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "images_seen": self.images_seen,
            "curriculum_p": self.curriculum.p_at(self.images_seen),
            "nonfinite_total": self.nonfinite_total,
            "random": random_state(),
            "config": self.cfg.to_dict(),
            "identities": self.identities,
            "splits": self.splits,
            "lineage": self.lineage,
            "world_size": self.world,
        }

    def _restore(self, state: dict) -> None:
        if state["step"] > self.total_steps:
            # Training cannot be undone: a shorter run than the one resumed is a mistake in the
            # overrides (a job array's shared run.name, a lowered train.max_steps), not a no-op.
            raise SetupError(
                f"train.max_steps: {self.checkpoints.dir} holds a checkpoint at step "
                f"{state['step']}, past the {self.total_steps} steps this run asks for; raise "
                "train.max_steps (or train.epochs), or set run.resume=never to start over"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.images_seen = state["images_seen"]
        self.checkpoints.restore_best(state.get("best_metric"))
        self.nonfinite_total = state.get("nonfinite_total", 0)
        restore_random_state(state["random"])
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
        error, path = None, None
        try:
            path = self.checkpoints.save(self.state_dict(), self.step, metric)
        except rundir.DiskFullError as err:
            error = err
        # Rank 0 writes alone: the others learn here whether it could, and stop with it.
        distributed.agree_on_failure(error, self.device, "rank 0 could not write a checkpoint")
        if path is not None:
            log.info("checkpoint %s", path)

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        if self.cfg.model.bn_recalibrate != "off":
            self.recalibrate_bn()
        metrics = {}
        if self.is_main:
            t0 = time.perf_counter()
            metrics = evaluate_student(
                unwrap(self.student),
                self.val_data,
                self.val_resolutions,
                self.val_teacher_features,
                self.objective,
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
        """Orchestrates: one optimizer step at a time (train_step), then what the cadence asks
        for at that step (log, validate, save), then, at sync points, the ranks' agreement on a
        preemption."""
        batches = ResilientViews(
            self.planner,
            self.step * self.accumulation,
            self.loader,
            self._undecodable,
            self._excluded_during_run,
        )
        metrics: dict[str, float] = {}
        if self.step == 0:
            metrics = self.validate()
            self.save(self.best_metric(metrics))
        elif self.step == self.total_steps:
            # A finished run started again (a requeue after the last save, a rerun array task):
            # nothing to train, but results.json gets the final metrics, not an empty set.
            log.info("the run is already at step %d of %d: validating only", self.step, self.step)
            metrics = self.validate()
        self.model.train()
        if self.cfg.model.bn_mode == "frozen":
            set_bn_frozen(self.student)
        progress = self._progress()
        window = MetricWindow(self.device)
        while self.step < self.total_steps:
            self.train_step(batches, window)
            if progress is not None:
                progress.update(1)
            if self.on_step is not None:
                self.on_step(self.step)
            now = self.cadence.at(self.step)
            if now.sync:
                self._check_nonfinite()
            if now.log:
                self._log(window)
            if now.validate:
                metrics = self.validate()
                self.save(self.best_metric(metrics))
            elif now.save:
                self.save()
            if now.sync and self._stop_here(now):
                break
        if progress is not None:
            progress.close()
        if self.step == self.total_steps:
            agreement = self.rank_agreement()
            if self.is_main:
                self._write_results(metrics, agreement)
        return metrics

    def train_step(self, batches, window: MetricWindow) -> None:
        """One optimizer step: the micro-steps of the global batch (gradients all-reduced only on
        the last), then the update, decided on the device: a non-finite gradient (the same on
        every rank after the all-reduce) makes the fused kernel skip it, as the fp16 scaler does
        for overflows; the host learns of it at the next sync point."""
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
                if self.step + 1 in self.cfg.debug.inject_nan_steps and self.info.rank == 0:
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
            self.nonfinite.update(nonfinite, self.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.after_step()
        self.step += 1
        self.images_seen += self.cfg.optim.global_batch

    def _log(self, window: MetricWindow) -> None:
        """The window's means over every rank (reduced only here), to the log and TensorBoard."""
        values = window.reduce(self.world, torch.distributed.all_reduce)
        values["train/lr"] = self.schedule.lr
        values["train/p"] = self.curriculum.p_at(self.images_seen - self.cfg.optim.global_batch)
        if self.is_main:
            log.info(
                "step %d/%d loss %.4f ce %.4f feat %.4f top-1 %.3f lr %.2e p %.2f %.1f img/s",
                self.step,
                self.total_steps,
                values["train/loss"],
                values["train/ce"],
                values["train/feat"],
                values["train/top1"],
                values["train/lr"],
                values["train/p"],
                values["train/images_per_s"],
            )
            self.scalars.add(values, self.step)

    def _stop_here(self, now) -> bool:
        """At a sync point: every rank agrees whether any was signalled (SIGTERM, SLURM's USR1)
        and then checkpoints and raises Preempted; train.stop_after_step stops quietly."""
        signalled = self.stop_flag.raised is not None
        if distributed.all_reduce_max(float(signalled), self.device) <= 0 and not now.stop:
            return False
        if not now.save:
            self.save()
        if now.stop and self.stop_flag.raised is None:
            log.info("stopping after step %d as configured", self.step)
            return True
        log.warning("preempted: checkpoint at step %d written, exiting", self.step)
        self._mark_preempted()
        raise Preempted()

    def _check_nonfinite(self) -> None:
        """At a sync point: report the steps skipped since the last one, and stop (before any
        save) after train.max_nonfinite in a row; the last good checkpoint is then the newest."""
        in_a_row, total, last = self.nonfinite.read()
        if total > self.nonfinite_total:
            log.warning(
                "%d non-finite loss/gradient step(s) skipped (the last at step %d; %d in a row)",
                total - self.nonfinite_total,
                last,
                in_a_row,
            )
        self.nonfinite_total = total
        if in_a_row >= self.cfg.train.max_nonfinite:
            raise NonFiniteLoss(
                f"{in_a_row} non-finite steps in a row at step {last}; the last good checkpoint "
                f"is in {self.checkpoints.dir} (lower optim.lr or use train.precision=fp32)"
            )

    def _undecodable(self, paths: list[str]) -> dict[str, str]:
        return undecodable(paths, self.cfg.data.backend, self.device)

    def _excluded_during_run(self, bad: dict[str, str], position: int) -> None:
        excluded_during_run(bad, position, self.planner, self.cfg.data, self.info.rank)

    def recalibrate_bn(self) -> None:
        """model.bn_recalibrate before a validation (crossres_dist/batchnorm.py)."""
        self.bn_reestimation(
            self.student, self.step, self.curriculum.p_at(self.images_seen), self.world
        )

    def rank_agreement(self) -> dict:
        """Every rank's learning rate and parameter checksum (gathered on all ranks): DDP and the
        broadcast plateau decisions must keep them identical."""
        with torch.no_grad():
            checksum = float(sum(p.double().sum() for p in self.student.parameters()))
        mine = [self.schedule.lr, checksum, sorted(self.planner.excluded)]
        everyone = [mine]
        if self.world > 1:
            everyone = [None] * self.world
            torch.distributed.all_gather_object(everyone, mine)
        return {
            "lr_per_rank": [e[0] for e in everyone],
            "param_checksum_per_rank": [e[1] for e in everyone],
            "ranks_agree": all(e[:2] == everyone[0][:2] for e in everyone),
            "excluded_during_run": sorted({path for e in everyone for path in e[2]}),
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
            "skipped_before_run": sorted(self.skipped_before_run),
        }
        rundir.write_json(self.run_dir / "results.json", results)

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
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        if self.run_lock is not None:
            self.run_lock.release()
            self.run_lock = None
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
    except distributed.PeerStopped:
        graceful = True
        raise
    except rundir.DiskFullError as err:
        graceful = getattr(err, "agreed", False)
        raise
    finally:
        if trainer is not None:
            trainer.close()
        distributed.shutdown(graceful)


os.environ.setdefault("PYTHONUNBUFFERED", "1")
