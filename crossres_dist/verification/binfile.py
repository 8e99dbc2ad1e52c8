"""insightface's verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...), read
as insightface's tools write them, without running any code from the file.

A ``.bin`` is a pickle of ``(bins, issame_list)``: ``bins`` holds 2N encoded images (``bytes``,
or 1-D ``uint8`` numpy arrays in some releases), pair i is ``(bins[2i], bins[2i + 1])``, and
``issame_list`` holds N booleans (Python's or numpy's, or one numpy bool array).

The pickle is loaded with an allow-list of globals (plain containers, bytes, bools, numpy's
array and dtype reconstruction): any other global is refused by name and nothing runs. The
images are then not kept in memory: each one's bytes lie in the file as one literal of the
pickle stream, so each image becomes a locator ``lfw.bin@OFFSET:SIZE`` that both pipelines (DALI
and the twin) decode like a tar member (``pipelines.packed.read_encoded``). A pickle that spells
its bytes another way (protocol 0, or Python 3's protocol 2 ``_codecs.encode``) is rewritten once
as a protocol-4 copy in the cache, and the run says so in one line.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import pickletools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossres_dist.errors import CrossresError
from crossres_dist.pickle_globals import NUMPY_GLOBALS

log = logging.getLogger(__name__)

# What a .bin can hold besides containers, bytes and bools: numpy arrays (their
# reconstruction, protocol 5's in-band buffers) and the protocol-2 spelling of bytes.
BIN_GLOBALS = (NUMPY_GLOBALS - {("collections", "OrderedDict")}) | {
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "bytearray"),
    ("__builtin__", "bytearray"),
}
# The pickle opcodes that hold raw bytes inline, and the size of their length field.
RAW_LITERALS = {
    "SHORT_BINSTRING": 1,
    "BINSTRING": 4,
    "SHORT_BINBYTES": 1,
    "BINBYTES": 4,
    "BINBYTES8": 8,
    "BYTEARRAY8": 8,
}


class BinError(CrossresError, ValueError):
    """A .bin set that cannot be used: the message names the file (and the image or pair)."""


@dataclass
class VerificationSet:
    """One .bin set: its name (the file's stem, as insightface names it), the locators of its
    2N images in order, and whether each pair shows one person."""

    name: str
    path: Path
    images: list[str]
    issame: np.ndarray  # bool [N]
    source: Path  # the file the locators point into (path, or its repacked copy)

    @property
    def pairs(self) -> int:
        return len(self.issame)


class _BinUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")  # Python 2's str -> latin-1 text, mapped back
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) in BIN_GLOBALS:
            return super().find_class(module, name)
        raise BinError(
            f"{self.path}: the pickle names the global '{module}.{name}', which a .bin set never "
            "holds: refused, nothing in the file was run"
        )


def _as_bytes(entry, path: Path, index: int) -> bytes:
    if isinstance(entry, (bytes, bytearray)):
        return bytes(entry)
    if isinstance(entry, str):  # a Python 2 str, read as latin-1 text
        return entry.encode("latin1")
    if isinstance(entry, np.ndarray) and entry.dtype == np.uint8 and entry.ndim == 1:
        return entry.tobytes()
    what = (
        f"a {entry.ndim}-D {entry.dtype} array"
        if isinstance(entry, np.ndarray)
        else f"of type {type(entry).__name__}"
    )
    raise BinError(f"{path}: image {index} is {what}, not encoded bytes or a 1-D uint8 array")


def _as_bools(issame, path: Path) -> np.ndarray:
    if isinstance(issame, np.ndarray):
        if issame.dtype != np.bool_ or issame.ndim != 1:
            raise BinError(
                f"{path}: issame_list is a {issame.ndim}-D {issame.dtype} array, not booleans"
            )
        return issame.copy()
    if not isinstance(issame, (list, tuple)):
        raise BinError(f"{path}: issame_list is a {type(issame).__name__}, not a list of booleans")
    for i, value in enumerate(issame):
        if not isinstance(value, (bool, np.bool_)):
            raise BinError(f"{path}: issame_list[{i}] is {value!r}, not a boolean")
    return np.array(issame, dtype=bool)


def _literals(data: bytes) -> dict[bytes, int]:
    """The raw byte literals of the pickle stream, by content digest -> their offset. Parsing
    runs nothing (pickletools only reads the opcodes)."""
    found: dict[bytes, int] = {}
    try:
        for opcode, arg, pos in pickletools.genops(data):
            width = RAW_LITERALS.get(opcode.name)
            if width is None:
                continue
            raw = arg.encode("latin1") if isinstance(arg, str) else bytes(arg)
            found.setdefault(hashlib.sha1(raw).digest(), pos + 1 + width)
    except (UnicodeDecodeError, ValueError):
        # pickletools decodes a protocol-0 STRING as ASCII, and Python 2's protocol 0 writes
        # image bytes that way: such a set has no raw literals and is read from a repacked copy.
        return {}
    return found


def _truncated(data: bytes, path: Path, err: Exception) -> BinError:
    """A pickle that stops early, named with the last image that is whole in it."""
    complete = 0
    try:
        for opcode, _, _ in pickletools.genops(data):
            complete += opcode.name in RAW_LITERALS
    except Exception:
        pass
    return BinError(
        f"{path}: the file ends inside the pickle after {complete} whole images (truncated, "
        f"{len(data)} bytes; {err}): copy it again"
    )


def read_bin(path: str | Path, cache_dir: Path | None = None) -> VerificationSet:
    """The set in `path`, checked (structure, not yet the images' decoding: see
    ``check_decodes``); every problem is one line naming the file and the index."""
    path = Path(path)
    if not path.is_file():
        raise BinError(f"{path}: verification set not found")
    data = path.read_bytes()
    try:
        obj = _BinUnpickler(io.BytesIO(data), path).load()
    except BinError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError) as err:
        if isinstance(err, EOFError) or "truncated" in str(err) or "ran out" in str(err):
            raise _truncated(data, path, err) from None
        raise BinError(f"{path}: not a pickled verification set ({err})") from None
    except Exception as err:  # a malformed stream can fail inside numpy's reconstruction
        raise BinError(f"{path}: not a pickled verification set ({err})") from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise BinError(
            f"{path}: holds a {type(obj).__name__}, not the pair (bins, issame_list) that "
            "insightface writes"
        )
    bins, issame = obj
    if not isinstance(bins, (list, tuple)):
        raise BinError(f"{path}: bins is a {type(bins).__name__}, not a list of images")
    if len(bins) % 2:
        raise BinError(
            f"{path}: {len(bins)} images, an odd number: image {len(bins) - 1} has no partner "
            "(pair i is images 2i and 2i+1)"
        )
    same = _as_bools(issame, path)
    if len(same) != len(bins) // 2:
        raise BinError(
            f"{path}: issame_list has {len(same)} entries for {len(bins) // 2} pairs "
            f"({len(bins)} images): one per pair"
        )
    if not len(bins):
        raise BinError(f"{path}: holds no pairs")
    images = [_as_bytes(entry, path, i) for i, entry in enumerate(bins)]
    for i, image in enumerate(images):
        if not image:
            raise BinError(f"{path}: image {i} is empty (0 bytes)")
    source = path
    offsets = _locate(data, images)
    if offsets is None:
        source = _repacked(path, data, images, same, cache_dir)
        offsets = _locate(source.read_bytes(), images)
        assert offsets is not None  # protocol 4 writes every image as one literal
    return VerificationSet(
        name=path.stem,
        path=path,
        images=[f"{source}@{o}:{len(b)}" for o, b in zip(offsets, images)],
        issame=same,
        source=source,
    )


def _locate(data: bytes, images: list[bytes]) -> list[int] | None:
    found = _literals(data)
    offsets = []
    for image in images:
        offset = found.get(hashlib.sha1(image).digest())
        if offset is None:
            return None
        offsets.append(offset)
    return offsets


def _repacked(
    path: Path, data: bytes, images: list[bytes], issame: np.ndarray, cache_dir: Path | None
) -> Path:
    """A protocol-4 copy of a set whose pickle does not hold its images as raw literals, in the
    cache (keyed by the file's content), written once."""
    base = cache_dir or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "crossres-dist", "bins"
    )
    copy = base / f"{path.stem}-{hashlib.sha1(data).hexdigest()[:16]}.bin"
    if not copy.is_file():
        base.mkdir(parents=True, exist_ok=True)
        write_bin(copy, images, issame.tolist(), overwrite_partial=True)
    log.info(
        "%s: its images are not stored as raw bytes in the pickle (protocol 0 or Python 3's "
        "protocol 2): decoded from a repacked copy, %s",
        path,
        copy,
    )
    return copy


def write_bin(
    path: str | Path,
    images: list[bytes],
    issame: list[bool],
    form: str = "bytes",
    overwrite_partial: bool = False,
) -> Path:
    """Write a .bin as insightface's tools do (protocol 4): images as ``bytes`` or, with
    ``form="numpy"``, as 1-D uint8 arrays with a numpy bool issame. An existing file is never
    replaced (the copy in the cache is written under a temporary name and moved)."""
    path = Path(path)
    if len(images) != 2 * len(issame):
        raise BinError(f"{path}: {len(images)} images for {len(issame)} pairs: two per pair")
    if form == "numpy":
        obj = ([np.frombuffer(b, np.uint8).copy() for b in images], np.array(issame, bool))
    elif form == "bytes":
        obj = ([bytes(b) for b in images], [bool(s) for s in issame])
    else:
        raise BinError(f"{path}: form {form!r} is neither 'bytes' nor 'numpy'")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    if overwrite_partial:
        os.replace(temporary, path)
    else:
        try:
            os.link(temporary, path)  # fails if `path` exists: nothing already written is lost
        except FileExistsError:
            raise BinError(f"{path}: exists already; choose a new name") from None
        finally:
            temporary.unlink()
    return path


def find_bins(folder: str | Path) -> list[Path]:
    """The ``*.bin`` sets in a folder, by name (insightface's ``val_targets`` beside train.rec)."""
    return sorted(Path(folder).glob("*.bin"))
