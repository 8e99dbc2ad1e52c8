"""Readers for every weights form, none of which runs code from the file.

- Project checkpoints and plain state_dicts: ``torch.load(weights_only=True)``.
- Form A (``senet50_ft_pytorch.pth``, a whole pickled MMdnn ``MainModel.KitModel``, legacy or zip
  serialization): ``torch.load(weights_only=True)`` with *stand-in* classes registered under the
  few names the file needs (``MainModel.KitModel``, ``torch.nn`` Conv2d/BatchNorm2d/Linear). The
  stand-ins only record their state; nothing is imported from the file's names, and any other
  global is refused with its name.
- Forms B (MMdnn ``.npy`` dict) and C (torchvision-style ``.pkl``): a restricted unpickler that
  allows only numpy's array reconstruction.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from crossres_dist.errors import CrossresError
from crossres_dist.models import ModelSpec, spec_of_state
from crossres_dist.pickle_globals import NUMPY_GLOBALS


class FormatError(CrossresError, ValueError):
    """A weights file that cannot be read or does not fit; the message names file and key."""


class RefusedGlobal(FormatError):
    """The file names a Python global outside the allow-list (it would run code): refused."""


KINDS = "a PyTorch checkpoint, a numpy .npy file or a pickle of arrays"


def _damage(path: Path, err: Exception) -> str:
    """What a file that failed to load is, from its first bytes, in one line (no pickle jargon,
    and never the advice to load it unsafely)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as os_err:
        return f"cannot be read ({os_err.strerror})"
    if not head:
        return f"an empty file, not {KINDS}"
    if head.startswith(b"PK\x03\x04"):
        return "a damaged or truncated PyTorch checkpoint (its zip archive does not open)"
    if head.startswith(b"\x93NUMPY"):
        return "a damaged or truncated numpy .npy file"
    if head[:1] == b"\x80":
        return "a damaged or truncated pickle (or legacy PyTorch file): it ends or breaks early"
    return f"not {KINDS} (it starts with bytes {head[:4].hex(' ')})"


# ---------------------------------------------------------------------------------------------
# Name tables: project (torchvision-style, form C) <-> Caffe layer (form B) <-> attribute (form A)
# ---------------------------------------------------------------------------------------------


def layer_names(layers: tuple[int, ...]) -> list[tuple[str, str, str]]:
    """(project prefix, Caffe layer name, kind) for every layer of an SE-ResNet."""
    rows = [("conv1", "conv1/7x7_s2", "conv"), ("bn1", "conv1/7x7_s2/bn", "bn")]
    for s, blocks in enumerate(layers):
        for b in range(blocks):
            ours, caffe = f"layer{s + 1}.{b}", f"conv{s + 2}_{b + 1}"
            rows += [
                (f"{ours}.conv1", f"{caffe}_1x1_reduce", "conv"),
                (f"{ours}.bn1", f"{caffe}_1x1_reduce/bn", "bn"),
                (f"{ours}.conv2", f"{caffe}_3x3", "conv"),
                (f"{ours}.bn2", f"{caffe}_3x3/bn", "bn"),
                (f"{ours}.conv3", f"{caffe}_1x1_increase", "conv"),
                (f"{ours}.bn3", f"{caffe}_1x1_increase/bn", "bn"),
                (f"{ours}.conv4", f"{caffe}_1x1_down", "conv+bias"),
                (f"{ours}.conv5", f"{caffe}_1x1_up", "conv+bias"),
            ]
            if b == 0:
                rows += [
                    (f"{ours}.downsample.0", f"{caffe}_1x1_proj", "conv"),
                    (f"{ours}.downsample.1", f"{caffe}_1x1_proj/bn", "bn"),
                ]
    rows.append(("fc", "classifier_1", "linear"))
    return rows


def attribute_name(caffe: str) -> str:
    return caffe.replace("/", "_")


BLOCK_NAME = re.compile(r"^conv(\d+)_(\d+)_")
BN_FROM_CAFFE = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def infer_layers(caffe_or_attr_names) -> tuple[int, ...]:
    """Blocks per stage from the names present (so small test networks work too)."""
    counts: dict[int, int] = {}
    for name in caffe_or_attr_names:
        match = BLOCK_NAME.match(name)
        if match:
            stage, block = int(match[1]), int(match[2])
            if stage >= 2:
                counts[stage] = max(counts.get(stage, 0), block)
    if not counts:
        raise FormatError("no SE-ResNet layers (conv2_1_... names) found")
    return tuple(counts[s] for s in sorted(counts))


def spec_from_state(state: dict[str, torch.Tensor], source: str) -> ModelSpec | None:
    """The spec of a state_dict, from the registered family that recognises it (models/);
    one FormatError line naming the file when it is recognised but does not add up."""
    try:
        return spec_of_state(state)
    except (ValueError, KeyError) as err:
        raise FormatError(f"{source}: {err}") from None


def from_caffe_dict(params: dict, source: str) -> dict[str, torch.Tensor]:
    """Form B: {caffe layer: {weights|bias|scale|mean|var: array}} -> project state_dict."""
    layers = infer_layers(params)
    state: dict[str, torch.Tensor] = {}
    used = set()
    for ours, caffe, kind in layer_names(layers):
        if caffe not in params:
            raise FormatError(f"{source}: missing layer '{caffe}' (for {ours})")
        entry = params[caffe]
        used.add(caffe)
        if kind == "bn":
            mapping = BN_FROM_CAFFE
        else:
            mapping = {"weights": "weight", "bias": "bias"}
        for their, mine in mapping.items():
            if their in entry:
                state[f"{ours}.{mine}"] = torch.as_tensor(np.asarray(entry[their], np.float32))
        extra = set(entry) - set(mapping)
        if extra:
            raise FormatError(f"{source}: layer '{caffe}' has unexpected entries {sorted(extra)}")
        if kind == "bn":
            state[f"{ours}.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    unused = sorted(set(params) - used)
    if unused:
        raise FormatError(f"{source}: unexpected layer '{unused[0]}' (not in the network)")
    return state


def from_attribute_dict(flat: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Form A's state: {attribute.suffix: tensor} -> project state_dict."""
    attrs = {k.split(".")[0] for k in flat}
    layers = infer_layers(attrs)
    by_attr = {attribute_name(caffe): ours for ours, caffe, _ in layer_names(layers)}
    state = {}
    for key, value in flat.items():
        attr, suffix = key.split(".", 1)
        if attr not in by_attr:
            raise FormatError(f"{source}: unexpected layer '{attr}' (not in the network)")
        state[f"{by_attr[attr]}.{suffix}"] = value
    return state


# ---------------------------------------------------------------------------------------------
# Restricted unpickling
# ---------------------------------------------------------------------------------------------


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Allows numpy arrays and plain containers; any other global is refused by name."""

    def find_class(self, module: str, name: str):
        if (module, name) in NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise RefusedGlobal(f"refused global '{module}.{name}' (not an array or container)")


def _load_numpy_pickle(data: bytes, source: str):
    try:
        return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except RefusedGlobal as err:
        raise RefusedGlobal(f"{source}: {err}") from None


def read_npy_object(path: Path) -> object:
    """An object .npy (``np.save`` of a dict) read without numpy's unrestricted unpickling."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }.get(version)
        if read_header is None:
            raise FormatError(f"{path}: unsupported .npy version {version}")
        shape, _, dtype = read_header(f)
        if not dtype.hasobject:
            raise FormatError(f"{path}: a numeric .npy array, not a dict of layers")
        array = _load_numpy_pickle(f.read(), str(path))
    if isinstance(array, np.ndarray) and array.shape == () and shape == ():
        return array.item()
    return array


class _Recorded:
    """Stand-in for a pickled module class: records the state the file gives it, nothing else."""

    def __setstate__(self, state):
        self.state = state


def _stand_in(qualified: str) -> type:
    module, name = qualified.rsplit(".", 1)
    return type(name, (_Recorded,), {"__module__": module, "__qualname__": name})


FORM_A_CLASSES = [
    "MainModel.KitModel",
    "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.linear.Linear",
]


def _flatten_module(obj: _Recorded, prefix: str = "") -> dict[str, torch.Tensor]:
    flat = {}
    state = obj.state if isinstance(obj.state, dict) else {}
    for group in ("_parameters", "_buffers"):
        for key, value in (state.get(group) or {}).items():
            if value is not None:
                flat[f"{prefix}{key}"] = (
                    value.detach().clone() if isinstance(value, torch.Tensor) else value
                )
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            flat.update(_flatten_module(child, f"{prefix}{name}."))
    return flat


LEGACY_TORCH_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("__builtin__", "set"),
    ("torch", "Size"),
}
STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _StorageType:
    """Stands for ``torch.FloatStorage`` etc. in a legacy file: only its dtype is used."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _legacy_torch_load(path: Path, stand_ins: dict[str, type]):
    """PyTorch's pre-1.6 serialization (what torch 1.4 wrote): a pickle whose persistent ids name
    storages and, for a whole pickled module, the module classes with their source. Read with an
    allow-list: tensors, containers, and the stand-in classes; storages are filled from the raw
    bytes that follow the pickle."""
    storages: dict[str, tuple[torch.UntypedStorage, torch.dtype]] = {}

    class Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if f"{module}.{name}" in stand_ins:
                return stand_ins[f"{module}.{name}"]
            if module == "torch" and name in STORAGE_DTYPES:
                return _StorageType(STORAGE_DTYPES[name])
            if (module, name) in LEGACY_TORCH_GLOBALS:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name}")

        def persistent_load(self, saved_id):
            kind, *data = saved_id
            if kind == "module":
                return data[0]  # the class (already a stand-in); its source text is ignored
            if kind != "storage":
                raise pickle.UnpicklingError(f"unsupported persistent id {kind!r}")
            storage_type, key, _location, numel, view = data
            if view is not None:
                raise pickle.UnpicklingError("storage views are not supported")
            dtype = storage_type.dtype
            if key not in storages:
                itemsize = torch.empty((), dtype=dtype).element_size()
                storages[key] = (torch.UntypedStorage(numel * itemsize), dtype)
            return torch.storage.TypedStorage(
                wrap_storage=storages[key][0], dtype=dtype, _internal=True
            )

    with open(path, "rb") as f:
        for _ in range(3):  # magic number, protocol version, system info
            Restricted(f).load()
        result = Restricted(f).load()
        keys = Restricted(f).load()
        for key in keys:
            untyped, dtype = storages[key]
            count = int.from_bytes(f.read(8), "little")
            itemsize = torch.empty((), dtype=dtype).element_size()
            raw = f.read(count * itemsize)
            if len(raw) != count * itemsize or count * itemsize != untyped.nbytes():
                raise pickle.UnpicklingError(f"storage {key} is truncated")
            view = torch.empty(0, dtype=torch.uint8).set_(untyped)
            view.copy_(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    return result


def _torch_load(path: Path, extra: list | None = None):
    stand_ins = [(_stand_in(q), q) for q in (extra or [])]
    try:
        if not zipfile.is_zipfile(path):
            return _legacy_torch_load(path, {q: cls for cls, q in stand_ins})
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        named = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(err))
        if named is None:
            raise  # not a refusal: damage, described by read_any
        raise RefusedGlobal(
            f"{path}: refused to load: refused global '{named[1]}' (only tensors, containers "
            "and the known SE-ResNet module classes are allowed; nothing in the file was run)"
        ) from None


def _is_torch_file(path: Path) -> bool:
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        head = f.read(2)
    # Legacy torch serialization starts with a pickled magic number (protocol 2: 0x80 0x02).
    return head[:1] == b"\x80" and path.suffix in (".pth", ".pt", ".tar", ".bin", ".ckpt")


def read_any(path: Path) -> tuple[dict[str, torch.Tensor], ModelSpec | None]:
    """The state_dict in `path` and its architecture (if recorded). Every failure is one
    FormatError line that names the file and says what it is or is not."""
    try:
        return _read_any(path)
    except FormatError:
        raise
    except Exception as err:  # EOFError, zip errors, pickle jargon, struct errors ...
        raise FormatError(f"{path}: {_damage(path, err)}") from None


def _read_any(path: Path) -> tuple[dict[str, torch.Tensor], ModelSpec | None]:
    source = str(path)
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04" and not zipfile.is_zipfile(path):
            raise FormatError(f"{path}: {_damage(path, ValueError())}")
    if path.suffix == ".npy":
        params = read_npy_object(path)
        if not isinstance(params, dict):
            raise FormatError(f"{source}: expected a dict of layers in the .npy file")
        state = from_caffe_dict(params, source)
        return state, spec_from_state(state, source)
    if _is_torch_file(path):
        obj = _torch_load(path, FORM_A_CLASSES)
        if isinstance(obj, _Recorded):  # form A: a whole pickled module
            state = from_attribute_dict(_flatten_module(obj), source)
            return state, spec_from_state(state, source)
        if isinstance(obj, dict) and "student" in obj:  # a project checkpoint
            spec = ModelSpec.from_dict(obj["model_spec"]) if "model_spec" in obj else None
            return obj["student"], spec
        if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
            state = dict(obj)  # a released backbone (arcface_torch's backbone.pth ...)
            return state, spec_from_state(state, source)
        raise FormatError(
            f"{source}: a torch file, but neither a checkpoint, a state_dict nor form A"
        )
    # Form C: a plain pickle of {torchvision-style name: numpy array}.
    obj = _load_numpy_pickle(path.read_bytes(), source)
    if not isinstance(obj, dict):
        raise FormatError(f"{source}: expected a dict of arrays")
    state = {k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in obj.items()}
    for key in list(state):
        if key.endswith("running_var"):
            state[key[: -len("running_var")] + "num_batches_tracked"] = torch.zeros(
                (), dtype=torch.long
            )
    return state, spec_from_state(state, source)


def to_caffe_dict(state: dict[str, torch.Tensor], layers: tuple[int, ...]) -> dict:
    """Project state_dict -> form B dict (for tests and for exporting to Caffe-style tools)."""
    out = {}
    inverse_bn = {v: k for k, v in BN_FROM_CAFFE.items()}
    for ours, caffe, kind in layer_names(layers):
        if kind == "bn":
            out[caffe] = {inverse_bn[s]: state[f"{ours}.{s}"].numpy() for s in inverse_bn}
        else:
            out[caffe] = {"weights": state[f"{ours}.weight"].numpy()}
            if f"{ours}.bias" in state:
                out[caffe]["bias"] = state[f"{ours}.bias"].numpy()
    return out
