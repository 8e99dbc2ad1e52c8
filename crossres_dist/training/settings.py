"""The training sections of the configuration, owned by the training package with their own
checks: the frozen teacher (``teacher.*``), where the student starts (``student.*``), the
method's objective and degradations (``method.*``), validation (``val.*``), the optimizer and
schedule (``optim.*``), the loop (``train.*``) and the tests' fault injection (``debug.*``).
crossres_dist/config.py composes them. The method's steps are checked against the pipelines'
registry of degradations here, so that a bad step is refused with the rest of the
configuration, before any work."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from crossres_dist.settings_rules import first_not_probability
from pipelines.degradations.registry import check_ranges, describe, parse_steps


@dataclass
class TeacherConfig:
    # A project checkpoint, a plain state_dict, or a released VGGFace2 file (forms A, B, C).
    checkpoint: str = ""
    # The teacher's own architecture; empty means the same as the student's.
    layers: list[int] = field(default_factory=list)
    # The teacher's own width; 0 means the same as the student's.
    width: int = 0
    # "full": FSDP2-shard the frozen teacher over the ranks (1/N memory each); "none": replicate.
    sharding: Literal["none", "full"] = "none"
    # The teacher's descriptors of the training faces computed once, before the first step, and
    # read at every step instead of running the teacher (training/teacher_cache.py): a folder
    # that keeps them for every run of the same teacher and view settings, "auto"
    # (run.output_dir/teacher-features), or "" (the teacher runs at every step). Only faces with
    # one fixed view are cached: square images with data.crop = data.resize_shorter.
    feature_cache: str = ""

    def problem(self) -> str | None:
        return None


@dataclass
class StudentConfig:
    # "teacher": start from the teacher's weights; otherwise a checkpoint path; "" = random.
    init: str = "teacher"
    # Allow a checkpoint with another number of identities: keep the features, new classifier.
    replace_classifier: bool = False
    # A new classifier: "random", or "centres", the teacher's class centres on the training
    # faces (training/imprint.py says why; needs a teacher and the network's own classifier).
    classifier_init: Literal["random", "centres"] = "random"
    # With "centres", a linear classifier's logits for the mean descriptor: this x cosine.
    centre_logit_scale: float = 16.0

    def problem(self) -> str | None:
        if self.centre_logit_scale <= 0:
            return f"student.centre_logit_scale: {self.centre_logit_scale} must be > 0"
        return None


@dataclass
class MethodConfig:
    # lambda: the weight of the feature term D against cross-entropy (0: CE only).
    lambda_feat: float = 0.1
    # The feature term D: "mse" (method.md, scale of the network's features), "cosine"
    # (1 - cosine similarity: the same scale for any network, so lambda carries over), or
    # "relational" (each face's cosine similarities to the other faces of its micro-batch, the
    # student's against the teacher's: the teacher's structure, not its features, and with
    # method.paired a face's two views pulled together whatever the teacher makes of it).
    feature_loss: Literal["mse", "cosine", "relational"] = "mse"
    # Each face's feature term weighed by the teacher's reliability on its full-resolution view:
    # "none" (the paper), "teacher_confidence" (its probability of the true identity) or
    # "teacher_correct" (1 where the true identity is its first choice, else 0), so that a weak
    # teacher's errors are not targets. Needs a teacher whose classifier is over this data's
    # identities (not student.replace_classifier).
    feature_weight: Literal["none", "teacher_confidence", "teacher_correct"] = "none"
    # The student sees both views of every face in one batch (CE and D on each).
    paired: bool = False
    # Probability that a training image's student view is degraded (fixed p).
    p: float = 0.1
    # Degraded views go down to one of these shorter sides (pixels), drawn uniformly.
    resolutions: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    # The steps a degraded view goes through, each "name" or "name:probability", applied in the
    # registry's order (pipelines/degradations/; the steps are listed below).
    degradations: list[str] = field(default_factory=lambda: ["downsample"])
    # Every step's range but downsample's (method.resolutions), by step name: [low, high], drawn
    # uniformly (gamma log-uniformly); each step's unit and default are listed under
    # method.degradations.
    ranges: dict[str, list[float]] = field(default_factory=dict)
    # Resampling for the down- and up-sampling of degraded views.
    interpolation: Literal["linear", "cubic", "nearest"] = "linear"
    # The paper's curriculum: p grows from curriculum_start by curriculum_increment.
    curriculum: bool = False
    # The curriculum's first p.
    curriculum_start: float = 0.1
    # The curriculum's step in p, up to 1.
    curriculum_increment: float = 0.1
    # Training images (all ranks together) between the curriculum's steps.
    curriculum_step: int = 35000

    @staticmethod
    def help_listings() -> dict[str, str]:
        """What --help adds to a key's comment, made from a registry (settings_help.py)."""
        return {"degradations": describe()}

    def problem(self) -> str | None:
        if self.lambda_feat < 0:
            return "method.lambda_feat: must be >= 0"
        if self.curriculum and self.curriculum_step <= 0:
            return "method.curriculum_step: must be > 0 when method.curriculum is true"
        try:  # the steps and their ranges, against the pipelines' registry of steps
            parse_steps(self.degradations)
            check_ranges(self.ranges_by_key())
        except ValueError as err:
            return str(err)
        return first_not_probability(self, "method", ("p", "curriculum_start"))

    def ranges_by_key(self) -> dict[str, list]:
        """Every registered step's range as configured, by its range key: method.resolutions
        for downsample (the method's own list), an entry of method.ranges for every other."""
        ranges = {f"ranges.{name}": values for name, values in self.ranges.items()}
        return {"resolutions": self.resolutions, **ranges}


@dataclass
class ValConfig:
    # Validate (and maybe write best.pt) every this many optimizer steps.
    every: int = 100
    # The low resolution (pixels) validated at; best.pt maximises top-1 there.
    resolution: int = 8
    # Further resolutions validated and logged (not used for selection).
    report_resolutions: list[int] = field(default_factory=lambda: [8, 12, 16, 24, 32])
    # Validation keeps every n-th held-out image, starting at `offset` (the research code: 30,
    # half).
    every_nth: int = 1
    # The first validation image kept (see every_nth).
    offset: int = 0
    # Fewer validation images than this (after every_nth) is refused: top-1 on a handful of
    # images cannot choose a checkpoint.
    min_images: int = 40
    # Validation views are made once and kept in memory (on the device) if they fit in this.
    cache_mb: int = 512
    # Before every validation (and so in every best.pt and final checkpoint), re-estimate the
    # student's BatchNorm statistics on training views: "clean" (undegraded), "mixed" (what the
    # student trains on: its views, degraded with probability p, and with method.paired the
    # undegraded ones too), or "off" (keep the running statistics).
    bn_recalibrate: Literal["off", "clean", "mixed"] = "off"
    # Training views (over all ranks) for val.bn_recalibrate.
    bn_recalibrate_images: int = 1024
    # What chooses best.pt and drives the plateau schedule: "top1", the held-out images'
    # classifier top-1 at val.resolution (the paper's); "verification", the mean 10-fold
    # accuracy of data.verification's sets over every validated resolution (the field's); or
    # "feature", the mean cosine similarity, over every validated resolution (full included),
    # of the student's descriptor of a validation face to the teacher's of the clean face: no
    # label needed, and it rewards keeping full resolution as much as gaining at low ones.
    select_by: Literal["top1", "verification", "feature"] = "top1"
    # Which side of a verification pair is degraded to each resolution: "probe" (the second
    # image; the first stays at full resolution) or "both".
    verification_degrade: Literal["probe", "both"] = "probe"

    def problem(self) -> str | None:
        if self.every <= 0:
            return "val.every: must be > 0"
        if self.every_nth < 1:
            return "val.every_nth: must be >= 1"
        return None


@dataclass
class OptimConfig:
    # SGD learning rate (the peak, with warm-up or cosine).
    lr: float = 1e-3
    # SGD momentum.
    momentum: float = 0.9
    # SGD weight decay.
    weight_decay: float = 5e-4
    # Nesterov momentum.
    nesterov: bool = False
    # Images per optimizer step over all ranks; accumulation = global / (micro_batch x ranks).
    global_batch: int = 256
    # "plateau" (halve on a validation-loss plateau, the paper), "cosine" or "constant".
    scheduler: Literal["plateau", "cosine", "constant"] = "plateau"
    # The plateau schedule multiplies the learning rate by this.
    plateau_factor: float = 0.5
    # Validations without improvement before the plateau schedule acts.
    plateau_patience: int = 10
    # Relative improvement the plateau schedule counts as one.
    plateau_threshold: float = 0.1
    # The learning rate never goes below this.
    min_lr: float = 1e-7
    # Optimizer steps of linear warm-up (cosine schedule).
    warmup_steps: int = 0
    # Clip the gradient norm to this; 0 = no clipping.
    grad_clip: float = 0.0
    # The classifier's learning rate (the network's classifier and a margin head's class
    # centres) as a multiple of optim.lr. A new classifier on a pretrained network whose
    # descriptor is small (dlib's: norm about 1.4) hardly moves at a fine-tuning lr.
    classifier_lr_scale: float = 1.0

    def problem(self) -> str | None:
        if self.classifier_lr_scale <= 0:
            return f"optim.classifier_lr_scale: {self.classifier_lr_scale} must be > 0"
        for name in ("lr", "global_batch"):
            if getattr(self, name) <= 0:
                return f"optim.{name}: must be > 0"
        return None


@dataclass
class TrainConfig:
    # Passes over the training images (fractions allowed).
    epochs: float = 1.0
    # If > 0, overrides epochs.
    max_steps: int = 0
    # "bf16" / "fp16" (with a gradient scaler) autocast, "fp32", or "auto" (bf16 on GPU, fp32 on
    # CPU).
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    # "cuda", "cpu", or "auto" (a GPU if there is one).
    device: Literal["auto", "cuda", "cpu"] = "auto"
    # Log losses, learning rate and images/s every this many optimizer steps.
    log_every: int = 10
    # Non-finite steps in a row that stop the run (each one is skipped).
    max_nonfinite: int = 3
    # A progress bar on rank 0's terminal.
    progress_bar: bool = True
    # The host reads the device (non-finite steps) and the ranks compare stop flags every this
    # many optimizer steps, and at every log, validation and checkpoint step; nowhere else.
    sync_every: int = 10
    # Stop (as if preempted) after this optimizer step; 0 = never. Used by resume tests.
    stop_after_step: int = 0

    def problem(self) -> str | None:
        for key in ("log_every", "sync_every"):
            if getattr(self, key) <= 0:
                return f"train.{key}: must be > 0"
        return None


@dataclass
class DebugConfig:
    """Fault injection for the tests; a real run leaves this section out."""

    # Make the loss non-finite on rank 0 at these optimizer steps.
    inject_nan_steps: list[int] = field(default_factory=list)
    # Rank 0 dies (SIGKILL) half-way through writing this step's checkpoint; 0 = never.
    inject_kill_during_save: int = 0

    def problem(self) -> str | None:
        return None


def selection_problems(c) -> Iterator[str]:
    """What best.pt's selection (val.select_by) needs of the composed configuration `c`."""
    if c.val.select_by == "feature" and (c.run.stage != "crossres" or c.method.lambda_feat == 0):
        # Without the feature term nothing trains toward the teacher: the closest checkpoint
        # to it is the starting network (step 0's validation), not a trained one.
        yield (
            "val.select_by: feature follows the student's cosine to the teacher: needs "
            "run.stage=crossres and method.lambda_feat > 0 (else val.select_by=top1)"
        )
