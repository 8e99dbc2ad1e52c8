"""Convert released VGGFace2 SE-ResNet-50 weights (forms A, B, C) or any checkpoint of ours into
a plain state_dict with the project's key names, usable as teacher.checkpoint or student.init.

    python -m crossres_dist.weights.convert senet50_ft_pytorch.pth senet50_ft.pt

Nothing in the input file is executed (see crossres_dist/weights/forms.py); the output loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from crossres_dist.errors import CrossresError
from crossres_dist.models import build_model
from crossres_dist.weights.loading import WeightsError, assign, read_state


def convert(source: Path, target: Path) -> dict:
    state, spec = read_state(source)
    if spec is None:
        raise WeightsError(f"{source}: cannot tell the network's shape from this file")
    model = build_model(spec)
    assign(model, state, str(source))  # every key used, every tensor filled, shapes equal
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"student": model.state_dict(), "model_spec": spec.as_dict()},
        target,
    )
    return {
        "arch": spec.arch,
        "layers": list(spec.layers),
        "width": spec.width,
        "num_classes": spec.num_classes,
        "tensors": len(model.state_dict()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crossres-convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    try:
        info = convert(args.source, args.target)
    except CrossresError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.target}: {info['arch']} {info['layers']} width {info['width']}, "
        f"{info['num_classes']} identities, {info['tensors']} tensors"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
