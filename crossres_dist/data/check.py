"""Data checker: find the files that would break or bias a run, before the run.

``python -m crossres_dist.data.check DIR_OR_LIST [--min-side 32] [--min-images 2] [--json OUT]``
reports, with paths and counts: unreadable or truncated images, zero-byte files, non-images with
an image extension, unsupported modes (CMYK, 16-bit, palette, alpha), images under a size
threshold, identities with too few images, and duplicate files. Exit code 1 if anything is found.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import io
import json
import os
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from crossres_dist.checkpointing import run_directory as rundir
from pipelines.packed import (
    PackedError,
    check_recordio_labels,
    container_of,
    packed_kind,
    parse_locator,
    read_encoded,
)
from pipelines.sources import DataError, load_source, resolve

SUPPORTED_MODES = {"L", "RGB"}
# What the DALI decoder (and the twin) read, as PIL names the formats.
DECODABLE_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "TIFF", "PPM", "JPEG2000", "WEBP"}
# Problems that make a file unusable (training refuses them unless told to skip).
FATAL = (
    "unreadable",
    "truncated",
    "zero_byte",
    "not_an_image",
    "dangling_symlink",
    "too_large",
    "unsupported_format",
)


# PIL's own limit (about 89 megapixels); the size is checked explicitly, so its warning is noise.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def is_fatal(kind: str) -> bool:
    return kind.startswith(FATAL)


def first_fatal(problems: list[str]) -> str | None:
    """The problem that makes a file unusable, if any (the others only note it)."""
    return next((p for p in problems if is_fatal(p)), None)


@dataclass
class Report:
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    files: int = 0
    identities: int = 0
    manifest: Path | None = None  # where the manifest was written

    def add(self, kind: str, path: str) -> None:
        self.problems[kind].append(path)

    @property
    def bad_files(self) -> set[str]:
        return {p for kind, paths in self.problems.items() if is_fatal(kind) for p in paths}

    def summary(self) -> str:
        lines = [f"checked {self.files} files of {self.identities} identities"]
        for kind, paths in sorted(self.problems.items()):
            lines.append(f"  {kind}: {len(paths)}")
            lines += [f"    {p}" for p in paths[:20]]
            if len(paths) > 20:
                lines.append(f"    ... and {len(paths) - 20} more")
        if not self.problems:
            lines.append("  no problems found")
        return "\n".join(lines)


def check_file(
    path: str, min_side: int, decode: bool = True, with_digest: bool = True
) -> tuple[list[str], str | None]:
    """Problems of one file, and its content hash (for duplicates; None without with_digest).
    Never raises: every failure is a named problem."""
    p = Path(path)
    packed = parse_locator(path) is not None  # a record or tar member: its bytes are read
    if not packed and p.is_symlink() and not p.exists():
        return ["dangling_symlink"], None
    try:
        data = read_encoded(path) if packed or with_digest else None
        size = len(data) if data is not None else p.stat().st_size
    except PackedError as err:
        return ["truncated" if "ends inside" in str(err) else "unreadable"], None
    except OSError:
        return ["unreadable"], None
    if not size:
        return ["zero_byte"], None
    digest = hashlib.sha1(data).hexdigest() if data is not None else None
    problems = []
    try:
        with Image.open(io.BytesIO(data) if data is not None else p) as img:
            mode, dims, kind = img.mode, img.size, img.format
            if kind not in DECODABLE_FORMATS:
                return [f"unsupported_format_{kind}"], digest
            # A header larger than PIL's limit is a decompression bomb: refused, not decoded.
            if dims[0] * dims[1] > MAX_PIXELS:
                return ["too_large"], digest
            if decode:
                img.load()
    except Image.DecompressionBombError:
        return ["too_large"], digest
    except Image.UnidentifiedImageError:
        return ["not_an_image"], digest
    except (OSError, SyntaxError, ValueError) as err:
        kind = (
            "truncated"
            if "truncat" in str(err).lower() or "end of" in str(err).lower()
            else "unreadable"
        )
        return [kind], digest
    except Exception:  # a malformed file can break a PIL plugin in other ways
        return ["unreadable"], digest
    if mode not in SUPPORTED_MODES:
        problems.append(f"unsupported_mode_{mode}")
    if min(dims) < min_side:
        problems.append(f"smaller_than_{min_side}px")
    return problems, digest


MANIFEST_NAME = ".crossres-manifest.jsonl"


def default_manifest(spec: str) -> Path:
    """A data set's manifest: in its folder (ImageFolder, packed set) or beside its list file."""
    root = resolve(spec)
    return (root if root.is_dir() else root.parent) / MANIFEST_NAME


def cached_manifest(spec: str) -> Path:
    """Where a data set's manifest goes when its own folder is read-only (a shared copy on a
    cluster): the user's cache, keyed by the data set's absolute path."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256(str(resolve(spec).absolute()).encode()).hexdigest()[:16]
    return cache / "crossres-dist" / "manifests" / f"{key}.jsonl"


def find_manifest(spec: str) -> Path | None:
    """The manifest check_data wrote for a data set: in its folder, else in the cache."""
    return next((p for p in (default_manifest(spec), cached_manifest(spec)) if p.is_file()), None)


class Manifest:
    """Files already checked: path -> (size, mtime_ns, problems). A file whose size or mtime
    changed since is checked again; the rest are taken as recorded."""

    def __init__(self, entries: dict[str, tuple[int, int, list[str]]] | None = None) -> None:
        self.entries = entries or {}

    @classmethod
    def load(cls, path: Path) -> Manifest:
        entries = {}
        try:
            for line in path.read_text().splitlines():
                if line.strip():
                    e = json.loads(line)
                    entries[e["path"]] = (e["size"], e["mtime_ns"], e["problems"])
        except (OSError, ValueError, KeyError) as err:
            raise DataError(
                f"{path}: not a readable manifest ({err}); run check_data again"
            ) from None
        return cls(entries)

    def recorded(self, path: str) -> list[str] | None:
        entry = self.entries.get(path)
        if entry is None:
            return None
        try:
            stat = os.stat(container_of(path))
        except OSError:
            return None
        return entry[2] if (stat.st_size, stat.st_mtime_ns) == entry[:2] else None

    def write(self, path: Path, results: dict[str, list[str]]) -> None:
        lines = []
        for file, problems in results.items():
            try:
                stat = os.stat(container_of(file))
            except OSError:
                continue  # a dangling link or a vanished file: checked again next time
            lines.append(
                json.dumps(
                    {
                        "path": file,
                        "size": stat.st_size,
                        "mtime_ns": stat.st_mtime_ns,
                        "problems": problems,
                    }
                )
            )
        rundir.write_text(path, "\n".join(lines) + "\n")


def undecodable_everywhere(paths: list[str], rank: int, world: int, threads: int) -> dict:
    """{path: why} of every file of `paths` that cannot be decoded, each rank decoding its
    strided share, gathered so that every rank holds the whole answer (the benchmarks' and the
    verification sets' check before any network runs)."""
    results, _ = check_files(paths[rank::world], 0, True, None, max(1, threads))
    bad = {path: why for path, problems in results.items() if (why := first_fatal(problems))}
    if world > 1:
        from crossres_dist import distributed

        bad = {p: why for part in distributed.all_gather_objects(bad) for p, why in part.items()}
    return bad


def refuse_undecodable(
    paths: list[str],
    rank: int,
    world: int,
    threads: int,
    name: Callable[[str], str] = str,
    what: str = "images the protocol reads",
) -> None:
    """Every image of `paths` decoded before any network runs (each rank its share, the answer
    gathered): the first bad one in `paths`' order is refused in one line, named by `name` (a
    .bin's image by its set, index and pair), since scoring without it would change the
    benchmark. The one decode check of the evaluation protocols and the verification sets."""
    bad = undecodable_everywhere(paths, rank, world, threads)
    if bad:
        first = next(p for p in paths if p in bad)
        raise DataError(
            f"{name(first)}: this image cannot be read ({bad[first]}); {len(bad)} of the "
            f"{len(paths)} {what} cannot (`python -m crossres_dist.data.check` lists them): "
            "fix or remove them, evaluating without them would change the benchmark"
        )


def check_files(
    paths: list[str],
    min_side: int,
    decode: bool,
    manifest: Manifest | None = None,
    workers: int = 0,
    with_digest: bool = False,
    progress: bool = False,
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Problems of every file (recorded ones from `manifest`, the rest checked on `workers`
    threads: PIL and file reads release the GIL) and, with_digest, content hashes."""
    results: dict[str, list[str]] = {}
    todo = []
    for path in paths:
        known = manifest.recorded(path) if manifest is not None and not with_digest else None
        if known is None:
            todo.append(path)
        else:
            results[path] = known
    digests: dict[str, str] = {}
    workers = workers or os.cpu_count() or 1
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(
            total=len(todo),
            unit="file",
            desc=f"checking {len(todo)} files ({len(results)} known from the manifest)",
            file=sys.stderr,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
        )
    with ThreadPoolExecutor(workers) as pool:
        checked = pool.map(
            lambda p: check_file(p, min_side, decode, with_digest), todo, chunksize=64
        )
        for path, (problems, digest) in zip(todo, checked):
            results[path] = problems
            if digest:
                digests[path] = digest
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return results, digests


def check_dataset(
    spec: str,
    root: str = "",
    min_side: int = 16,
    min_images: int = 1,
    decode: bool = True,
    threads: int = 0,
    paths: list[str] | None = None,
    manifest: Path | None = None,
    progress: bool = False,
    fallback: bool = False,
) -> Report:
    dataset = load_source(spec, root)
    report = Report(files=len(dataset.samples), identities=dataset.num_classes)
    sample_paths = [s.path for s in dataset.samples] if paths is None else paths
    results, digests = check_files(
        sample_paths, min_side, decode, None, threads, with_digest=True, progress=progress
    )
    by_hash: dict[str, list[str]] = defaultdict(list)
    for path in sample_paths:
        for kind in results[path]:
            report.add(kind, path)
        if path in digests:
            by_hash[digests[path]].append(path)
    for group in by_hash.values():
        for duplicate in group[1:]:
            report.add("duplicate", f"{duplicate} (same as {group[0]})")
            # Recorded in the manifest too: the trainer's preflight warns of it from there.
            results[duplicate] = [*results[duplicate], "duplicate"]
    names = {label: name for name, label in dataset.identities.items()}
    counts = dataset.counts()
    for label in sorted(names):
        count = counts.get(label, 0)
        if count == 0:
            report.add("empty_identity_folder", f"{names[label]} (no images)")
        elif count < min_images:
            report.add(f"identity_with_fewer_than_{min_images}_images", f"{names[label]} ({count})")
    folder = resolve(spec)
    if folder.is_dir() and packed_kind(folder) == "rec":
        # Every image record's own label against the one training gives it.
        try:
            samples = dataset.samples
            wrong = check_recordio_labels(
                folder, [x.path for x in samples], [x.label for x in samples], dataset.identities
            )
        except PackedError as err:
            raise DataError(str(err)) from None
        if wrong:
            report.add("label_disagrees_with_identity_record", wrong)
    if manifest is not None and decode:
        report.manifest = write_manifest(results, manifest, spec, fallback)
    return report


def write_manifest(results: dict, manifest: Path, spec: str, fallback: bool) -> Path:
    """Write the manifest where asked; with `fallback`, a read-only data set's goes to the
    cache instead (and the report says where)."""
    try:
        Manifest().write(manifest, results)
        return manifest
    except OSError as err:
        if not fallback or err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
    cached = cached_manifest(spec)
    cached.parent.mkdir(parents=True, exist_ok=True)
    Manifest().write(cached, results)
    return cached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="an ImageFolder directory or a list file")
    parser.add_argument("--root", default="", help="root for list-file paths")
    parser.add_argument("--min-side", type=int, default=16)
    parser.add_argument("--min-images", type=int, default=2)
    parser.add_argument("--headers-only", action="store_true", help="do not decode (faster)")
    parser.add_argument("--threads", type=int, default=0, help="default: every core")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    parser.add_argument(
        "--manifest",
        help=f"where to record the verified files (default: {MANIFEST_NAME} in the data set's "
        "folder), so that training re-checks only files that changed; 'none' to skip",
    )
    args = parser.parse_args(argv)
    manifest = None
    if not args.headers_only and args.manifest != "none":
        manifest = Path(args.manifest) if args.manifest else default_manifest(args.dataset)
    # Only the default place falls back to the cache: a path asked for is written or refused.
    try:
        start = time.perf_counter()
        report = check_dataset(
            args.dataset,
            args.root,
            args.min_side,
            args.min_images,
            not args.headers_only,
            args.threads,
            manifest=manifest,
            progress=True,
            fallback=not args.manifest,
        )
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(
            f"error: cannot write the manifest {manifest}: {err.strerror}; pass --manifest PATH",
            file=sys.stderr,
        )
        return 2
    elapsed = time.perf_counter() - start
    print(report.summary())
    print(
        f"{report.files} files in {elapsed:.1f} s ({report.files / max(elapsed, 1e-9):.0f} files/s)"
    )
    if report.manifest is not None:
        where = report.manifest
        if where != manifest:
            print(f"manifest: {manifest.parent} is read-only: written to the cache instead")
        print(f"manifest: {where} (training re-checks only files that changed since)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "files": report.files,
                    "identities": report.identities,
                    "problems": report.problems,
                },
                indent=1,
            )
        )
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
