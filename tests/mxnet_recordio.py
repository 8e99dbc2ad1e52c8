"""A small writer of RecordIO sets as insightface's tools write them, written for the tests from
MXNet's ``recordio.py`` (IRHeader, ``pack``, ``MXIndexedRecordIO.write_idx``) and dmlc-core's
``recordio.cc`` (``RecordIOWriter::WriteRecord``), independent of ``pipelines/packed.py``, so
that the reader is checked against the format and not against itself."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

K_MAGIC = 0xCED7230A
IR_FORMAT = "IfQQ"


def pack(flag_label, record_id: int, image: bytes) -> bytes:
    """mxnet.recordio.pack: a number label gives flag 0; a list of labels gives flag = their
    count, label 0, and the labels as float32 before the image."""
    if isinstance(flag_label, (int, float)):
        return struct.pack(IR_FORMAT, 0, float(flag_label), record_id, 0) + image
    labels = np.asarray(flag_label, dtype=np.float32)
    return struct.pack(IR_FORMAT, labels.size, 0.0, record_id, 0) + labels.tobytes() + image


def write_record(out, buf: bytes) -> None:
    """dmlc::RecordIOWriter::WriteRecord: the magic at every aligned position of the payload
    splits it (cflag 1 for the first part, 2 for the middle ones, 3 for the last)."""
    magic = struct.pack("<I", K_MAGIC)
    length = len(buf)
    start = 0
    for i in range(0, (length >> 2) << 2, 4):
        if buf[i : i + 4] == magic:
            out.write(magic + struct.pack("<I", ((1 if start == 0 else 2) << 29) | (i - start)))
            out.write(buf[start:i])
            start = i + 4
    out.write(magic + struct.pack("<I", ((3 if start else 0) << 29) | (length - start)))
    out.write(buf[start:])
    out.write(b"\0" * ((((length + 3) >> 2) << 2) - length))


class IndexedWriter:
    """MXIndexedRecordIO opened with 'w': write_idx(key, buf) records the offset of each."""

    def __init__(self, folder: Path, name: str = "train") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.rec = open(folder / f"{name}.rec", "wb")
        self.idx = open(folder / f"{name}.idx", "w")

    def write_idx(self, key: int, buf: bytes) -> None:
        self.idx.write(f"{key}\t{self.rec.tell()}\n")
        write_record(self.rec, buf)

    def close(self) -> None:
        self.rec.close()
        self.idx.close()


def face2rec2(folder: Path, items: list[tuple[bytes, int]], property_size=(112, 112)) -> None:
    """insightface's face2rec2 / RecBuilder layout: record 0 a header [first identity key, end],
    images 1..N with [label, 1.0] labels in list order, then one identity record per run of
    equal labels in that order ([start, end) of its images): a list not grouped by label gives
    one identity record per run, as the real tool does."""
    writer = IndexedWriter(folder)
    runs: list[list[int]] = []
    for key, (image, label) in enumerate(items, 1):
        writer.write_idx(key, pack([label, 1.0], key, image))
        if runs and runs[-1][2] == label:
            runs[-1][1] = key + 1
        else:
            runs.append([key, key + 1, label])
    first = len(items) + 1
    for n, (start, end, _) in enumerate(runs):
        writer.write_idx(first + n, pack([start, end], first + n, b""))
    writer.write_idx(0, pack([first, first + len(runs)], 0, b""))
    writer.close()
    (folder / "property").write_text(
        f"{len({label for _, label in items})},{property_size[0]},{property_size[1]}\n"
    )


def without_identity_records(folder: Path, items: list[tuple[bytes, int]]) -> None:
    """A set whose every record is an image with its own number label, keyed from 0 (the layout
    shuffle_rec.py leaves: MXFaceDataset then lists imgrec.keys and reads each image's label)."""
    writer = IndexedWriter(folder)
    for key, (image, label) in enumerate(items):
        writer.write_idx(key, pack(label, key, image))
    writer.close()
