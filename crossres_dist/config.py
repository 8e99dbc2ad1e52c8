"""Typed configuration: defaults <- YAML file <- command-line ``section.key=value`` overrides.

Each package owns its section (its dataclass and the checks of its own fields): data, model,
head, teacher, student, method, val, optim, train, debug, checkpoint, dist and compile live in
the packages' ``settings.py``; ``run`` is the job's own and lives here. This module composes
them, holds the few rules that join sections (``cross_section_problems``), merges the YAML file
and the command line, coerces the values and writes ``--help``. Every rule runs when the
configuration is built, before any work: an unknown key, a value of the wrong type or an
impossible combination raises ``ConfigError`` with a one-line message that names the key and
the file it came from. A key that moved (``MOVED``) is read at its new home, with one line
that says so.
"""

from __future__ import annotations

import itertools
import logging
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from crossres_dist.checkpointing.settings import CheckpointConfig
from crossres_dist.data.settings import DataConfig, unlabelled_problems
from crossres_dist.distributed.settings import CompileConfig, DistConfig
from crossres_dist.errors import ConfigError, CrossresError  # noqa: F401 (ConfigError: re-exported)
from crossres_dist.heads.settings import HeadConfig
from crossres_dist.models import check_input
from crossres_dist.models.settings import ModelConfig
from crossres_dist.training.settings import (
    DebugConfig,
    MethodConfig,
    OptimConfig,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
    ValConfig,
    selection_problems,
)

log = logging.getLogger(__name__)


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
    # "": the CPU's own arithmetic (fastest). "cross_cpu": ATen, oneDNN and MKL pinned to AVX2
    # paths, for the same bits on another x86-64 CPU at the same versions and thread count (the
    # demo's setting); "cross_cpu_strict": oneDNN off as well (crossres_dist/arithmetic.py;
    # their costs: docs/operations.md, "The same bits on another CPU").
    reproducible: Literal["", "cross_cpu", "cross_cpu_strict"] = ""

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
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    compile: CompileConfig = field(default_factory=CompileConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    # Where the values came from, for error messages; not part of the saved config.
    source: str = field(default="<defaults>", repr=False, compare=False)
    # "training", or "evaluation" (which needs no teacher): what the values are checked for.
    purpose: str = field(default="training", repr=False, compare=False)

    def __post_init__(self) -> None:
        """Each section checks its own fields, then the rules that join sections."""
        problems = (getattr(self, name).problem() for name in SECTION_NAMES)
        for why in itertools.chain(problems, cross_section_problems(self)):  # lazily: in order
            if why:
                key, _, why = why.partition(": ")
                raise ConfigError(f"{self.source}: {key}: {why}")

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


def cross_section_problems(c: Config) -> Iterator[str]:
    """The rules that join sections, all of them: "section.key: why" for each one broken."""
    if why := check_input(c.model.arch, c.model.layers, c.data.crop):
        yield f"data.crop: {why}"
    if c.val.select_by == "verification" and c.data.verification in ([], ""):
        yield (
            "val.select_by: verification needs verification sets: set data.verification to a "
            "list of .bin files or auto (or val.select_by=top1)"
        )
    if c.method.feature_weight != "none" and c.student.replace_classifier:
        yield (
            f"method.feature_weight: {c.method.feature_weight} weighs each face by the teacher's "
            "classifier, which student.replace_classifier=true says is over other identities; "
            "set method.feature_weight=none"
        )
    yield from unlabelled_problems(c)
    weight = c.method.feature_weight
    if c.teacher.feature_cache and weight != "none":
        yield f"teacher.feature_cache: the cache keeps no logits; feature_weight={weight} needs them"
    yield from selection_problems(c)
    if c.dist.backend == "nccl" and c.train.device == "cpu":
        yield "dist.backend: nccl needs train.device=cuda; use gloo on the CPU"
    if c.student.classifier_init == "centres" and (c.head.partial_fc or c.run.stage != "crossres"):
        yield (
            "student.classifier_init: centres are the teacher's, on the network's own "
            "classifier: it needs run.stage=crossres and head.partial_fc=false (or set it to "
            "random)"
        )
    if c.purpose == "training" and c.run.stage == "crossres" and not c.teacher.checkpoint:
        yield (
            "teacher.checkpoint: the crossres stage needs a teacher; set teacher.checkpoint=PATH "
            "(or run.stage=pretrain to train one)"
        )


SECTIONS: dict[str, type] = {
    name: hint
    for name, hint in typing.get_type_hints(Config).items()
    if name not in ("source", "purpose")
}
SECTION_NAMES = tuple(SECTIONS)
_HINTS = {name: typing.get_type_hints(cls) for name, cls in SECTIONS.items()}


# The plain types a value is checked against: (accepts, what the message says is expected).
_SCALARS: dict[type, tuple[Callable[[Any], bool], str]] = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
}


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
        if value is None and type(None) in typing.get_args(hint):
            return None
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        for arg in args[1:]:  # the first that takes the value (list[str] | str: either)
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        return _coerce(value, args[0], where)
    if origin in (dict, list):
        if not isinstance(value, origin):
            kind = "a mapping" if origin is dict else "a list"
            raise ConfigError(f"{where}: expected {kind}, got {value!r}")
        item = typing.get_args(hint)[-1]
        if origin is dict:
            return {str(k): _coerce(v, item, f"{where}.{k}") for k, v in value.items()}
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint in _SCALARS:
        accepts, expected = _SCALARS[hint]
        if not accepts(value):
            raise ConfigError(f"{where}: expected {expected}, got {value!r}")
        return float(value) if hint is float else value
    return value


# Keys that moved, and where to: an old key is read at its new home, with one line saying so.
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
    # Checkpointing has a section of its own.
    "run.resume": "checkpoint.resume",
    "run.lock_stale_s": "checkpoint.lock_stale_s",
    "train.checkpoint_every": "checkpoint.every",
    "train.keep_last": "checkpoint.keep_last",
    # So has compilation.
    "model.compile": "compile.student",
    "model.compile_mode": "compile.mode",
    "teacher.compile": "compile.teacher",
    "train.compile_cache": "compile.cache",
}


def _renamed(raw: dict[str, Any], source: str) -> Iterator[tuple[str, str, Any]]:
    """(section, key, value) of a mapping of sections, each moved key at its new home."""
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section '{section}' (known: {', '.join(SECTIONS)})"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section '{section}' must be a mapping")
        for key, value in values.items():
            old = f"{section}.{key}"
            if old in MOVED:
                new = MOVED[old]
                new_section, new_key = new.split(".", 1)
                if new_key in (raw.get(new_section) or {}):
                    raise ConfigError(f"{source}: {old} and {new} are one setting; keep {new}")
                log.warning("%s: %s is now %s; read as %s", source, old, new, new)
                section, key = new_section, new_key
            yield section, key, value


def _apply(raw: dict[str, dict[str, Any]], source: str, target: dict[str, dict[str, Any]]) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    for section, key, value in _renamed(raw, source):
        hints = _HINTS[section]
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
