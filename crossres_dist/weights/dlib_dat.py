"""dlib's serialised networks (``dlib_face_recognition_resnet_model_v1.dat``), read with numpy:
no dlib, and nothing in the file is run.

The format, from dlib's sources (``dlib/serialize.h``, ``dlib/cuda/tensor.h``, ``dlib/dnn/core.h``,
``layers.h``, ``input.h``, ``loss.h``):
- an integer is one byte (its length in bytes, ``0x80`` when negative) then that many bytes, little
  end first; a string is its length then its bytes; a bool is the character ``'0'`` or ``'1'``;
- a float is two integers, a mantissa and a power of two;
- a tensor is version 2, four integers (samples, k, rows, columns), then that many 4-byte
  little-endian IEEE floats;
- a network is written from the outside in: every wrapper writes its version and then what it
  wraps, and a computational layer writes its details after that. So the file holds all the
  wrappers' versions top-down, then the input layer, then every layer's details bottom-up.

The reader walks that nesting for the one network it knows (``examples/
dnn_face_recognition_ex.cpp``, any depth and width of that shape): a layer that is not the one
the architecture expects, a truncated file or a damaged number is refused in one line that names
the layer and the byte offset.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from crossres_dist.models import ModelSpec, spec_of_state
from crossres_dist.models.dlib_resnet import LEVEL_WIDTHS
from crossres_dist.weights.forms import FormatError

# The file that face_recognition_models ships, found by this name (or its stem).
PACKAGED_NETWORK = "dlib_face_recognition_resnet_model_v1.dat"
PACKAGE = "face_recognition_models"
# dlib's float special values (float_details): an exponent of these is inf, -inf, nan.
SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
# Levels of the released network: blocks per level, its stem width and its descriptor.
RELEASED_LEVELS = (3, 4, 3, 3, 1)


class DamagedDat(FormatError):
    """A .dat file that breaks off or holds something else than the network expects."""


class Stream:
    """dlib's primitive types from a byte string, each failure naming the byte offset."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data, self.pos, self.source = data, 0, source
        self.where = "the file's start"

    def fail(self, what: str) -> DamagedDat:
        return DamagedDat(f"{self.source}: {what} at byte {self.pos} ({self.where})")

    def take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise self.fail(f"truncated: {count} bytes needed, {len(self.data) - self.pos} left")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def integer(self) -> int:
        head = self.take(1)[0]
        size = head & 0x0F
        if size > 8 or head & 0x70:
            self.pos -= 1
            raise self.fail(f"not a dlib integer (control byte 0x{head:02x})")
        value = int.from_bytes(self.take(size), "little")
        return -value if head & 0x80 else value

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        if exponent in SPECIAL_EXPONENTS:
            return SPECIAL_EXPONENTS[exponent]
        return math.ldexp(mantissa, exponent)

    def string(self) -> str:
        length = self.integer()
        if not 0 <= length <= 256:
            raise self.fail(f"not a layer name (length {length})")
        return self.take(length).decode("latin1")

    def boolean(self) -> bool:
        char = self.take(1)
        if char not in (b"0", b"1"):
            self.pos -= 1
            raise self.fail(f"not a dlib bool (byte 0x{char[0]:02x})")
        return char == b"1"

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            raise self.fail(f"tensor version {version}, this reader knows version 2")
        shape = tuple(self.integer() for _ in range(4))
        if any(d < 0 for d in shape):
            raise self.fail(f"negative tensor shape {shape}")
        count = int(np.prod(shape))
        return np.frombuffer(self.take(4 * count), dtype="<f4").reshape(shape).copy()

    def expect_name(self, wanted: str) -> None:
        start = self.pos
        name = self.string()
        if name != wanted:
            self.pos = start
            raise self.fail(f"found layer {name!r} where the network has {wanted}")

    def expect_version(self, wanted: tuple[int, ...], what: str) -> int:
        start = self.pos
        version = self.integer()
        if version not in wanted:
            self.pos = start
            raise self.fail(f"{what} version {version}, expected {' or '.join(map(str, wanted))}")
        return version


@dataclass
class Layer:
    """One computational layer of the plan: its dlib name, where its tensors go in the
    project's state dict, and what the architecture says its sizes are."""

    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc
    key: str = ""
    sizes: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind} {self.key}" if self.key else self.kind


def layer_plan(layers: tuple[int, ...], width: int, embedding: int) -> list[Layer | str]:
    """The network top-down as dlib nests it: ``Layer`` for a computational layer (a
    ``add_layer``), "tag" and "skip" for the wrappers that only route, ending with the stem's
    convolution (which sits on the input layer)."""
    plan: list[Layer | str] = [
        Layer("fc", "fc", {"outputs": embedding, "inputs": width * LEVEL_WIDTHS[-1]}),
        Layer("avg_pool", "", {"window": 0, "stride": 1}),
    ]
    channels = [width * m for m in LEVEL_WIDTHS]
    for level in reversed(range(len(layers))):
        cout = channels[level]
        cin = channels[level - 1] if level else width
        for block in reversed(range(layers[level])):
            down = level > 0 and block == 0
            key = f"layer{level + 1}.{block}"
            plan.append(Layer("relu"))
            plan.append(Layer("add_prev"))
            if down:
                plan += [Layer("avg_pool", "", {"window": 2, "stride": 2}), "skip", "tag"]
            plan += [
                Layer("affine", f"{key}.affine2", {"channels": cout}),
                Layer(
                    "con",
                    f"{key}.conv2",
                    {"filters": cout, "inputs": cout, "kernel": 3, "stride": 1},
                ),
                Layer("relu"),
                Layer("affine", f"{key}.affine1", {"channels": cout}),
                Layer(
                    "con",
                    f"{key}.conv1",
                    {
                        "filters": cout,
                        "inputs": cin if block == 0 else cout,
                        "kernel": 3,
                        "stride": 2 if down else 1,
                    },
                ),
                "tag",
            ]
    plan += [
        Layer("max_pool", "", {"window": 3, "stride": 2}),
        Layer("relu"),
        Layer("affine", "affine1", {"channels": width}),
        Layer("con", "conv1", {"filters": width, "inputs": 3, "kernel": 7, "stride": 2}),
    ]
    return plan


# The version string each layer writes first, as the released file has them.
DLIB_NAMES = {
    "con": "con_4",
    "affine": "affine_",
    "relu": "relu_",
    "max_pool": "max_pool_2",
    "avg_pool": "avg_pool_2",
    "add_prev": "add_prev_",
    "fc": "fc_2",
}


def _expect(stream: Stream, layer: Layer, found: dict, wanted: dict) -> None:
    for name, value in wanted.items():
        if found[name] != value:
            raise stream.fail(f"{layer.name} has {name} {found[name]}, the network needs {value}")


def _alias(stream: Stream) -> tuple[int, ...]:
    stream.expect_version((1,), "alias tensor")
    return tuple(stream.integer() for _ in range(4))


def _pool(stream: Stream, layer: Layer) -> None:
    rows, cols, stride_y, stride_x, pad_y, pad_x = (stream.integer() for _ in range(6))
    window, stride = layer.sizes["window"], layer.sizes["stride"]
    found = {"window": (rows, cols), "stride": (stride_y, stride_x), "padding": (pad_y, pad_x)}
    _expect(
        stream,
        layer,
        found,
        {"window": (window, window), "stride": (stride, stride), "padding": (0, 0)},
    )


def _con(stream: Stream, layer: Layer, state: dict) -> None:
    params = stream.tensor().reshape(-1)
    filters, rows, cols, stride_y, stride_x, pad_y, pad_x = (stream.integer() for _ in range(7))
    kernel_shape, bias_shape = _alias(stream), _alias(stream)
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        stream.real()
    s = layer.sizes
    pad = s["kernel"] // 2 if s["stride"] == 1 else 0
    found = {
        "filters": filters,
        "kernel": (rows, cols),
        "stride": (stride_y, stride_x),
        "padding": (pad_y, pad_x),
        "weights": kernel_shape,
    }
    wanted = {
        "filters": s["filters"],
        "kernel": (s["kernel"], s["kernel"]),
        "stride": (s["stride"], s["stride"]),
        "padding": (pad, pad),
        "weights": (s["filters"], s["inputs"], s["kernel"], s["kernel"]),
    }
    _expect(stream, layer, found, wanted)
    weights = int(np.prod(kernel_shape))
    if bias_shape != (1, filters, 1, 1) or params.size != weights + filters:
        raise stream.fail(
            f"con {layer.key} holds {params.size} values, not {weights} + {filters} biases"
        )
    state[f"{layer.key}.weight"] = params[:weights].reshape(kernel_shape)
    state[f"{layer.key}.bias"] = params[weights:]


def _affine(stream: Stream, layer: Layer, state: dict) -> None:
    params = stream.tensor().reshape(-1)
    gamma, beta = _alias(stream), _alias(stream)
    mode = stream.integer()
    channels = layer.sizes["channels"]
    # mode 0 is CONV_MODE, per channel (FC_MODE, 1, would be per value); gamma then beta.
    _expect(
        stream, layer, {"mode": mode, "values": params.size}, {"mode": 0, "values": 2 * channels}
    )
    if gamma != (1, channels, 1, 1) or beta != gamma:
        raise stream.fail(f"affine {layer.key} has scale {gamma} and shift {beta}, not per channel")
    state[f"{layer.key}.weight"] = params[:channels]
    state[f"{layer.key}.bias"] = params[channels:]


def _fc(stream: Stream, layer: Layer, state: dict) -> None:
    outputs, inputs = stream.integer(), stream.integer()
    params = stream.tensor().reshape(-1)
    _alias(stream), _alias(stream)  # the weights' and (absent) biases' views of params
    bias_mode = stream.integer()
    for _ in range(4):
        stream.real()
    s = layer.sizes
    found = {"outputs": outputs, "inputs": inputs, "bias": bias_mode, "values": params.size}
    _expect(
        stream,
        layer,
        found,
        {
            "outputs": s["outputs"],
            "inputs": s["inputs"],
            "bias": 1,
            "values": s["inputs"] * s["outputs"],
        },
    )
    # dlib computes x W with W of (inputs, outputs); a torch Linear holds W transposed.
    state[f"{layer.key}.weight"] = params.reshape(inputs, outputs).T.copy()


def _details(stream: Stream, layer: Layer, state: dict) -> None:
    stream.where = f"layer {layer.name}"
    stream.expect_name(DLIB_NAMES[layer.kind])
    if layer.kind == "con":
        _con(stream, layer, state)
    elif layer.kind == "affine":
        _affine(stream, layer, state)
    elif layer.kind == "fc":
        _fc(stream, layer, state)
    elif layer.kind in ("max_pool", "avg_pool"):
        _pool(stream, layer)


def _layer_state(stream: Stream, bottom: bool, version: int) -> None:
    """What an add_layer writes after its details: three flags and its training buffers."""
    for _ in range(3):
        stream.boolean()
    for _ in range(2):  # x_grad, cached_output
        stream.tensor()
    if bottom:
        stream.tensor()  # grad_final
        if version >= 3:
            stream.integer()  # sample expansion factor
    elif version == 2:
        stream.tensor()  # params_grad


@dataclass
class DlibNetwork:
    state: dict[str, torch.Tensor]
    spec: ModelSpec
    # What the file says of training and input, for the run-time line and the checks.
    mean_rgb: tuple[float, float, float]
    input_size: int
    margin: float
    distance_threshold: float


def read_network(
    path: str | Path,
    layers: tuple[int, ...] = RELEASED_LEVELS,
    width: int = 32,
    embedding: int = 128,
) -> DlibNetwork:
    """The network in a dlib .dat file, as a project state dict and spec. One DamagedDat line
    that names the layer and the byte offset for anything else."""
    path = Path(path)
    stream = Stream(path.read_bytes(), str(path))
    stream.where = "the loss layer"
    stream.expect_version((1,), "add_loss_layer")
    stream.expect_name("loss_metric_2")
    margin, threshold = stream.real(), stream.real()
    plan = layer_plan(layers, width, embedding)
    versions = []
    for entry in plan:
        if isinstance(entry, str):
            stream.where = f"the {entry} wrapper"
            stream.expect_version((1,), entry)
        else:
            stream.where = f"layer {entry.name}"
            bottom = entry is plan[-1]
            versions.append(stream.expect_version((2, 3) if bottom else (1, 2), "add_layer"))
    stream.where = "the input layer"
    stream.expect_name("input_rgb_image_sized")
    mean_rgb = (stream.real(), stream.real(), stream.real())
    rows, cols = stream.integer(), stream.integer()
    if rows != cols:
        raise stream.fail(f"a {rows} x {cols} input, the network takes square chips")
    state: dict[str, np.ndarray] = {}
    computational = [e for e in plan if isinstance(e, Layer)]
    for layer, version in zip(reversed(computational), reversed(versions)):
        _details(stream, layer, state)
        _layer_state(stream, layer is computational[-1], version)
    if stream.pos != len(stream.data):
        stream.where = "the end of the network"
        raise stream.fail(f"{len(stream.data) - stream.pos} bytes left over")
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    # The family (models/) recognises its state dict; the file adds its input side and means.
    spec = replace(
        spec_of_state(tensors),
        input_size=rows,
        mean=tuple(float(np.float32(m)) for m in mean_rgb),
    )
    return DlibNetwork(tensors, spec, mean_rgb, rows, margin, threshold)


def is_dlib_dat(path: Path) -> bool:
    """A dlib network file: it starts with the loss layer's version and name."""
    with open(path, "rb") as f:
        head = f.read(24)
    return head[:3] == b"\x01\x01\x01" and b"loss_" in head


def packaged_model(file_name: str, what: str, install: str) -> Path:
    """A model file of the installed face_recognition_models package (dlib's networks), found
    without importing it (its __init__ needs pkg_resources); one line saying how to install it
    when it is missing."""
    found = importlib.util.find_spec(PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise FormatError(
            f"{what} ships in the {PACKAGE} package, which is not installed: {install}"
        )
    path = Path(list(found.submodule_search_locations)[0]) / "models" / file_name
    if not path.is_file():
        raise FormatError(f"{what}: {PACKAGE} is installed but has no {path}")
    return path


def find_packaged(name: str) -> Path | None:
    """The path of `name` (dlib's network, by file name or stem) in face_recognition_models;
    None when the name is not that network."""
    if name not in (PACKAGED_NETWORK, Path(PACKAGED_NETWORK).stem):
        return None
    return packaged_model(
        PACKAGED_NETWORK,
        f"{name}: dlib's face network",
        f"pip install {PACKAGE}==0.3.0 (or give the .dat file's path)",
    )
