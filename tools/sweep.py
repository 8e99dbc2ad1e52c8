"""Grid sweeps for SLURM job arrays.

A sweep file names a base config, overrides common to every point, and a grid::

    base: configs/demo.yaml
    name: lambda-seeds
    overrides: [train.epochs=10]
    grid:
      method.lambda_feat: [0.0, 0.1]
      run.seed: [0, 1, 2]

``python -m tools.sweep point FILE INDEX`` prints the training arguments of point INDEX
(one per line; slurm/sweep.sh passes them on), ``size FILE`` the number of points, and
``summary FILE`` gathers every point's ``results.json`` into one markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

import yaml

from crossres_dist.config import ConfigError, load_config


def read_sweep(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: sweep file not found")
    sweep = yaml.safe_load(path.read_text()) or {}
    unknown = set(sweep) - {"base", "name", "overrides", "grid", "output_dir"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown key '{sorted(unknown)[0]}' (base, name, overrides, grid, output_dir)"
        )
    for key in ("base", "name", "grid"):
        if key not in sweep:
            raise ConfigError(f"{path}: missing key '{key}'")
    if not isinstance(sweep["grid"], dict) or not all(
        isinstance(v, list) and v for v in sweep["grid"].values()
    ):
        raise ConfigError(f"{path}: grid must map section.key to a non-empty list of values")
    return sweep


def points(sweep: dict) -> list[dict[str, object]]:
    keys = list(sweep["grid"])
    return [dict(zip(keys, values)) for values in itertools.product(*sweep["grid"].values())]


def _value(v: object) -> str:
    return (
        json.dumps(v) if isinstance(v, list) else str(v).lower() if isinstance(v, bool) else str(v)
    )


def point_args(path: Path, index: int, extra: list[str] | tuple = ()) -> list[str]:
    sweep = read_sweep(path)
    grid = points(sweep)
    if not 0 <= index < len(grid):
        raise ConfigError(
            f"{path}: index {index} out of range: the grid has {len(grid)} points (0-{len(grid) - 1})"
        )
    point = grid[index]
    name = f"{index:03d}_" + "_".join(f"{k.split('.')[-1]}={_value(v)}" for k, v in point.items())
    output_dir = sweep.get("output_dir", f"runs/{sweep['name']}")
    args = [
        "--config",
        sweep["base"],
        *sweep.get("overrides", []),
        *(f"{k}={_value(v)}" for k, v in point.items()),
        f"run.output_dir={output_dir}",
        f"run.name={name}",
    ]
    # Refuse a bad point before any job starts: every rule runs when the configuration is built.
    load_config(args[1], [*args[2:], *extra])
    return args


def summary(path: Path) -> str:
    sweep = read_sweep(path)
    output_dir = Path(sweep.get("output_dir", f"runs/{sweep['name']}"))
    rows, metrics = [], set()
    for index, point in enumerate(points(sweep)):
        args = point_args(path, index, ["teacher.checkpoint=unchecked"])
        run_dir = output_dir / args[-1].split("=", 1)[1]
        result_file = run_dir / "results.json"
        result = json.loads(result_file.read_text()) if result_file.is_file() else None
        values = {k: v for k, v in (result or {}).get("final", {}).items() if k.endswith("top1")}
        metrics.update(values)
        rows.append((index, point, values, result is not None))
    metrics = sorted(metrics)
    keys = list(sweep["grid"])
    header = ["#", *keys, *(m.replace("val/", "").replace("/top1", " top-1") for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, point, values, done in rows:
        cells = [str(index), *(_value(point[k]) for k in keys)]
        cells += [
            f"{values[m]:.4f}" if m in values else ("-" if done else "not finished")
            for m in metrics
        ]
        lines.append("| " + " | ".join(cells) + " |")
    # Mean over the other axes for each value of the first grid key (e.g. lambda over seeds).
    if len(keys) > 1 and metrics:
        lines += ["", f"Mean (standard deviation) over the other axes, by {keys[0]}:", ""]
        lines.append("| " + " | ".join([keys[0], *header[1 + len(keys) :]]) + " |")
        lines.append("|" + "---|" * (1 + len(metrics)))
        for value in sweep["grid"][keys[0]]:
            group = [v for _, p, v, _ in rows if p[keys[0]] == value]
            cells = [_value(value)]
            for m in metrics:
                xs = [v[m] for v in group if m in v]
                sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
                cells.append(f"{statistics.mean(xs):.4f} ({sd:.4f})" if xs else "-")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crossres-sweep", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("point")
    p.add_argument("sweep", type=Path)
    p.add_argument("index", type=int)
    p.add_argument("extra", nargs="*", help="overrides the job adds (checked with the point)")
    for name in ("size", "summary"):
        sub.add_parser(name).add_argument("sweep", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "point":
            print("\n".join(point_args(args.sweep, args.index, args.extra)))
        elif args.command == "size":
            print(len(points(read_sweep(args.sweep))))
        else:
            print(summary(args.sweep))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
