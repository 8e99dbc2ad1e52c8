"""Typed configuration: defaults <- YAML file <- command-line ``section.key=value`` overrides.

Every key is checked against the dataclasses below before any work starts: an unknown key, a
value of the wrong type or an impossible combination raises ``ConfigError`` with a one-line
message that names the key and the file it came from.
"""

from __future__ import annotations

import sys
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from crossres_dist.distributed.settings import DistConfig
from crossres_dist.errors import ConfigError, CrossresError  # noqa: F401 (ConfigError: re-exported)
from crossres_dist.heads.settings import HeadConfig
from crossres_dist.models import check_input
from crossres_dist.models.settings import ModelConfig


def first_not_probability(section, name: str, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = getattr(section, key)
        if not 0.0 <= value <= 1.0:
            return f"{name}.{key}: {value} is not a probability in [0, 1]"
    return None


@dataclass
class RunConfig:
    # The run's name: its directory is output_dir/name.
    name: str = "run"
    # Each run lives in output_dir/name; an existing run directory is resumed from.
    output_dir: str = "runs"
    # Seeds the initialisation, the data order and every draw of the views.
    seed: int = 0
    # "pretrain": plain cross-entropy at full resolution (makes a teacher for a new dataset).
    # "crossres": the method: student against the frozen teacher.
    stage: Literal["pretrain", "crossres"] = "crossres"
    # "auto": resume from the newest readable checkpoint (refused if there are checkpoints but
    # none is readable); "never": start from step 0, moving earlier checkpoints aside.
    resume: Literal["auto", "never"] = "auto"
    # A run directory is locked by its job; a lock held from another host whose heartbeat is
    # older than this (seconds) is taken over.
    lock_stale_s: int = 120
    # "": the CPU's own arithmetic (fastest). "cross_cpu": ATen, oneDNN and MKL pinned to AVX2
    # paths, for the same bits on another x86-64 CPU at the same versions and thread count (the
    # demo's setting); "cross_cpu_strict": oneDNN off as well (crossres_dist/arithmetic.py;
    # their costs: docs/operations.md, "The same bits on another CPU").
    reproducible: Literal["", "cross_cpu", "cross_cpu_strict"] = ""

    def problem(self) -> str | None:
        return None


@dataclass
class DataConfig:
    # An ImageFolder directory or a list file ("relative/path label" per line).
    train: str = "embedded:orl"
    # Validation (chooses best.pt and drives the plateau schedule): "split:K" holds out K images
    # of every identity of `train`; or a separate ImageFolder / list file.
    val: str = "split:3"
    # Test (reported by crossres_dist.evaluate, never seen by training or selection): "split:K",
    # a separate ImageFolder / list file, or "" (evaluate on another data set).
    test: str = ""
    # Draws the held-out images. Not run.seed: runs with other seeds share the same split.
    split_seed: int = 0
    # Root that list-file paths are relative to (default: the list file's folder).
    root: str = ""
    # The input pipeline: "dali" (GPU or CPU operators), "torchvision" (the twin) or "auto".
    backend: Literal["auto", "dali", "torchvision"] = "auto"
    # Faces are resized to this shorter side (pixels) before the crop.
    resize_shorter: int = 256
    # The square crop (pixels) both networks see.
    crop: int = 224
    # Both views of a training image turned grey with this probability.
    grayscale_p: float = 0.2
    # Both views of a training image mirrored left-right with this probability (the paper: 0).
    hflip_p: float = 0.0
    # Images per rank per forward pass.
    micro_batch: int = 32
    # Input-pipeline threads per rank: DALI on the CPU runs one single-threaded pipeline per
    # thread, on a GPU they feed the device; the twin uses them as DataLoader workers.
    num_threads: int = 2
    # Unusable files found before the run: refused (false), or left out (true).
    skip_bad_files: bool = False
    # A file that fails to decode during the run is named and left out, and the run goes on,
    # until more than this fraction of the training files (at least one file) has failed.
    max_bad_fraction: float = 0.001
    # Before the first step every rank checks its share of the files: "full" decodes them,
    # "header" only opens them (for millions of files; run crossres_dist.data.check once).
    check: Literal["full", "header", "off"] = "full"
    # Files a check_data manifest verified (same size and mtime) are not checked again:
    # "auto" (the data set's own .crossres-manifest.jsonl, if there is one), a path, or "".
    manifest: str = "auto"
    # An identity with fewer training images than this is refused.
    min_images_per_identity: int = 1
    # Images with a shorter side below this (pixels) are counted at start-up.
    min_side: int = 16
    # insightface's verification sets scored at every validation (rank 0 reports; every rank
    # embeds its share): a list of .bin files, or "auto", the *.bin files beside a packed
    # data.train (insightface's val_targets: lfw.bin, cfp_fp.bin, agedb_30.bin ...).
    verification: list[str] | str = field(default_factory=list)

    def problem(self) -> str | None:
        if self.micro_batch <= 0:
            return "data.micro_batch: must be > 0"
        if self.num_threads < 1:
            return f"data.num_threads: {self.num_threads}: needs at least 1 thread"
        if self.crop > self.resize_shorter:
            return (
                f"data.crop: {self.crop} exceeds data.resize_shorter={self.resize_shorter}; "
                "lower the crop or raise resize_shorter"
            )
        if isinstance(self.verification, str) and self.verification not in ("", "auto"):
            if not self.verification.endswith(".bin"):
                return (
                    f"data.verification: {self.verification!r} is neither 'auto' nor a list of "
                    ".bin files"
                )
        return first_not_probability(self, "data", ("grayscale_p", "hflip_p", "max_bad_fraction"))


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
    # torch.compile the frozen teacher too (with model.compile_mode).
    compile: bool = False

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
    # order gamma, downsample, gaussian_blur, jpeg, noise (pipelines/degradations/).
    degradations: list[str] = field(default_factory=lambda: ["downsample"])
    # Every step's range but downsample's (method.resolutions), by step name: gaussian_blur
    # (sigma in pixels at data.resize_shorter, [0.5, 2.0]), jpeg (quality 1-100, [20, 80]),
    # noise (sigma in levels of 0..255, [2.0, 10.0]), gamma ([0.5, 2.0]); each drawn uniformly
    # from [low, high] (gamma log-uniformly). pipelines/degradations/ says more, step by step.
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

    def problem(self) -> str | None:
        if self.lambda_feat < 0:
            return "method.lambda_feat: must be >= 0"
        if self.curriculum and self.curriculum_step <= 0:
            return "method.curriculum_step: must be > 0 when method.curriculum is true"
        return first_not_probability(self, "method", ("p", "curriculum_start"))


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
    # classifier top-1 at val.resolution (the paper's), or "verification", the mean 10-fold
    # accuracy of data.verification's sets over every validated resolution (the field's).
    select_by: Literal["top1", "verification"] = "top1"
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
    # Write a checkpoint every this many optimizer steps.
    checkpoint_every: int = 100
    # Checkpoints kept besides best.pt (at least 2).
    keep_last: int = 2
    # Non-finite steps in a row that stop the run (each one is skipped).
    max_nonfinite: int = 3
    # A progress bar on rank 0's terminal.
    progress_bar: bool = True
    # The host reads the device (non-finite steps) and the ranks compare stop flags every this
    # many optimizer steps, and at every log, validation and checkpoint step; nowhere else.
    sync_every: int = 10
    # Stop (as if preempted) after this optimizer step; 0 = never. Used by resume tests.
    stop_after_step: int = 0
    # A directory where compiled code is kept across runs (Inductor's FX graph and AOTAutograd
    # caches, Triton's kernels): a later run, or a restarted one, finds every graph compiled
    # once (model.compile, teacher.compile). "" leaves PyTorch's defaults (a /tmp folder).
    compile_cache: str = ""

    def problem(self) -> str | None:
        if self.keep_last < 2:
            return "train.keep_last: keep at least 2 checkpoints so one survives a crash"
        for key in ("checkpoint_every", "log_every", "sync_every"):
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


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    val: ValConfig = field(default_factory=ValConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    # Where the values came from, for error messages; not part of the saved config.
    source: str = field(default="<defaults>", repr=False, compare=False)
    # "training", or "evaluation" (which needs no teacher): what the values are checked for.
    purpose: str = field(default="training", repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Each section checks its own fields; the rules that join sections follow."""
        for name in SECTION_NAMES:
            if why := getattr(self, name).problem():
                key, _, why = why.partition(": ")
                raise ConfigError(f"{self.source}: {key}: {why}")
        for key, why in self.cross_section_problems():
            raise ConfigError(f"{self.source}: {key}: {why}")

    def cross_section_problems(self):
        if why := check_input(self.model.arch, self.model.layers, self.data.crop):
            yield "data.crop", why
        if self.val.select_by == "verification" and self.data.verification in ([], ""):
            yield (
                "val.select_by",
                "verification needs verification sets: set data.verification to a list of .bin "
                "files or auto (or val.select_by=top1)",
            )
        if self.method.feature_weight != "none" and self.student.replace_classifier:
            yield (
                "method.feature_weight",
                f"{self.method.feature_weight} weighs each face by the teacher's classifier, "
                "which student.replace_classifier=true says is over other identities; set "
                "method.feature_weight=none",
            )
        if self.dist.backend == "nccl" and self.train.device == "cpu":
            yield "dist.backend", "nccl needs train.device=cuda; use gloo on the CPU"
        if self.student.classifier_init == "centres" and (
            self.head.partial_fc or self.run.stage != "crossres"
        ):
            yield (
                "student.classifier_init",
                "centres are the teacher's, on the network's own classifier: it needs "
                "run.stage=crossres and head.partial_fc=false (or set it to random)",
            )
        if (
            self.purpose == "training"
            and self.run.stage == "crossres"
            and not self.teacher.checkpoint
        ):
            yield (
                "teacher.checkpoint",
                "the crossres stage needs a teacher; set teacher.checkpoint=PATH "
                "(or run.stage=pretrain to train one)",
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source", None)
        d.pop("purpose", None)
        return d

    def dumps(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.name


SECTIONS: dict[str, type] = {
    name: hint
    for name, hint in typing.get_type_hints(Config).items()
    if name not in ("source", "purpose")
}
SECTION_NAMES = tuple(SECTIONS)
_HINTS = {name: typing.get_type_hints(cls) for name, cls in SECTIONS.items()}


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a type hint, converting only the lossless cases (int -> float)."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        if isinstance(value, bool):
            # YAML 1.1 reads off/no as false and on/yes as true: take back the word it was.
            words = {"off", "no", "false"} if not value else {"on", "yes", "true"}
            matches = [c for c in typing.get_args(hint) if isinstance(c, str) and c in words]
            value = matches[0] if len(matches) == 1 else value
        if value not in typing.get_args(hint):
            choices = ", ".join(repr(c) for c in typing.get_args(hint))
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is type(None) and value is None:
                return None
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        for arg in args[1:]:  # the first that takes the value (list[str] | str: either)
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        return _coerce(value, args[0], where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, item = typing.get_args(hint)
        return {str(k): _coerce(v, item, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


# Keys that moved, and where to.
MOVED = {
    "train.inject_nan_steps": "debug.inject_nan_steps",
    "train.inject_kill_during_save": "debug.inject_kill_during_save",
    # Validation has a section of its own.
    "train.val_every": "val.every",
    "method.val_resolution": "val.resolution",
    "method.report_resolutions": "val.report_resolutions",
    "data.val_every_nth": "val.every_nth",
    "data.val_offset": "val.offset",
    "data.min_val_images": "val.min_images",
    "data.val_cache_mb": "val.cache_mb",
    "model.bn_recalibrate": "val.bn_recalibrate",
    "model.bn_recalibrate_images": "val.bn_recalibrate_images",
    # So has the head.
    "method.head": "head.name",
    "method.margin_scale": "head.scale",
    "method.margin": "head.margin",
    "method.adaface_h": "head.adaface_h",
    "method.adaface_t_alpha": "head.adaface_t_alpha",
    "method.partial_fc": "head.partial_fc",
    "method.partial_fc_rate": "head.partial_fc_rate",
    # Every degradation range is an entry of method.ranges.
    "method.blur_sigma": "method.ranges.gaussian_blur",
    "method.jpeg_quality": "method.ranges.jpeg",
    "method.noise_sigma": "method.ranges.noise",
}


def _apply(raw: dict[str, dict[str, Any]], source: str, target: dict[str, dict[str, Any]]) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section '{section}' (known: {', '.join(SECTIONS)})"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section '{section}' must be a mapping")
        for key, value in values.items():
            hints = _HINTS[section]
            if f"{section}.{key}" in MOVED:
                raise ConfigError(
                    f"{source}: {section}.{key} is now {MOVED[f'{section}.{key}']}; rename it"
                )
            key, _, entry = key.partition(".")  # section.mapping.entry=value: one entry
            if key not in hints or (entry and typing.get_origin(hints[key]) is not dict):
                raise ConfigError(
                    f"{source}: unknown key '{section}.{key}' (known: {', '.join(hints)})"
                )
            if entry:
                value = {**target.get(section, {}).get(key, {}), entry: value}
            target.setdefault(section, {})[key] = _coerce(
                value, hints[key], f"{source}: {section}.{key}"
            )


def parse_override(text: str) -> tuple[str, str, Any]:
    """``section.key=value`` with a YAML value (so 0.1, true, [8, 16] keep their types)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"command line: override {text!r} is not of the form section.key=value")
    dotted, value_text = text.split("=", 1)
    section, key = dotted.split(".", 1)
    try:
        value = yaml.safe_load(value_text) if value_text != "" else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"command line: {dotted}: cannot parse {value_text!r}: {err}") from None
    return section, key, value


# The configs a checkout holds in configs/ and a wheel installs as crossres_dist/shipped/configs
# (setup.py takes them from configs/: one copy in the repository).
_HERE = Path(__file__).resolve().parent
CONFIG_DIRS = (_HERE.parent / "configs", _HERE / "shipped" / "configs")


def shipped_configs() -> list[str]:
    """The names `--config` takes without a path (demo, demo_teacher, ...)."""
    names = {p.stem for folder in CONFIG_DIRS if folder.is_dir() for p in folder.glob("*.yaml")}
    return sorted(names)


def shipped_config(name: str | Path) -> Path:
    """A config path as given, or a shipped config by name when no such file exists."""
    path = Path(name)
    if path.is_file() or path.suffix or len(path.parts) > 1:
        return path
    for folder in CONFIG_DIRS:
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    return path


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple = (), purpose: str = "training"
) -> Config:
    merged: dict[str, dict[str, Any]] = {}
    source = "<defaults>"
    if path:
        path = shipped_config(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(
                f"{path}: config file not found (shipped configs: {', '.join(shipped_configs())})"
            )
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        _apply(raw, source, merged)
    for text in overrides:
        section, key, value = parse_override(text)
        _apply({section: {key: value}}, "command line", merged)
    if overrides:
        source = f"{source} + command line"
    return from_dict(merged, source, purpose)


def from_dict(
    values: dict[str, dict[str, Any]], source: str = "<dict>", purpose: str = "training"
) -> Config:
    checked: dict[str, dict[str, Any]] = {}
    _apply(values, source, checked)
    sections = {name: SECTIONS[name](**checked.get(name, {})) for name in SECTIONS}
    return Config(**sections, source=source, purpose=purpose)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "|".join(str(a) for a in typing.get_args(hint))
    if origin is list:
        return f"list[{typing.get_args(hint)[0].__name__}]"
    return getattr(hint, "__name__", str(hint))


def settings_help() -> list[tuple[str, str, Any, str]]:
    """(section.key, type, default, meaning) for every setting, the meaning read from the
    comment above the field in the module that owns its section (this file, or a package's
    settings.py): the one place each setting is documented."""
    import ast
    import inspect

    comments: dict[tuple[str, str], str] = {}
    for module in {cls.__module__ for cls in SECTIONS.values()}:
        source = inspect.getsource(sys.modules[module])
        lines = source.splitlines()
        for node in ast.parse(source).body:
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    above, i = [], item.lineno - 2
                    while i >= 0 and lines[i].strip().startswith("#"):
                        above.insert(0, lines[i].strip()[1:].strip())
                        i -= 1
                    comments[(node.name, item.target.id)] = " ".join(above)
    defaults = Config(
        teacher=TeacherConfig(checkpoint="(required for run.stage=crossres)")
    ).to_dict()
    rows = []
    for section, cls in SECTIONS.items():
        for key, hint in _HINTS[section].items():
            rows.append(
                (
                    f"{section}.{key}",
                    _type_name(hint),
                    defaults[section][key],
                    comments.get((cls.__name__, key), ""),
                )
            )
    return rows


def format_settings_help() -> str:
    import textwrap

    out = [
        f"shipped configs (--config NAME): {', '.join(shipped_configs())}",
        "",
        "settings (in the YAML file as section: {key: value}, or on the command line as",
        "section.key=value; the command line wins):",
    ]
    section = None
    for name, kind, default, meaning in settings_help():
        if name.split(".")[0] != section:
            section = name.split(".")[0]
            out.append("")
        out.append(f"  {name} ({kind}, default {default!r})")
        out += textwrap.wrap(meaning, 92, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(out)
