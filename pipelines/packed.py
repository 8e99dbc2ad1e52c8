"""Packed face sets: insightface's RecordIO (``train.rec`` + ``train.idx``) and webdataset tar
shards, read by offset, so that start-up reads an index and not millions of files.

A packed sample's ``path`` is a locator: ``/data/ms1m/train.rec@123456`` (the record at that byte
offset) or ``/data/wds/shard-000007.tar@51200:8431`` (that many bytes of the tar at that
offset; an image of an insightface ``.bin`` verification set is located the same way).
Both backends read its encoded bytes with ``read_encoded``; everything keyed by path
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
import logging
import re
import struct
import tarfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
IR_HEADER = struct.Struct("<IfQQ")
LOCATOR = re.compile(r"^(?P<container>.+\.(?:rec|tar|bin))@(?P<offset>\d+)(?::(?P<size>\d+))?$")
WDS_INDEX = "wds-index.npz"
IDENTITIES = "identities.json"


log = logging.getLogger(__name__)


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
    if (folder / WDS_INDEX).is_file() or any(folder.glob("*.tar")):
        return "wds"
    return None


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


def own_labels(rec: Path, offsets: np.ndarray) -> np.ndarray:
    """Each image record's own label (its IRHeader's, the first of its labels if it has
    several), gathered from a memory map in one pass instead of a read per record."""
    size = rec.stat().st_size
    if not len(offsets):
        return np.zeros(0, np.int64)
    data = np.memmap(rec, np.uint8, mode="r")
    span = 8 + IR_HEADER.size + 4
    window = np.zeros((len(offsets), span), np.uint8)
    columns = np.arange(span)
    for lo in range(0, len(offsets), 1 << 16):  # bounded index arrays at a million records
        at = np.minimum(offsets[lo : lo + (1 << 16), None] + columns, size - 1)
        window[lo : lo + len(at)] = data[at]
    words = window[:, :16].copy().view("<u4")
    magic, length = words[:, 0], words[:, 1] & ((1 << 29) - 1)
    flag = words[:, 2]
    first = np.where(flag > 0, window[:, 32:36].copy().view("<f4")[:, 0], words[:, 3].view("<f4"))
    bad = np.flatnonzero(magic != MAGIC)
    if bad.size:
        raise PackedError(
            f"{rec}: offset {int(offsets[bad[0]])}: no record starts here (bad magic)"
        )
    labels = first.astype(np.int64)
    # A first part too short for the header (the magic inside it split the record there).
    with open(rec, "rb") as f:
        for i in np.flatnonzero(length < np.where(flag > 0, 28, 24)).tolist():
            o = int(offsets[i])
            labels[i] = int(split_payload(read_record(f, o, str(rec)), str(rec), o)[1][0])
    return labels


def read_recordio(folder: Path) -> tuple[list[str], list[int], dict[str, int]]:
    """The locator and label of every image record, in key order, and the identities.

    insightface's MXFaceDataset trains on each image record's own label. The identity records
    are read here for speed (one read per identity), and checked against the labels of the
    first and last image of each range: where they disagree (face2rec2 run on a list not
    grouped by label), each image's own label is taken, as insightface takes it, with a word."""
    rec, idx = folder / "train.rec", folder / "train.idx"
    if rec.is_file() and not idx.is_file():
        raise PackedError(
            f"{idx}: missing; index the .rec once with `crossres-pack --index {folder}`"
        )
    if not rec.is_file():
        raise PackedError(f"{rec}: missing (a RecordIO set is train.rec with train.idx)")
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
    if ends:
        originals = _labels_from_identity_records(rec, images, image_offsets, ends)
    else:  # a set without identity records: every image's own header
        originals = own_labels(rec, image_offsets)
    labels, identities = numbered(originals, folder, rec)
    prefix = f"{rec}@"  # one str(Path), not one per record
    paths = [f"{prefix}{o}" for o in image_offsets.tolist()]
    return paths, labels, identities


def _labels_from_identity_records(
    rec: Path, images: np.ndarray, image_offsets: np.ndarray, ends: list
) -> np.ndarray:
    """Each image's label in the .rec's own numbering: that of its identity record's range,
    checked against the first and last image of every range."""
    identity_of = np.full(len(images), -1, np.int64)
    first = int(images[0]) if len(images) else 0
    spans = []
    for identity, (start, stop) in enumerate(ends):
        low, high = (min(max(int(k) - first, 0), len(identity_of)) for k in (start, stop))
        identity_of[low:high] = identity
        if high > low:
            spans.append((identity, low, high - 1))
    unlabelled = np.flatnonzero(identity_of < 0)
    if unlabelled.size:
        raise PackedError(
            f"{rec}: record {int(images[unlabelled[0]])} lies in no identity's range "
            f"(of {unlabelled.size} such records)"
        )
    ends_at = np.array([i for _, low, high in spans for i in (low, high)], np.int64)
    sampled = own_labels(rec, image_offsets[ends_at]).reshape(-1, 2)
    label_of = np.full(len(ends), -1, np.int64)
    for (identity, _, _), (a, b) in zip(spans, sampled.tolist()):
        label_of[identity] = a if a == b else -2
    used = label_of[label_of >= 0]
    if (label_of == -2).any() or len(np.unique(used)) < len(used):
        own = own_labels(rec, image_offsets)
        differs = first_disagreement(identity_of, own)
        log.warning(
            "%s: the identity records and the image records' own labels disagree (first at "
            "record %d: in identity record %d's range, own label %d; %d identity records, %d "
            "labels): trained on each image record's own label, as insightface's "
            "MXFaceDataset does",
            rec,
            int(images[differs]),
            int(identity_of[differs]),
            int(own[differs]),
            len(ends),
            len(np.unique(own)),
        )
        return own
    return label_of[identity_of]


def first_disagreement(identity_of: np.ndarray, own: np.ndarray) -> int:
    """The first image whose own label is not the one its identity record's range began with,
    or that another identity record already claimed."""
    claimed: dict[int, int] = {}
    began: dict[int, int] = {}
    for i, (identity, label) in enumerate(zip(identity_of.tolist(), own.tolist())):
        began.setdefault(identity, label)
        if began[identity] != label or claimed.setdefault(label, identity) != identity:
            return i
    return 0


def check_recordio_labels(
    folder: Path, paths: list[str], labels: list[int], identities: dict[str, int]
) -> str | None:
    """check_data's full comparison, on the samples read_recordio listed: the first image record
    whose own label differs from the label training gives it (identity records that disagree
    inside a range), or None."""
    rec = folder / "train.rec"
    offsets = np.array([int(p.rsplit("@", 1)[1]) for p in paths], np.int64)
    own = own_labels(rec, offsets)
    given = np.array(labels, np.int64)
    if (folder / IDENTITIES).is_file():
        expected = given  # crossres-pack's own set: its labels are identities.json's
    else:  # each class is named by its label in the set
        name_of = {label: int(name) for name, label in identities.items()}
        expected = np.array([name_of[label] for label in range(len(name_of))], np.int64)[given]
    differs = np.flatnonzero(expected != own)
    if not differs.size:
        return None
    i = int(differs[0])
    return (
        f"{paths[i]}: own label {int(own[i])}, but its identity record gives "
        f"{int(expected[i])} ({differs.size} such records): the identity records do not match "
        "the images; repack the set"
    )


def numbered(originals: np.ndarray, folder: Path, source: Path) -> tuple[list[int], dict]:
    """Labels 0..K-1 and the identity map of a set whose labels are `originals`.

    A set packed here carries identities.json, whose labels are its own. Elsewhere each class
    is named by its label in the set (so identities.json in the run maps insightface's label to
    ours), and labels that are not 0..K-1 (identities filtered out of a shuffled set) are
    numbered in order, with one line: insightface would size its classifier to the largest
    label plus one and train the missing classes as never-seen."""
    path = folder / IDENTITIES
    if path.is_file():
        identities = json.loads(path.read_text())
        known = set(identities.values())
        unknown = np.setdiff1d(np.unique(originals), np.array(sorted(known), np.int64))
        if unknown.size:
            raise PackedError(f"{path}: no identity has label {int(unknown[0])} of {source}")
        return originals.tolist(), identities
    present, compact = np.unique(originals, return_inverse=True)
    if len(present) and (present[0] < 0):
        raise PackedError(f"{source}: label {int(present[0])} is negative")
    if len(present) and present[-1] != len(present) - 1:
        log.info(
            "%s: labels are sparse (%d identities, labels %d..%d): trained as classes 0..%d, "
            "each named by its label in the set (identities.json); insightface would size its "
            "classifier to %d",
            source,
            len(present),
            int(present[0]),
            int(present[-1]),
            len(present) - 1,
            int(present[-1]) + 1,
        )
    identities = {str(label): i for i, label in enumerate(present.tolist())}
    return compact.astype(np.int64).tolist(), identities


def read_webdataset(folder: Path) -> tuple[list[str], list[int], dict[str, int]]:
    """The locator and label of every sample listed in ``wds-index.npz``; each shard checked
    to be there and long enough for the samples the index puts in it."""
    index = folder / WDS_INDEX
    if not index.is_file():
        raise PackedError(
            f"{index}: missing: webdataset shards need an index of their samples; make it once "
            f"with `crossres-pack --index {folder}`"
        )
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
    labels, identities = numbered(label.astype(np.int64), folder, index)
    return paths, labels, identities


def read_packed(folder: Path) -> tuple[list[str], list[int], dict[str, int]]:
    """(locators, labels, identity name -> label) of a packed set's samples."""
    kind = packed_kind(folder)
    return read_recordio(folder) if kind == "rec" else read_webdataset(folder)


# ------------------------------------------------------------------ indexing other tools' sets
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")
LABEL_EXTENSIONS = ("cls", "cls.txt")


def index_recordio(rec: Path) -> int:
    """Write the ``train.idx`` of a .rec that has none (rec2shufrec's output, a copied .rec):
    every record from the start, each keyed by its IRHeader id as MXNet's writers key them
    (by its position where the ids repeat). Returns the number of records."""
    idx = rec.with_suffix(".idx")
    keys, offsets = [], []
    size = rec.stat().st_size
    with open(rec, "rb") as f:
        offset = 0
        while offset < size:
            payload = read_record(f, offset, str(rec))
            if len(payload) < IR_HEADER.size:
                raise PackedError(f"{rec}: offset {offset}: a record shorter than its header")
            keys.append(IR_HEADER.unpack_from(payload)[2])
            offsets.append(offset)
            offset = f.tell() + (-f.tell() % 4)
    if len(set(keys)) < len(keys):
        log.warning("%s: record ids repeat; keyed by position instead", rec)
        keys = list(range(len(keys)))
    write_new(idx, "".join(f"{k}\t{o}\n" for k, o in zip(keys, offsets)).encode())
    return len(keys)


def index_webdataset(folder: Path) -> int:
    """Write ``wds-index.npz`` for the tar shards in `folder` that another tool wrote
    (webdataset's ShardWriter, tarp): each sample is the members sharing a key (the name up to
    its first dot), with one image and its label as text (``.cls``). Returns the samples."""
    shards = sorted(p.name for p in folder.glob("*.tar"))
    if not shards:
        raise PackedError(f"{folder}: no .tar shards to index")
    rows = []
    for s, name in enumerate(shards):
        samples: dict[str, dict[str, tarfile.TarInfo]] = {}
        try:
            with tarfile.open(folder / name) as tar:
                for member in tar:
                    if member.isfile():
                        base = member.name.rsplit("/", 1)[-1]
                        key, _, ext = base.partition(".")
                        prefix = member.name[: len(member.name) - len(base)]
                        samples.setdefault(prefix + key, {})[ext.lower()] = member
                labels = {}
                for key, parts in samples.items():
                    text = next((parts[e] for e in LABEL_EXTENSIONS if e in parts), None)
                    if text is not None:
                        labels[key] = tar.extractfile(text).read().decode().strip()
        except (tarfile.TarError, OSError) as err:
            raise PackedError(f"{folder / name}: not a readable tar ({err})") from None
        for key, parts in samples.items():
            image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
            if image is None:
                continue  # not an image sample (metadata, a json)
            if key not in labels:
                raise PackedError(f"{folder / name}: sample {key} has no label (.cls)")
            try:
                label = int(labels[key])
            except ValueError:
                raise PackedError(
                    f"{folder / name}: sample {key}: label {labels[key]!r} is not an integer"
                ) from None
            rows.append((s, image.offset_data, image.size, label))
    if not rows:
        raise PackedError(f"{folder}: no image samples in its shards")
    shard, offset, size, label = (np.array(c, np.int64) for c in zip(*rows))
    buffer = io.BytesIO()
    np.savez(
        buffer,
        shards=np.array(shards),
        shard=shard.astype(np.int32),
        offset=offset,
        size=size,
        label=label,
    )
    write_new(folder / WDS_INDEX, buffer.getvalue())
    return len(rows)


def write_new(path: Path, data: bytes) -> None:
    """Write a file that must not exist yet (an index never replaces one)."""
    try:
        with open(path, "xb") as f:
            f.write(data)
    except FileExistsError:
        raise PackedError(f"{path}: exists already; nothing was written") from None


# ------------------------------------------------------------------ writing a packed set
def write_recordio(
    items: Iterable[tuple[bytes, int]],
    count: int,
    identities: dict[str, int],
    out: Path,
) -> None:
    """`items`: (encoded image, label) grouped by label, in order. Writes train.rec, train.idx
    (header record 0, the images, one record per identity), property (``write_property``)
    and identities.json."""
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
    write_property(out, len(identities), (0, 0))
    (out / IDENTITIES).write_text(json.dumps(identities, sort_keys=True))


def write_property(out: Path, classes: int, image_size: tuple[int, int]) -> None:
    """``property`` as insightface's tools write it: ``classes,H,W`` (0,0: sizes vary)."""
    height, width = image_size
    (out / "property").write_text(f"{classes},{height},{width}\n")


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
