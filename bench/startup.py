"""Start-up against the size of the training set: an ImageFolder, a list file, RecordIO and
webdataset shards.

    python bench/startup.py [--samples 10000 100000 1000000] [--formats folder list rec wds]
                            [--ranks 2] [--repeats 3] [--work DIR]

For each size N it makes (once, under --work) N small real face JPEGs in identities of 116
(VGGFace2's mean), as an ImageFolder with a list file beside it, and packs them with
crossres-pack as RecordIO and as shards; then it launches a 2-rank training run of a tiny
network (torchrun, gloo) on each form, with a separate validation list of one image per 100
identities. It measures the time from the launch to the first optimizer step's log line, each
rank's peak resident memory (results.json) and the time rank 0 spent listing and checking the
data (its "data:" log line), and reports the median of --repeats launches (the formats in turn,
so that drift touches all alike). Folder and list runs use ``data.check=off`` (their fastest
start); packed sets read their index only whatever data.check says. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PER_IDENTITY = 116
FACES = REPO / "data" / "orl_att_faces"


def face_jpegs(count: int = 64) -> list[bytes]:
    """Small real faces (ORL, 46 x 56 px) as JPEG bytes, to repeat."""
    from PIL import Image

    out = []
    for path in sorted(FACES.rglob("*.png"))[:count]:
        buffer = io.BytesIO()
        with Image.open(path) as image:
            image.convert("RGB").resize((46, 56)).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def make_folder(root: Path, samples: int) -> None:
    """N images in identities of PER_IDENTITY, and train.txt listing them."""
    if (root / "done").is_file():
        return
    faces = face_jpegs()
    lines = []
    folder = root / "images"
    for i in range(samples):
        identity = f"id{i // PER_IDENTITY:07d}"
        (folder / identity).mkdir(parents=True, exist_ok=True)
        name = f"{identity}/{i % PER_IDENTITY:04d}.jpg"
        (folder / name).write_bytes(faces[i % len(faces)])
        lines.append(f"{name} {identity}\n")
    (root / "train.txt").write_text("".join(lines))
    identities = sorted({line.split()[1] for line in lines})
    (root / "val.txt").write_text(
        "".join(f"{name}/0000.jpg {name}\n" for name in identities[::100])
    )
    (root / "done").write_text("")


def pack(root: Path, kind: str) -> Path:
    out = root / kind
    if not out.exists():
        subprocess.run(
            [sys.executable, "-m", "crossres_dist.data.pack", str(root / "images"), str(out),
             "--format", kind, "--per-shard", "10000"],
            check=True, cwd=REPO, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    return out


def time_to_first_step(train: str, val: str, root: str, run_dir: Path, ranks: int) -> dict:
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    args = [
        "--config", str(REPO / "tests" / "tiny.yaml"),
        f"run.output_dir={run_dir.parent}", f"run.name={run_dir.name}",
        "run.stage=pretrain", "teacher.checkpoint=", "checkpoint.resume=never",
        f"data.train={train}", f"data.val={val}", f"data.root={root}", "data.test=",
        "data.check=off", "data.backend=torchvision", "train.precision=fp32",
        "train.max_steps=1", "train.log_every=1", "val.every=1000",
        "optim.global_batch=16", "data.micro_batch=8", "val.report_resolutions=[8]",
        "val.min_images=1",
    ]  # fmt: skip
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={ranks}", "-m", "crossres_dist.train", *args,
    ]  # fmt: skip
    log = run_dir.with_suffix(".log")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        first_step = None
        while process.poll() is None:
            if first_step is None and "step 1/1" in log.read_text(errors="replace"):
                first_step = time.perf_counter() - start
            time.sleep(0.05)
    if process.returncode != 0:
        raise RuntimeError(f"{train}: training exited {process.returncode}; see {log}")
    if first_step is None and "step 1/1" in log.read_text(errors="replace"):
        first_step = time.perf_counter() - start
    result = json.loads((run_dir / "results.json").read_text())
    listed = re.search(r"listed and checked in ([\d.]+) s", log.read_text(errors="replace"))
    return {
        "first_step_s": first_step,
        "data_s": float(listed[1]) if listed else None,
        "peak_rss_bytes": max(result["peak_rss_bytes_per_rank"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--formats", nargs="+", default=["folder", "list", "rec", "wds"])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-startup")
    parser.add_argument("--repeats", type=int, default=3, help="launches per cell (median)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()
    rows = []
    for samples in args.samples:
        root = args.work / f"n{samples}"
        make_folder(root, samples)
        trains = {
            "folder": str(root / "images"),
            "list": str(root / "train.txt"),
            **{kind: str(pack(root, kind)) for kind in ("rec", "wds") if kind in args.formats},
        }
        launches: dict[str, list[dict]] = {kind: [] for kind in args.formats}
        for _ in range(args.repeats):  # the formats in turn, so that drift touches all alike
            for kind in args.formats:
                launches[kind].append(
                    time_to_first_step(
                        trains[kind],
                        str(root / "val.txt"),
                        str(root / "images"),
                        root / "runs" / kind,
                        args.ranks,
                    )  # fmt: skip
                )
                print(json.dumps({"samples": samples, "format": kind, **launches[kind][-1]}),
                      file=sys.stderr)  # fmt: skip
        for kind in args.formats:
            median = {
                key: statistics.median(m[key] for m in launches[kind]) for key in launches[kind][0]
            }
            rows.append({"samples": samples, "format": kind, **median, "launches": launches[kind]})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(
        f"Start to the first optimizer step, {args.ranks} ranks (torchrun, gloo), a tiny network, "
        f"{PER_IDENTITY} images per identity; folder and list with data.check=off, packed sets "
        f"read their index only; peak resident memory of the largest rank; medians of "
        f"{args.repeats} launches\n"
    )
    print(
        "| samples | format | start to step 1 (s) | of which listing and checking the data (s) "
        "| peak memory per rank (MiB) |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['samples']:,} | {r['format']} | {r['first_step_s']:.1f} | {r['data_s']:.1f} | "
            f"{r['peak_rss_bytes'] / 2**20:,.0f} |"
        )


if __name__ == "__main__":
    main()
