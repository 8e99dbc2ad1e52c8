"""Loading network weights into the project's SE-ResNet, strictly, without running file code.

Accepted: a project checkpoint (``{"student": state_dict, "model_spec": ...}``), a plain
state_dict file, and the released VGGFace2 forms A, B and C (see ``crossres_dist.weights.forms``).
Every tensor of the network must be filled and every tensor of the file used, shapes equal;
otherwise the error names the first offending key.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from crossres_dist.models import ModelSpec
from crossres_dist.weights import dlib_dat
from crossres_dist.weights import forms as formats
from crossres_dist.weights.forms import FormatError as WeightsError


def resolve_path(name: str | Path) -> Path:
    """The weights file `name` stands for: a path, or the short name of a network that an
    installed package ships (dlib's face network: ``dlib_face_recognition_resnet_model_v1``);
    one line when neither exists, with the install hint for a known package that is missing."""
    path = Path(name)
    if path.is_file():
        return path
    packaged = dlib_dat.find_packaged(str(name))
    if packaged is not None:
        return packaged
    raise WeightsError(f"{path}: weights file not found")


def preflight(name: str | Path) -> Path:
    """A teacher's file checked before any data is touched: found (or its package named), and
    a dlib network parsed whole (22 MB, a fraction of a second), so that a damaged one is one
    line at once. Other forms are read where the networks are built."""
    path = resolve_path(name)
    if dlib_dat.is_dlib_dat(path):
        dlib_dat.read_network(path)
    return path


def read_state(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelSpec | None]:
    """The state_dict in `path` (or a packaged network's short name) in the project's key
    names, and the architecture if recorded."""
    path = resolve_path(path)
    if dlib_dat.is_dlib_dat(path):
        network = dlib_dat.read_network(path)
        return network.state, network.spec
    return formats.read_any(path)


def assign(
    model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    replace_classifier: bool = False,
) -> None:
    """Copy `state` into `model`; with `replace_classifier`, a classifier of another size is
    dropped (the model keeps its fresh one) instead of refused."""
    target = model.state_dict()
    classifier = set(getattr(model, "classifier_keys", ("fc.weight", "fc.bias")))
    # A backbone file (arcface_torch's backbone.pth) has no classifier at all: the network's
    # own new one is trained.
    without_classifier = not classifier & set(state)
    for key, value in state.items():
        if key not in target:
            if key in classifier:
                continue  # the network holds no classifier (PartialFC holds the classes)
            raise WeightsError(f"{source}: unexpected key '{key}' (not in the network)")
        if tuple(value.shape) != tuple(target[key].shape):
            if key in classifier and replace_classifier:
                continue
            hint = (
                (
                    " (another number of identities: set student.replace_classifier=true "
                    "to start a new classifier)"
                )
                if key in classifier
                else ""
            )
            raise WeightsError(
                f"{source}: key '{key}' has shape {tuple(value.shape)}, the network needs "
                f"{tuple(target[key].shape)}{hint}"
            )
    for key in target:
        if key not in state and not key.endswith("num_batches_tracked"):
            if key in classifier and without_classifier:
                continue
            raise WeightsError(f"{source}: missing key '{key}' (the network needs it)")
    filtered = {
        k: v
        for k, v in state.items()
        if k in target
        and not (replace_classifier and k in classifier and v.shape != target[k].shape)
    }
    model.load_state_dict(filtered, strict=False)


def load_into(model: torch.nn.Module, path: str | Path, replace_classifier: bool = False) -> None:
    state, _ = read_state(path)
    assign(model, state, str(path), replace_classifier)


def lineage_of(path: str | Path) -> list[dict]:
    """The data splits a project checkpoint and the checkpoints it started from were trained on,
    its own first. Empty for files that do not record them (released weights, state_dicts)."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return []
    try:
        # mmap: the record is read without reading the tensors.
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return []
    if not isinstance(obj, dict) or not isinstance(obj.get("splits"), dict):
        return []
    return [obj["splits"], *obj.get("lineage", [])]
