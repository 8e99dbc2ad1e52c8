"""BatchNorm re-estimation before a validation (val.bn_recalibrate), as a component of its own.

The student's running statistics are re-estimated as a plain average over bn_recalibrate_images
training views (all ranks, averaged), so that evaluation, selection and the checkpoint normalise
with statistics of the weights as they are. The views come from a stream of their own (another
seed, starting at the current step): the training order is untouched, and a resumed run
re-estimates on the same images. In batch mode training never reads these statistics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from crossres_dist.checkpointing.manager import unwrap
from crossres_dist.models import set_bn_frozen
from crossres_dist.training.settings import ValConfig
from pipelines import Loader, ResilientViews, TrainPlanner

# The re-estimation stream's seed offset from run.seed: never the training stream's.
STREAM = 7919


class BatchNormReestimation:
    def __init__(
        self,
        val_cfg: ValConfig,
        planner: TrainPlanner,
        loader: Loader,
        seed: int,
        autocast,
        memory_format: torch.memory_format,
        paired: bool,
        bn_frozen: bool,
        find_bad: Callable[[list[str]], dict[str, str]],
        on_excluded: Callable[[dict[str, str], int], None],
    ) -> None:
        self.cfg, self.planner = val_cfg, planner
        self.bn_frozen = bn_frozen  # model.bn_mode=frozen: put back after the estimate
        self.loader = loader.reseeded(seed + STREAM)
        self.seed = seed + STREAM
        self.autocast, self.memory_format = autocast, memory_format
        # "clean": undegraded views; "mixed": what the student trains on (both views of each
        # face when paired).
        self.view = "teacher_view" if val_cfg.bn_recalibrate == "clean" else "student_view"
        self.paired = self.view == "student_view" and paired
        self.find_bad, self.on_excluded = find_bad, on_excluded

    @torch.no_grad()
    def __call__(self, student: torch.nn.Module, step: int, p_now: float, world: int) -> None:
        main = self.planner
        planner = TrainPlanner(
            main.samples,
            main.views,
            main.micro_batch,
            main.rank,
            main.world,
            self.seed,
            lambda images: p_now,
        )
        # The same set as training's: a file that cannot be decoded here is named and left out
        # of training too, and one training has left out is never read here.
        planner.excluded = main.excluded
        batches = ResilientViews(planner, step, self.loader, self.find_bad, self.on_excluded)
        student = unwrap(student)
        was_training = student.training
        norms = [
            m for m in student.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        ]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        student.train()
        images = 0
        while images < self.cfg.bn_recalibrate_images:
            batch = next(batches)
            view = batch[self.view]
            if self.paired:
                view = torch.cat([view, batch["teacher_view"]])
            with self.autocast:
                student(view.contiguous(memory_format=self.memory_format))
            images += len(view) * world
        del batches
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
            if world > 1:
                for stats in (m.running_mean, m.running_var):
                    torch.distributed.all_reduce(stats)
                    stats /= world
        student.train(was_training)
        if was_training and self.bn_frozen:
            set_bn_frozen(student)
