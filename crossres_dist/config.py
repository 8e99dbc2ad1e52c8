"""Typed configuration: defaults <- YAML file <- command-line ``section.key=value`` overrides.

Every key is checked against the dataclasses below before any work starts: an unknown key, a
value of the wrong type or an impossible combination raises ``ConfigError`` with a one-line
message that names the key and the file it came from.
"""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message says what to change."""


@dataclass
class RunConfig:
    name: str = "run"
    # Each run lives in output_dir/name; an existing run directory is resumed from.
    output_dir: str = "runs"
    seed: int = 0
    # "pretrain": plain cross-entropy at full resolution (makes a teacher for a new dataset).
    # "crossres": the method: student against the frozen teacher.
    stage: Literal["pretrain", "crossres"] = "crossres"
    resume: Literal["auto", "never"] = "auto"


@dataclass
class DataConfig:
    # An ImageFolder directory or a list file ("relative/path label" per line).
    train: str = "embedded:orl"
    # A separate split; "split:K" instead holds out K images per identity of `train`.
    val: str = "split:3"
    # Root that list-file paths are relative to (default: the list file's folder).
    root: str = ""
    backend: Literal["auto", "dali", "torchvision"] = "auto"
    resize_shorter: int = 256
    crop: int = 224
    grayscale_p: float = 0.2
    micro_batch: int = 32
    # Input-pipeline threads per rank: DALI on the CPU runs one single-threaded pipeline per
    # thread, on a GPU they feed the device; the twin uses them as DataLoader workers.
    num_threads: int = 2
    # Validation keeps every n-th image, starting at `val_offset` (the research code: 30, half).
    val_every_nth: int = 1
    val_offset: int = 0
    skip_bad_files: bool = False
    # Before the first step every rank checks its share of the files: "full" decodes them,
    # "header" only opens them (for millions of files; run crossres_dist.check_data once).
    check: Literal["full", "header", "off"] = "full"
    min_images_per_identity: int = 1
    min_side: int = 16


@dataclass
class ModelConfig:
    # Bottleneck blocks per stage; [3, 4, 6, 3] is SE-ResNet-50.
    layers: list[int] = field(default_factory=lambda: [3, 4, 6, 3])
    width: int = 64
    se_reduction: int = 16
    # 0 = inferred from the training data.
    num_classes: int = 0
    # BatchNorm momentum 0 keeps the running statistics fixed, as in the released model.
    bn_momentum: float = 0.0
    # "batch": BatchNorm uses batch statistics in training; "frozen": running statistics always.
    bn_mode: Literal["batch", "frozen"] = "batch"
    channels_last: bool = True
    # torch.compile the student (GPU: fuses the squeeze-excite and BatchNorm element-wise work).
    compile: bool = False


@dataclass
class TeacherConfig:
    # A project checkpoint, a plain state_dict, or a released VGGFace2 file (forms A, B, C).
    checkpoint: str = ""
    # The teacher's own architecture; empty means the same as the student's.
    layers: list[int] = field(default_factory=list)
    width: int = 0
    sharding: Literal["none", "full"] = "none"


@dataclass
class StudentConfig:
    # "teacher": start from the teacher's weights; otherwise a checkpoint path; "" = random.
    init: str = "teacher"
    # Allow a checkpoint with another number of identities: keep the features, new classifier.
    replace_classifier: bool = False


@dataclass
class MethodConfig:
    lambda_feat: float = 0.1
    p: float = 0.1
    resolutions: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    interpolation: Literal["linear", "cubic", "nearest"] = "linear"
    curriculum: bool = False
    curriculum_start: float = 0.1
    curriculum_increment: float = 0.1
    curriculum_step: int = 35000
    val_resolution: int = 8
    report_resolutions: list[int] = field(default_factory=lambda: [8, 12, 16, 24, 32])


@dataclass
class OptimConfig:
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    # Images per optimizer step over all ranks; accumulation = global / (micro_batch x ranks).
    global_batch: int = 256
    scheduler: Literal["plateau", "cosine", "constant"] = "plateau"
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    plateau_threshold: float = 0.1
    min_lr: float = 1e-7
    warmup_steps: int = 0
    grad_clip: float = 0.0


@dataclass
class TrainConfig:
    epochs: float = 1.0
    # If > 0, overrides epochs.
    max_steps: int = 0
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    device: Literal["auto", "cuda", "cpu"] = "auto"
    val_every: int = 100
    log_every: int = 10
    checkpoint_every: int = 100
    keep_last: int = 2
    max_nonfinite: int = 3
    progress_bar: bool = True
    # Test hook: make the loss non-finite at these optimizer steps (fault-injection tests).
    inject_nan_steps: list[int] = field(default_factory=list)
    # Stop (as if preempted) after this optimizer step; 0 = never. Used by resume tests.
    stop_after_step: int = 0
    # Fault injection: rank 0 dies (SIGKILL) half-way through writing this step's checkpoint.
    inject_kill_during_save: int = 0


@dataclass
class DistConfig:
    launcher: Literal["auto", "torchrun", "slurm", "mpi", "single"] = "auto"
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    # Every collective (and the wait for rank-0 validation) fails after this many seconds.
    timeout_s: int = 1800
    port: int = 0


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    # Where the values came from, for error messages; not part of the saved config.
    source: str = field(default="<defaults>", repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"{self.source}: {key}: {why}")

        for name in ("lr", "global_batch"):
            if getattr(self.optim, name) <= 0:
                raise bad(f"optim.{name}", "must be > 0")
        if self.data.micro_batch <= 0:
            raise bad("data.micro_batch", "must be > 0")
        if self.data.num_threads < 1:
            raise bad("data.num_threads", f"{self.data.num_threads}: needs at least 1 thread")
        if self.data.crop > self.data.resize_shorter:
            raise bad(
                "data.crop",
                f"{self.data.crop} exceeds data.resize_shorter={self.data.resize_shorter}; "
                "lower the crop or raise resize_shorter",
            )
        for name in ("p", "grayscale_p", "curriculum_start"):
            section = self.data if name == "grayscale_p" else self.method
            value = getattr(section, name)
            if not 0.0 <= value <= 1.0:
                prefix = "data" if name == "grayscale_p" else "method"
                raise bad(f"{prefix}.{name}", f"{value} is not a probability in [0, 1]")
        if not self.method.resolutions or any(r < 1 for r in self.method.resolutions):
            raise bad("method.resolutions", "needs at least one resolution, each >= 1 pixel")
        if self.method.lambda_feat < 0:
            raise bad("method.lambda_feat", "must be >= 0")
        if self.method.curriculum and self.method.curriculum_step <= 0:
            raise bad("method.curriculum_step", "must be > 0 when method.curriculum is true")
        if not self.model.layers or any(n < 1 for n in self.model.layers):
            raise bad("model.layers", "needs 1 or more stages with >= 1 block each")
        if self.model.width < 4:
            raise bad("model.width", "must be >= 4")
        if self.train.keep_last < 2:
            raise bad("train.keep_last", "keep at least 2 checkpoints so one survives a crash")
        if self.train.val_every <= 0 or self.train.checkpoint_every <= 0:
            raise bad("train.val_every", "val_every and checkpoint_every must be > 0")
        if self.run.stage == "crossres" and not self.teacher.checkpoint:
            raise bad(
                "teacher.checkpoint",
                "the crossres stage needs a teacher; set teacher.checkpoint=PATH "
                "(or run.stage=pretrain to train one)",
            )
        if self.dist.backend == "nccl" and self.train.device == "cpu":
            raise bad("dist.backend", "nccl needs train.device=cuda; use gloo on the CPU")
        if self.data.val_every_nth < 1:
            raise bad("data.val_every_nth", "must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source", None)
        return d

    def dump(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.name


SECTIONS: dict[str, type] = {
    name: hint for name, hint in typing.get_type_hints(Config).items() if name != "source"
}
_HINTS = {name: typing.get_type_hints(cls) for name, cls in SECTIONS.items()}


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a type hint, converting only the lossless cases (int -> float)."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint):
            choices = ", ".join(repr(c) for c in typing.get_args(hint))
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is type(None) and value is None:
                return None
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(value, args[0], where)
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
            if key not in hints:
                raise ConfigError(
                    f"{source}: unknown key '{section}.{key}' (known: {', '.join(hints)})"
                )
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


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    merged: dict[str, dict[str, Any]] = {}
    source = "<defaults>"
    if path:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
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
    return from_dict(merged, source)


def from_dict(values: dict[str, dict[str, Any]], source: str = "<dict>") -> Config:
    checked: dict[str, dict[str, Any]] = {}
    _apply(values, source, checked)
    sections = {name: SECTIONS[name](**checked.get(name, {})) for name in SECTIONS}
    return Config(**sections, source=source)
