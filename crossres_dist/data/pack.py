"""Pack an ImageFolder or a list file into a packed face set (pipelines/packed.py), or index a
packed set that another tool wrote.

    crossres-pack DATA OUT --format rec|wds [--root R] [--per-shard 10000] [--size 112]
    crossres-pack --pairs PAIRS.tsv OUT.bin --format bin [--root R] [--size 112] [--bin-form numpy]
    crossres-pack --index DIR

``rec``: insightface's RecordIO (train.rec, train.idx, property), with the header record and one
record per identity, as MS1M/Glint/WebFace are distributed; ``wds``: webdataset tar shards
(shard-NNNNNN.tar of KEY.jpg + KEY.cls) with wds-index.npz. Both keep the folder's identity
names (identities.json) and its order of images, grouped by identity, so that training on the
packed set is training on the folder. OUT must not exist yet: nothing already written is lost.

``--size S`` stores every face as an S x S JPEG (quality 95, as insightface's im2rec), taken
from the centre square of the image: the faces are not re-aligned (that needs landmarks), so
give it faces that are already aligned and cropped, as insightface's trainers expect at 112.

``--pairs PAIRS.tsv --format bin`` writes an insightface verification set (``OUT.bin``: the
pickle of ``(bins, issame_list)`` that insightface's lfw2pack writes) from a pairs file, one pair
per line, ``IMAGE_A<TAB>IMAGE_B<TAB>1|0`` (paths relative to the file or --root;
``python -m crossres_dist.verification.pairs`` makes LFW-style ones). The images are stored as
encoded bytes, or with ``--bin-form numpy`` as 1-D uint8 arrays, as some releases hold them.

``--index DIR`` writes the index that start-up reads for a set written by another tool: the
``train.idx`` of a ``train.rec`` that has none (rec2shufrec), or ``wds-index.npz`` for tar
shards (webdataset's ShardWriter). It never replaces an index.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections import Counter
from pathlib import Path

from PIL import Image

from crossres_dist.errors import CrossresError
from pipelines.packed import (
    WDS_INDEX,
    PackedError,
    index_recordio,
    index_webdataset,
    write_property,
    write_recordio,
    write_webdataset,
)
from pipelines.sources import DataError, load_source

JPEG_QUALITY = 95


def centre_square(data: bytes, size: int) -> bytes:
    """The image's centre square, resized to size x size, as a JPEG."""
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        square = image.crop((left, top, left + side, top + side))
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    square.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def pack(
    data: str, out: Path, kind: str, root: str = "", per_shard: int = 10_000, size: int = 0
) -> int:
    """Pack `data` into `out`; returns the number of images."""
    if out.exists() and any(out.iterdir()):
        raise CrossresError(f"{out}: exists and is not empty; choose a new folder")
    dataset = load_source(data, root)
    # Grouped by identity, in the source's order within each (a folder's already are): the
    # identity records of RecordIO need contiguous ranges.
    samples = sorted(dataset.samples, key=lambda s: s.label)
    from tqdm import tqdm

    resized = f" at {size}x{size} (centre square, not re-aligned)" if size else ""
    bar = tqdm(
        samples,
        unit="img",
        desc=f"packing {len(samples)} images as {kind}{resized}",
        file=sys.stderr,
    )
    sizes: Counter = Counter()

    def read(sample):
        with open(sample.path, "rb") as f:
            encoded = f.read()
        if size:
            sizes[size, size] += 1
            return centre_square(encoded, size)
        with Image.open(io.BytesIO(encoded)) as image:
            sizes[image.height, image.width] += 1  # the header only: no decode
        return encoded

    if kind == "rec":
        items = ((read(s), s.label) for s in bar)
        write_recordio(items, len(samples), dataset.identities, out)
        if len(sizes) == 1:
            write_property(out, len(dataset.identities), next(iter(sizes)))
        else:
            print(
                f"{out}/property: 0,0 for the image size: the images have {len(sizes)} sizes "
                "(insightface's trainers expect one, 112x112: pack with --size 112)",
                file=sys.stderr,
            )
    else:
        items = ((read(s), s.label, Path(s.path).suffix.lower().lstrip(".") or "jpg") for s in bar)
        if size:
            items = ((image, label, "jpg") for image, label, _ in items)
        write_webdataset(items, dataset.identities, out, per_shard)
    bar.close()
    return len(samples)


def pack_pairs(pairs_file: str, out: Path, root: str = "", size: int = 0, form: str = "bytes"):
    """A .bin verification set of the pairs in `pairs_file`; returns the number of pairs."""
    from crossres_dist.verification import write_bin
    from crossres_dist.verification.pairs import read_pairs

    if out.suffix != ".bin":
        raise CrossresError(f"{out}: a verification set's name ends in .bin")
    if out.exists():
        raise CrossresError(f"{out}: exists already; choose a new name")
    pairs = read_pairs(pairs_file, root)
    images = []
    for a, b, _ in pairs:
        for path in (a, b):
            encoded = Path(path).read_bytes()
            images.append(centre_square(encoded, size) if size else encoded)
    write_bin(out, images, [same for _, _, same in pairs], form)
    return len(pairs)


def index(target: Path) -> str:
    """Index a packed set written by another tool; what was written, as one line."""
    rec = target if target.suffix == ".rec" else target / "train.rec"
    shards = target.is_dir() and any(target.glob("*.tar"))
    index = rec.with_suffix(".idx") if rec.is_file() else target / WDS_INDEX
    if (rec.is_file() or shards) and index.exists():
        raise CrossresError(f"{index}: exists already; nothing to index")
    if rec.is_file():
        count = index_recordio(rec)
        return f"indexed {count} records of {rec} in {index}"
    if shards:
        count = index_webdataset(target)
        return f"indexed {count} samples of the shards in {target} in {target}/wds-index.npz"
    raise CrossresError(f"{target}: neither a train.rec nor a folder of .tar shards")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", help="an ImageFolder directory or a list file")
    parser.add_argument(
        "out", nargs="?", type=Path, help="the packed set's folder (must not exist)"
    )
    parser.add_argument("--format", choices=("rec", "wds", "bin"))
    parser.add_argument(
        "--pairs", metavar="PAIRS.tsv", help="write OUT.bin, a verification set of these pairs"
    )
    parser.add_argument(
        "--bin-form",
        choices=("bytes", "numpy"),
        default="bytes",
        help="bin: images as bytes (default) or as 1-D uint8 arrays",
    )
    parser.add_argument("--root", default="", help="root for list-file paths")
    parser.add_argument("--per-shard", type=int, default=10_000, help="wds: images per shard")
    parser.add_argument(
        "--size", type=int, default=0, help="store S x S faces (the centre square, JPEG 95)"
    )
    parser.add_argument(
        "--index",
        type=Path,
        metavar="DIR",
        help="index a set another tool wrote (a train.rec without train.idx, or .tar shards)",
    )
    args = parser.parse_args(argv)
    if args.pairs is not None:
        # crossres-pack --pairs PAIRS.tsv OUT.bin: the one positional is OUT.
        args.out = Path(args.data) if args.data and not args.out else args.out
        if args.format != "bin" or args.out is None:
            parser.error("--pairs PAIRS.tsv takes OUT.bin and --format bin")
    elif args.format == "bin":
        parser.error("--format bin writes a verification set: give --pairs PAIRS.tsv")
    if args.index is not None:
        if args.data or args.out:
            parser.error("--index DIR takes no DATA or OUT")
    elif args.pairs is None and not (args.data and args.out and args.format):
        parser.error("DATA, OUT and --format are required (or --index DIR)")
    if args.size < 0:
        parser.error(f"--size {args.size}: a side in pixels, or 0 to keep each image's size")
    try:
        if args.index is not None:
            print(index(args.index))
            return 0
        if args.pairs is not None:
            count = pack_pairs(args.pairs, args.out, args.root, args.size, args.bin_form)
            print(f"packed {count} pairs into {args.out} (bin, images as {args.bin_form})")
            return 0
        count = pack(args.data, args.out, args.format, args.root, args.per_shard, args.size)
    except (CrossresError, DataError, PackedError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"packed {count} images into {args.out} ({args.format})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
