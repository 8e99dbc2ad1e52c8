"""Packed face sets: insightface's RecordIO (``train.rec`` + ``train.idx``) and webdataset tar
shards, read by offset, so that start-up reads an index and not millions of files.

A packed sample's ``path`` is a locator: ``/data/ms1m/train.rec@123456`` (the record at that byte
offset) or ``/data/wds/shard-000007.tar@51200:8431`` (that many bytes of the tar at that
offset). Both backends read its encoded bytes with ``read_encoded``; everything keyed by path
(the plans, the files excluded during a run, the check manifest) works unchanged.

RecordIO, as insightface's ``arcface_torch`` reads it (MXNet's indexed RecordIO):
- ``train.idx``: one ``key<TAB>offset`` line per record;
- a record: the magic 0xced7230a, a length word (its top 3 bits a continuation flag: a payload
  holding the magic at a 4-byte boundary is split there), the payload, zero padding to 4 bytes;
- a payload: an IRHeader (flag uint32, label float32, id uint64, id2 uint64), then ``flag``
  float32 labels if flag > 0, then the image bytes;
- record 0 is a header whose labels (a, b) say that records 1..a-1 are images and a..b-1
  identities, each identity record's labels giving the [start, end) of its images. Labels then
  come from the identity records (one read per identity, not per image); a set without them
  (b == a) has its image headers read instead.

webdataset: ``shard-NNNNNN.tar`` files whose samples are ``KEY.jpg`` (or .png) and ``KEY.cls``
(the label as text), with ``wds-index.npz`` listing every sample's shard, data offset, size and
label (what ``crossres-pack`` writes), so that start-up reads the index only.

Both may carry ``identities.json`` (identity name -> label, as the packed folder had it), so
that a set packed from a folder splits and trains exactly as the folder does.
"""

from __future__ import annotations

import io
import json
import re
import struct
import tarfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
IR_HEADER = struct.Struct("<IfQQ")
LOCATOR = re.compile(r"^(?P<container>.+\.(?:rec|tar))@(?P<offset>\d+)(?::(?P<size>\d+))?$")
WDS_INDEX = "wds-index.npz"
IDENTITIES = "identities.json"


class PackedError(ValueError):
    """A packed set that cannot be read: the message names the file (and the offset)."""


# ------------------------------------------------------------------ locators and bytes
def parse_locator(path: str) -> tuple[str, int, int | None] | None:
    """(container, offset, size or None) of a packed sample's path; None for a plain file."""
    match = LOCATOR.match(path)
    if match is None:
        return None
    size = match["size"]
    return match["container"], int(match["offset"]), int(size) if size else None


def container_of(path: str) -> str:
    """The file on disk that holds `path`'s bytes (itself for a plain file)."""
    located = parse_locator(path)
    return located[0] if located else path


def read_encoded(path: str) -> bytes:
    """The encoded image of a sample: a whole plain file, a tar member's bytes, or a record's
    image bytes (its IRHeader and labels stripped)."""
    located = parse_locator(path)
    if located is None:
        with open(path, "rb") as f:
            return f.read()
    container, offset, size = located
    with open(container, "rb") as f:
        if size is not None:
            f.seek(offset)
            data = f.read(size)
            if len(data) != size:
                raise PackedError(f"{container}: offset {offset}: the file ends inside a sample")
            return data
        payload = read_record(f, offset, container)
    return split_payload(payload, container, offset)[2]


def read_record(f, offset: int, name: str) -> bytes:
    """The payload of the record at `offset` (continued parts joined, as MXNet writes them)."""
    parts = []
    f.seek(offset)
    while True:
        head = f.read(8)
        if len(head) < 8:
            raise PackedError(f"{name}: offset {offset}: the file ends inside a record")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise PackedError(f"{name}: offset {offset}: no record starts here (bad magic)")
        flag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        data = f.read(length)
        if len(data) < length:
            raise PackedError(f"{name}: offset {offset}: the file ends inside a record")
        parts.append(data)
        if flag in (0, 3):
            break
        f.read(-length % 4)
    return MAGIC_BYTES.join(parts)


def split_payload(payload: bytes, name: str, offset: int) -> tuple[int, np.ndarray, bytes]:
    """(flag, labels, image bytes) of a record's payload."""
    if len(payload) < IR_HEADER.size:
        raise PackedError(f"{name}: offset {offset}: a record shorter than its header")
    flag, label, _, _ = IR_HEADER.unpack_from(payload)
    start = IR_HEADER.size
    if flag > 0:
        labels = np.frombuffer(payload, np.float32, flag, start)
        start += 4 * flag
    else:
        labels = np.array([label], np.float32)
    return flag, labels, payload[start:]


def pack_record(payload: bytes) -> bytes:
    """One record as MXNet's writer lays it out (split where the payload holds the magic at a
    4-byte boundary, zero-padded to 4 bytes)."""
    out, start = [], 0
    i = payload.find(MAGIC_BYTES)
    while i >= 0:
        if i % 4 == 0:  # only the magic at a word boundary would be taken for a record start
            out.append(struct.pack("<II", MAGIC, ((1 if start == 0 else 2) << 29) | (i - start)))
            out.append(payload[start:i])
            start = i + 4
        i = payload.find(MAGIC_BYTES, i + 1)
    out.append(struct.pack("<II", MAGIC, ((3 if start else 0) << 29) | (len(payload) - start)))
    out.append(payload[start:])
    out.append(b"\0" * (-len(payload) % 4))
    return b"".join(out)


def image_payload(image: bytes, label: int, key: int) -> bytes:
    return IR_HEADER.pack(0, float(label), key, 0) + image


def ranges_payload(start: int, end: int, key: int) -> bytes:
    return IR_HEADER.pack(2, 0.0, key, 0) + struct.pack("<ff", start, end)


# ------------------------------------------------------------------ reading a packed set
def packed_kind(folder: Path) -> str | None:
    """ "rec", "wds" or None (not a packed set)."""
    if (folder / "train.rec").is_file() or (folder / "train.idx").is_file():
        return "rec"
    if (folder / WDS_INDEX).is_file():
        return "wds"
    return None


def _identity_names(folder: Path, labels: Iterable[int]) -> dict[str, int]:
    path = folder / IDENTITIES
    if path.is_file():
        return json.loads(path.read_text())
    return {str(label): label for label in np.unique(np.asarray(labels, np.int64)).tolist()}


def read_index(idx: Path, rec_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(keys, offsets) from ``train.idx``, sorted by key, each offset checked to lie inside the
    .rec. Parsed as arrays (a million lines in a fraction of a second); an index that does not
    parse cleanly is read again line by line, for the line that names what is wrong."""
    text = idx.read_text()
    if not text.strip():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)  # refused as having no record 0
    try:
        table = np.loadtxt(io.StringIO(text), dtype=np.int64, ndmin=2, comments=None)
    except (ValueError, OverflowError):
        table = np.zeros((0, 3), np.int64)  # not two integers per line: find the line
    if table.shape[1] != 2 or ((table[:, 1] < 0) | (table[:, 1] > rec_size - 8)).any():
        _first_bad_index_line(idx, text, rec_size)
    keys, offsets = table[:, 0], table[:, 1]
    order = np.argsort(keys, kind="stable")
    keys, offsets = keys[order], offsets[order]
    repeated = np.flatnonzero(keys[1:] == keys[:-1])
    if repeated.size:
        raise PackedError(f"{idx}: key {int(keys[repeated[0]])} is listed twice")
    return keys, offsets


def _first_bad_index_line(idx: Path, text: str, rec_size: int) -> None:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            _, offset = (int(x) for x in line.split())
        except ValueError:
            raise PackedError(f"{idx}:{number}: expected 'key<TAB>offset', got {line!r}") from None
        if not 0 <= offset <= rec_size - 8:
            raise PackedError(
                f"{idx}:{number}: offset {offset} lies past the end of train.rec "
                f"({rec_size} bytes): a truncated .rec, or an index of another file"
            )
    raise PackedError(f"{idx}: not 'key<TAB>offset' lines")  # numpy refused what lines accept


def _offsets_of(wanted: np.ndarray, keys: np.ndarray, offsets: np.ndarray, idx: Path):
    """The offsets of records `wanted` (keys sorted); the first one the index lacks named."""
    at = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
    missing = wanted[keys[at] != wanted] if len(keys) else wanted
    if missing.size:
        raise PackedError(
            f"{idx}: no offset for record {int(missing[0])} (of {missing.size} missing)"
        )
    return offsets[at]


def read_recordio(folder: Path) -> tuple[list[str], list[int], dict[str, int]]:
    """The locator and label of every image record, in key order, and the identities."""
    rec, idx = folder / "train.rec", folder / "train.idx"
    for needed in (rec, idx):
        if not needed.is_file():
            raise PackedError(f"{needed}: missing (a RecordIO set is train.rec with train.idx)")
    keys, offsets = read_index(idx, rec.stat().st_size)
    if not len(keys) or keys[0] != 0:
        raise PackedError(f"{idx}: no record 0 (the header naming the image records)")
    with open(rec, "rb") as f:
        head = int(offsets[0])
        flag, ranges, _ = split_payload(read_record(f, head, str(rec)), str(rec), head)
        if flag == 0:  # no header record: every record is an image (keys in index order)
            images, ends = keys, []
        else:
            first_identity, end = int(ranges[0]), int(ranges[1]) if flag > 1 else int(ranges[0])
            images = np.arange(1, first_identity, dtype=np.int64)
            identity_keys = np.arange(first_identity, end, dtype=np.int64)
            listed = identity_keys[np.isin(identity_keys, keys)]
            ends = [
                split_payload(read_record(f, o, str(rec)), str(rec), o)[1]
                for o in _offsets_of(listed, keys, offsets, idx).tolist()
            ]
        image_offsets = _offsets_of(images, keys, offsets, idx)
        if ends:  # labels from the identity records: [start, end) of each identity's images
            labels = np.full(len(images), -1, np.int64)
            first = int(images[0]) if len(images) else 0
            for identity, (start, stop) in enumerate(ends):
                low, high = (min(max(int(k) - first, 0), len(labels)) for k in (start, stop))
                labels[low:high] = identity
            unlabelled = np.flatnonzero(labels < 0)
            if unlabelled.size:
                raise PackedError(
                    f"{rec}: record {int(images[unlabelled[0]])} lies in no identity's range "
                    f"(of {unlabelled.size} such records)"
                )
            labels = labels.tolist()
        else:  # a set without identity records: every image's own header
            labels = [
                int(split_payload(read_record(f, o, str(rec)), str(rec), o)[1][0])
                for o in image_offsets.tolist()
            ]
    prefix = f"{rec}@"  # one str(Path), not one per record
    paths = [f"{prefix}{o}" for o in image_offsets.tolist()]
    return paths, labels, _identity_names(folder, labels)


def read_webdataset(folder: Path) -> tuple[list[str], list[int], dict[str, int]]:
    """The locator and label of every sample listed in ``wds-index.npz``; each shard checked
    to be there and long enough for the samples the index puts in it."""
    index = folder / WDS_INDEX
    with np.load(index) as data:
        shards = [str(s) for s in data["shards"]]
        shard, offset, size, label = (data[k] for k in ("shard", "offset", "size", "label"))
    ends = np.zeros(len(shards), np.int64)
    np.maximum.at(ends, shard, offset + size)
    for s, name in enumerate(shards):
        path = folder / name
        if not path.is_file():
            listed = int((shard == s).sum())
            raise PackedError(f"{path}: missing; {index} lists {listed} samples in it")
        if path.stat().st_size < ends[s]:
            raise PackedError(
                f"{path}: {path.stat().st_size} bytes, but {index} has a sample ending at byte "
                f"{int(ends[s])}: a truncated shard"
            )
    prefix = [str(folder / name) for name in shards]
    paths = [
        f"{prefix[s]}@{o}:{n}" for s, o, n in zip(shard.tolist(), offset.tolist(), size.tolist())
    ]
    labels = label.tolist()
    return paths, labels, _identity_names(folder, labels)


def read_packed(folder: Path) -> tuple[list[str], list[int], dict[str, int]]:
    """(locators, labels, identity name -> label) of a packed set's samples."""
    kind = packed_kind(folder)
    return read_recordio(folder) if kind == "rec" else read_webdataset(folder)


# ------------------------------------------------------------------ writing a packed set
def write_recordio(
    items: Iterable[tuple[bytes, int]], count: int, identities: dict[str, int], out: Path
) -> None:
    """`items`: (encoded image, label) grouped by label, in order. Writes train.rec, train.idx
    (header record 0, the images, one record per identity), property and identities.json."""
    out.mkdir(parents=True, exist_ok=True)
    offsets: list[int] = []
    ranges: dict[int, list[int]] = {}
    with open(out / "train.rec", "wb") as rec:
        header = pack_record(ranges_payload(count + 1, count + 1 + len(identities), 0))
        offsets.append(rec.tell())
        rec.write(header)
        for key, (image, label) in enumerate(items, 1):
            offsets.append(rec.tell())
            rec.write(pack_record(image_payload(image, label, key)))
            span = ranges.setdefault(label, [key, key + 1])
            span[1] = key + 1
        for n, label in enumerate(sorted(identities.values())):
            start, end = ranges.get(label, [count + 1, count + 1])
            offsets.append(rec.tell())
            rec.write(pack_record(ranges_payload(start, end, count + 1 + n)))
    (out / "train.idx").write_text("".join(f"{k}\t{o}\n" for k, o in enumerate(offsets)))
    (out / "property").write_text(f"{len(identities)},0,0\n")
    (out / IDENTITIES).write_text(json.dumps(identities, sort_keys=True))


def write_webdataset(
    items: Iterable[tuple[bytes, int, str]],
    identities: dict[str, int],
    out: Path,
    per_shard: int = 10_000,
) -> None:
    """`items`: (encoded image, label, extension). Writes shard-NNNNNN.tar (KEY.ext, KEY.cls),
    wds-index.npz and identities.json."""
    out.mkdir(parents=True, exist_ok=True)
    shards: list[str] = []
    rows: list[tuple[int, int, int, int]] = []
    tar = None
    for key, (image, label, ext) in enumerate(items):
        if key % per_shard == 0:
            if tar is not None:
                tar.close()
            shards.append(f"shard-{len(shards):06d}.tar")
            tar = tarfile.open(out / shards[-1], "w", format=tarfile.USTAR_FORMAT)
        for name, data in ((f"{key:09d}.{ext}", image), (f"{key:09d}.cls", f"{label}".encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            if not name.endswith(".cls"):
                # The data follows the 512-byte header just written.
                start = tar.offset - 512 * -(-len(data) // 512)
                rows.append((len(shards) - 1, start, len(data), label))
    if tar is not None:
        tar.close()
    columns = list(zip(*rows)) if rows else [(), (), (), ()]
    shard, offset, size, label = (np.array(c, np.int64) for c in columns)
    np.savez(
        out / WDS_INDEX,
        shards=np.array(shards),
        shard=shard.astype(np.int32),
        offset=offset,
        size=size,
        label=label,
    )
    (out / IDENTITIES).write_text(json.dumps(identities, sort_keys=True))
