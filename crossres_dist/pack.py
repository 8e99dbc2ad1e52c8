"""Pack an ImageFolder or a list file into a packed face set (pipelines/packed.py).

    crossres-pack DATA OUT --format rec|wds [--root R] [--per-shard 10000]

``rec``: insightface's RecordIO (train.rec, train.idx, property), with the header record and one
record per identity, as MS1M/Glint/WebFace are distributed; ``wds``: webdataset tar shards
(shard-NNNNNN.tar of KEY.jpg + KEY.cls) with wds-index.npz. Both keep the folder's identity
names (identities.json) and its order of images, grouped by identity, so that training on the
packed set is training on the folder. OUT must not exist yet: nothing already written is lost.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.packed import write_recordio, write_webdataset
from pipelines.sources import DataError, load_source

from .errors import CrossresError


def pack(data: str, out: Path, kind: str, root: str = "", per_shard: int = 10_000) -> int:
    """Pack `data` into `out`; returns the number of images."""
    if out.exists() and any(out.iterdir()):
        raise CrossresError(f"{out}: exists and is not empty; choose a new folder")
    dataset = load_source(data, root)
    # Grouped by identity, in the source's order within each (a folder's already are): the
    # identity records of RecordIO need contiguous ranges.
    samples = sorted(dataset.samples, key=lambda s: s.label)
    from tqdm import tqdm

    bar = tqdm(
        samples, unit="img", desc=f"packing {len(samples)} images as {kind}", file=sys.stderr
    )

    def read(sample):
        with open(sample.path, "rb") as f:
            return f.read()

    if kind == "rec":
        write_recordio(((read(s), s.label) for s in bar), len(samples), dataset.identities, out)
    else:
        items = ((read(s), s.label, Path(s.path).suffix.lower().lstrip(".") or "jpg") for s in bar)
        write_webdataset(items, dataset.identities, out, per_shard)
    bar.close()
    return len(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="an ImageFolder directory or a list file")
    parser.add_argument("out", type=Path, help="the packed set's folder (must not exist)")
    parser.add_argument("--format", choices=("rec", "wds"), required=True)
    parser.add_argument("--root", default="", help="root for list-file paths")
    parser.add_argument("--per-shard", type=int, default=10_000, help="wds: images per shard")
    args = parser.parse_args(argv)
    try:
        count = pack(args.data, args.out, args.format, args.root, args.per_shard)
    except (CrossresError, DataError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"packed {count} images into {args.out} ({args.format})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
