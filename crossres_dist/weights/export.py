"""Export a trained network to ONNX (features and logits, dynamic batch) and TorchScript.

python -m crossres_dist.weights.export runs/x/checkpoints/best.pt --onnx student.onnx --torchscript student.ts
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from crossres_dist.errors import CrossresError
from crossres_dist.models import build_model
from crossres_dist.weights.loading import WeightsError, read_state


def load(path: Path) -> torch.nn.Module:
    state, spec = read_state(path)
    if spec is None:
        raise WeightsError(f"{path}: cannot tell the network's shape from this file")
    model = build_model(spec)
    model.load_state_dict(state, strict=False)
    return model.eval()


def export_onnx(model: torch.nn.Module, path: Path, size: int) -> None:
    example = torch.zeros(2, 3, size, size)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["image"],
        output_names=["feature", "logits"],
        dynamo=False,
        opset_version=17,
        dynamic_axes={"image": {0: "batch"}, "feature": {0: "batch"}, "logits": {0: "batch"}},
    )


def export_torchscript(model: torch.nn.Module, path: Path, size: int) -> None:
    traced = torch.jit.trace(model, torch.zeros(1, 3, size, size))
    traced.save(str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crossres-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--onnx", type=Path)
    parser.add_argument("--torchscript", type=Path)
    parser.add_argument("--size", type=int, default=224, help="input side used for tracing")
    args = parser.parse_args(argv)
    try:
        model = load(args.checkpoint)
    except CrossresError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.onnx:
        export_onnx(model, args.onnx, args.size)
        print(f"wrote {args.onnx}")
    if args.torchscript:
        export_torchscript(model, args.torchscript, args.size)
        print(f"wrote {args.torchscript}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
