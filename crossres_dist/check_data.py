"""Data checker: find the files that would break or bias a run, before the run.

``python -m crossres_dist.check_data DIR_OR_LIST [--min-side 32] [--min-images 2] [--json OUT]``
reports, with paths and counts: unreadable or truncated images, zero-byte files, non-images with
an image extension, unsupported modes (CMYK, 16-bit, palette, alpha), images under a size
threshold, identities with too few images, and duplicate files. Exit code 1 if anything is found.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from pipelines.sources import DataError, load_source

SUPPORTED_MODES = {"L", "RGB"}
# Problems that make a file unusable (training refuses them unless told to skip).
FATAL = ("unreadable", "truncated", "zero_byte", "not_an_image")


@dataclass
class Report:
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    files: int = 0
    identities: int = 0

    def add(self, kind: str, path: str) -> None:
        self.problems[kind].append(path)

    @property
    def bad_files(self) -> set[str]:
        return {p for kind in FATAL for p in self.problems.get(kind, [])}

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
    """Problems of one file, and its content hash (for duplicates; None without with_digest)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError:
        return ["unreadable"], None
    if not data:
        return ["zero_byte"], None
    digest = hashlib.sha1(data).hexdigest() if with_digest else None
    problems = []
    try:
        with Image.open(p) as img:
            mode, size = img.mode, img.size
            if decode:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # PIL warns on some truncations
                    img.load()
    except Image.UnidentifiedImageError:
        return ["not_an_image"], digest
    except (OSError, SyntaxError, ValueError, Warning) as err:
        kind = (
            "truncated"
            if "truncat" in str(err).lower() or "end of" in str(err).lower()
            else "unreadable"
        )
        return [kind], digest
    if mode not in SUPPORTED_MODES:
        problems.append(f"unsupported_mode_{mode}")
    if min(size) < min_side:
        problems.append(f"smaller_than_{min_side}px")
    return problems, digest


def check_dataset(
    spec: str,
    root: str = "",
    min_side: int = 16,
    min_images: int = 1,
    decode: bool = True,
    threads: int = 4,
    paths: list[str] | None = None,
) -> Report:
    dataset = load_source(spec, root)
    report = Report(files=len(dataset.samples), identities=dataset.num_classes)
    sample_paths = [s.path for s in dataset.samples] if paths is None else paths
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda p: check_file(p, min_side, decode), sample_paths))
    by_hash: dict[str, list[str]] = defaultdict(list)
    for path, (problems, digest) in zip(sample_paths, results):
        for kind in problems:
            report.add(kind, path)
        if digest:
            by_hash[digest].append(path)
    for group in by_hash.values():
        for duplicate in group[1:]:
            report.add("duplicate", f"{duplicate} (same as {group[0]})")
    names = {label: name for name, label in dataset.identities.items()}
    for label, count in sorted(dataset.counts().items()):
        if count < min_images:
            report.add(f"identity_with_fewer_than_{min_images}_images", f"{names[label]} ({count})")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="an ImageFolder directory or a list file")
    parser.add_argument("--root", default="", help="root for list-file paths")
    parser.add_argument("--min-side", type=int, default=16)
    parser.add_argument("--min-images", type=int, default=2)
    parser.add_argument("--headers-only", action="store_true", help="do not decode (faster)")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = check_dataset(
            args.dataset,
            args.root,
            args.min_side,
            args.min_images,
            not args.headers_only,
            args.threads,
        )
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
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
