"""Verification pairs in LFW's own style, and the pairs file ``crossres-pack --pairs`` reads.

    python -m crossres_dist.verification.pairs FOLDER --out pairs.tsv [--pairs 600] [--seed 0]

LFW's View 2: ten folds whose people are disjoint, each with as many same-person pairs as
different-person pairs. The identities of FOLDER are shuffled with the seed and dealt into the
folds; a fold's same pairs join two images of one person with two or more, its different pairs
two people of that fold. The pairs are made once: the same folder and seed give the same file.

A pairs file is one pair per line, tab-separated: ``IMAGE_A  IMAGE_B  SAME`` (1 or 0), the
paths relative to the file's folder or absolute; ``#`` starts a comment.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from crossres_dist.errors import CrossresError
from crossres_dist.verification.metric import FOLDS
from pipelines.sources import DataError, scan_image_folder


def lfw_style_pairs(folder: str | Path, pairs: int, seed: int = 0, folds: int = FOLDS):
    """[(image_a, image_b, same)] in fold order, each fold its same pairs then its different
    ones (LFW's pairs.txt order), `pairs` in all (a multiple of 2 x folds)."""
    if pairs <= 0 or pairs % (2 * folds):
        raise CrossresError(f"--pairs {pairs}: must be a positive multiple of {2 * folds}")
    dataset = scan_image_folder(Path(folder))
    by_person: dict[int, list[str]] = {}
    for sample in dataset.samples:
        by_person.setdefault(sample.label, []).append(sample.path)
    rng = np.random.default_rng(seed)
    people = sorted(by_person)
    rng.shuffle(people)
    per_fold = pairs // (2 * folds)
    out = []
    for fold, group in enumerate(np.array_split(np.array(people), folds)):
        several = [p for p in group if len(by_person[p]) >= 2]
        if not several or len(group) < 2:
            raise CrossresError(
                f"{folder}: fold {fold} has {len(group)} people ({len(several)} with two or more "
                "images): too few for its pairs; use a larger folder or fewer --pairs"
            )
        same, different = set(), set()
        for _ in range(per_fold * 1000):
            if len(same) >= per_fold:
                break
            person = by_person[several[rng.integers(len(several))]]
            i, j = sorted(rng.choice(len(person), 2, replace=False))
            same.add((person[i], person[j]))
        for _ in range(per_fold * 1000):
            if len(different) >= per_fold:
                break
            p, q = rng.choice(len(group), 2, replace=False)
            a, b = by_person[group[p]], by_person[group[q]]
            different.add((a[rng.integers(len(a))], b[rng.integers(len(b))]))
        if len(same) < per_fold or len(different) < per_fold:
            raise CrossresError(
                f"{folder}: fold {fold} cannot make {per_fold} distinct pairs of each kind; "
                "use fewer --pairs"
            )
        out += [(a, b, True) for a, b in sorted(same)]
        out += [(a, b, False) for a, b in sorted(different)]
    return out


def write_pairs(path: Path, pairs) -> None:
    """The pairs file, its paths relative to its own folder (where read_pairs looks)."""
    if path.exists():
        raise CrossresError(f"{path}: exists already; choose a new name")
    here = path.resolve().parent

    def name(image: str) -> str:
        return os.path.relpath(Path(image).resolve(), here)

    lines = ["# image_a\timage_b\tsame"]
    lines += [f"{name(a)}\t{name(b)}\t{int(same)}" for a, b, same in pairs]
    path.write_text("\n".join(lines) + "\n")


def read_pairs(path: str | Path, root: str = "") -> list[tuple[str, str, bool]]:
    """The pairs of a pairs file; a malformed line or a missing image names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: pairs file not found")
    base = Path(root) if root else path.parent
    pairs = []
    for number, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        text = text.split("#", 1)[0].strip()
        if not text:
            continue
        fields = text.split("\t") if "\t" in text else text.split()
        if len(fields) != 3 or fields[2] not in ("0", "1"):
            raise DataError(
                f"{path}:{number}: expected IMAGE_A<TAB>IMAGE_B<TAB>1|0, got {text[:80]!r}"
            )
        a, b = (str(base / f) for f in fields[:2])
        for image in (a, b):
            if not Path(image).is_file():
                raise DataError(f"{path}:{number}: {image} not found")
        pairs.append((a, b, fields[2] == "1"))
    if not pairs:
        raise DataError(f"{path}: no pairs")
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="an ImageFolder of the people to pair")
    parser.add_argument("--out", type=Path, required=True, help="the pairs file (must not exist)")
    parser.add_argument("--pairs", type=int, default=600, help="pairs in all (default 600)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        pairs = lfw_style_pairs(args.folder, args.pairs, args.seed)
        write_pairs(args.out, pairs)
    except (CrossresError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(pairs)} pairs ({args.pairs // 2} same) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
