"""``crossres-screen``: drop every training face that the teacher matches, as the same person,
with any face of the test people, before training on it.

    crossres-screen runs/aligned/celeba runs/aligned/utkface --test-people runs/aligned/lfw_2to9 \\
        --calibrate runs/aligned/lfw_10to19 --teacher dlib_face_recognition_resnet_model_v1 \\
        --out runs/screened

- Each SOURCE (identity folders, a list file or a packed set, as training reads them) is
  embedded by the teacher at full resolution, and each face's best cosine similarity to any
  face of the test people is its score. A face scoring at or above the threshold is dropped;
  the others are written to ``OUT/NAME.txt`` (a list file: path and identity), which training
  reads as ``data.train`` or ``data.unlabelled``.
- The threshold is one-against-many: matched against thousands of faces, a face's best cosine
  is far above what one pair of strangers gives, so the threshold of a 1:1 pair protocol would
  drop nearly everything. ``--calibrate`` names faces of people known to share no one with the
  test people (the LFW groups are disjoint by construction); the threshold is the cosine that
  only ``--false-match`` of them reach. ``--threshold`` sets it instead.
- ``OUT/screen_report.json`` states the threshold, how it was chosen, how many faces of
  each source were dropped and which test people they matched, and the same-person recall at
  the threshold: of the test faces whose person has another face, how many reach it against
  that person's other faces (how likely another photograph of a test person is caught).
  ``OUT/dropped.csv`` lists every dropped face with its match.
- Faces of one person are many chances to be caught: in a labelled source (SOURCE), an identity
  with ``--same-person`` or more faces matched to one test person is that person, and all its
  faces are dropped (the matched ones and the others). Sources given with ``--unlabelled`` have
  no identities to judge this way (their folders are not people): only their matched faces go.
- The teacher's features are cached in ``OUT/cache`` (keyed by the teacher file and every image's
  path, size and modification time): a second run with another threshold is seconds.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from crossres_dist.errors import CrossresError
from crossres_dist.eval.features import Extractor, extract_cached, load_model
from crossres_dist.weights import WeightsError, resolve_path
from pipelines import ViewSettings
from pipelines.sources import DataError, Sample, load_source, sample_key, source_name

REPORT = "screen_report.json"


class ScreenError(CrossresError, ValueError):
    """Arguments that cannot be screened with (named in one line)."""


def best_matches(
    queries: torch.Tensor, gallery: torch.Tensor, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the highest cosine similarity to any gallery row and its index (in
    chunks: 20,000 faces against 5,000 would be a 400 MB matrix at once)."""
    gallery = torch.nn.functional.normalize(gallery.float(), dim=1)
    best, where = [], []
    for start in range(0, len(queries), chunk):
        q = torch.nn.functional.normalize(queries[start : start + chunk].float(), dim=1)
        value, index = (q @ gallery.T).max(1)
        best.append(value)
        where.append(index)
    if not best:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    return torch.cat(best).numpy(), torch.cat(where).numpy()


def calibrated_threshold(known_different: np.ndarray, false_match: float) -> float:
    """The cosine that at most `false_match` of the known-different faces' best scores reach:
    the (1 - false_match) quantile, taken upwards so that the rate holds."""
    if not len(known_different):
        raise ScreenError("--calibrate: no faces to calibrate on")
    if not 0 < false_match < 1:
        raise ScreenError(f"--false-match: {false_match} is not a fraction between 0 and 1")
    return float(np.quantile(known_different, 1 - false_match, method="higher"))


def same_person_recall(features: torch.Tensor, labels: np.ndarray, threshold: float) -> dict:
    """Of the test faces whose person has another face, the share whose best cosine to that
    person's other faces reaches `threshold`."""
    unit = torch.nn.functional.normalize(features.float(), dim=1)
    reached, counted = 0, 0
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) < 2:
            continue
        sims = unit[rows] @ unit[rows].T
        sims.fill_diagonal_(-2.0)
        reached += int((sims.max(1).values >= threshold).sum())
        counted += len(rows)
    return {"faces": counted, "reached": reached, "recall": reached / counted if counted else None}


class Embedder:
    """The teacher's full-resolution descriptors of a set of faces, cached in `cache`."""

    def __init__(self, teacher: str, size: int, batch: int, backend: str, cache: Path):
        self.cache = cache
        try:
            self.teacher = str(resolve_path(teacher))  # a packaged network's short name too
            model = load_model(self.teacher, torch.device("cpu"))
        except WeightsError as err:
            raise ScreenError(f"--teacher: {err}") from None
        spec = model.spec
        side = size or spec.input_size or 150
        views = ViewSettings(
            side, side, 0.0, [8], channels=spec.channels, mean=spec.mean, scale=spec.scale
        )
        threads = max(1, torch.get_num_threads())
        self.extractor = Extractor(
            model,
            views,
            batch,
            backend,
            torch.device("cpu"),
            threads,
            torch.autocast("cpu", enabled=False),
        )

    def __call__(self, samples: list[Sample], label: str) -> torch.Tensor:
        features, _ = extract_cached(self.extractor, self.teacher, samples, None, self.cache, label)
        return features


def people_found(
    data, drop: np.ndarray, where: np.ndarray, test_labels: np.ndarray, same_person: int
) -> dict[int, int]:
    """{identity label: test person label} of the identities of `data` with `same_person` or
    more faces matched to one test person."""
    counts: dict[tuple[int, int], int] = {}
    for sample, dropped, index in zip(data.samples, drop, where):
        if dropped:
            key = (sample.label, int(test_labels[index]))
            counts[key] = counts.get(key, 0) + 1
    return {label: person for (label, person), n in counts.items() if n >= same_person}


def read_set(spec: str, what: str):
    try:
        return load_source(spec)
    except DataError as err:
        raise ScreenError(f"{what}: {err}") from None


def read_sources(args: argparse.Namespace) -> dict[str, tuple]:
    """{name: (spec, data, labelled)} of every source to screen, each read and checked."""
    sources = {}
    for spec, labelled in [(s, True) for s in args.sources] + [(s, False) for s in args.unlabelled]:
        name = source_name(spec)
        if name in sources:
            raise ScreenError(f"{spec}: a second source named {name!r}; rename or link one")
        sources[name] = (spec, read_set(spec, spec), labelled)
    if not sources:
        raise ScreenError("name the training faces to screen (SOURCE or --unlabelled SOURCE)")
    return sources


def choose_threshold(args, embed, calibration, test_features: torch.Tensor) -> dict:
    """The threshold (given, or calibrated on faces of other people) and how it was chosen."""
    chosen = {"threshold": args.threshold, "how": "given (--threshold)"}
    if calibration is None:
        return chosen
    calibration_best, _ = best_matches(embed(calibration.samples, "calibration"), test_features)
    if args.threshold is None:
        chosen["threshold"] = calibrated_threshold(calibration_best, args.false_match)
        chosen["how"] = (
            f"the cosine that {args.false_match:g} of the calibration faces' best matches "
            "reach (people known to share no one with the test people)"
        )
    chosen["calibration"] = {
        "faces": args.calibrate,
        "count": len(calibration_best),
        "best_cosine_max": float(calibration_best.max()),
        "best_cosine_median": float(np.median(calibration_best)),
        "dropped_at_threshold": int((calibration_best >= chosen["threshold"]).sum()),
    }
    return chosen


class TestPeople:
    """The faces of the people tested on, embedded by the teacher."""

    def __init__(self, data, features: torch.Tensor):
        self.data, self.features = data, features
        self.labels = np.array([s.label for s in data.samples])
        self.person = {label: name for name, label in data.identities.items()}


def screen_source(name, data, labelled, embed, test: TestPeople, threshold, args, rows) -> dict:
    """Drop `data`'s faces that match a test person (and, labelled, its identities matched
    `args.same_person` times); write the kept list; add a row per dropped face to `rows`."""
    best, where = best_matches(embed(data.samples, name), test.features)
    drop = best >= threshold
    whole = people_found(data, drop, where, test.labels, args.same_person) if labelled else {}
    drop |= np.isin([s.label for s in data.samples], list(whole))
    identity = {label: n for n, label in data.identities.items()}
    kept = [s for s, d in zip(data.samples, drop) if not d]
    # Relative to the list's folder (where training reads them from): the lists move with it.
    out = args.out.resolve()
    lines = [f"{os.path.relpath(Path(s.path).resolve(), out)} {identity[s.label]}\n" for s in kept]
    (args.out / f"{name}.txt").write_text("".join(lines))
    matched: dict[str, int] = {}
    person = test.person
    for sample, score, index, dropped in zip(data.samples, best, where, drop):
        if dropped and score >= threshold:
            hit = test.data.samples[index]
            matched[person[hit.label]] = matched.get(person[hit.label], 0) + 1
            rows.append(
                [name, sample.path, f"{score:.4f}", person[hit.label], sample_key(hit.path)]
            )
        elif dropped:  # not matched itself: its identity was, with this test person
            rows.append([name, sample.path, "identity matched", person[whole[sample.label]], ""])
    return {
        "labelled": labelled,
        "faces": len(data.samples),
        "dropped": int(drop.sum()),
        "identities_dropped_whole": {identity[k]: person[v] for k, v in whole.items()},
        "kept": len(kept),
        "list": str(args.out / f"{name}.txt"),
        "matched_test_people": dict(sorted(matched.items(), key=lambda kv: -kv[1])),
    }


def screen(args: argparse.Namespace) -> dict:
    """Every check and every read before the teacher runs; then the scores, the lists and the
    report."""
    test_data = read_set(args.test_people, "--test-people")
    calibration = read_set(args.calibrate, "--calibrate") if args.calibrate else None
    if calibration is None and args.threshold is None:
        raise ScreenError("give --threshold, or --calibrate with faces of other people")
    sources = read_sources(args)
    embed = Embedder(args.teacher, args.size, args.batch, args.backend, args.out / "cache")
    test = TestPeople(test_data, embed(test_data.samples, "test people"))
    chosen = choose_threshold(args, embed, calibration, test.features)
    threshold = chosen["threshold"]
    chosen["same_person_recall"] = same_person_recall(test.features, test.labels, threshold)
    report = {
        **chosen,
        "teacher": args.teacher,
        "test_people": args.test_people,
        "same_person": args.same_person,
        "sources": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[list] = []
    for name, (spec, data, labelled) in sources.items():
        part = screen_source(name, data, labelled, embed, test, threshold, args, rows)
        report["sources"][name] = {"source": spec, **part}
    with open(args.out / "dropped.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "face", "best_cosine", "test_person", "test_face"])
        writer.writerows(rows)
    (args.out / REPORT).write_text(json.dumps(report, indent=1) + "\n")
    return report


def alignment_counts(source: str) -> dict[str, int]:
    """What crossres-align's report beside an aligned source says: images, aligned, not found
    ({} when the source has no such report)."""
    report = Path(source) / "align_report.csv"
    if not report.is_file():
        return {}
    with open(report, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        "images": len(rows),
        "aligned": sum(r["status"] == "aligned" for r in rows),
        "not_found": sum(r["status"] != "aligned" for r in rows),
    }


def markdown(report: dict) -> str:
    """The report as the README shows it: the threshold and how it was chosen, then per source
    what alignment and screening left."""
    recall = report["same_person_recall"]
    lines = [
        f"Screened with {Path(report['teacher']).name} against {report['test_people']} at "
        f"cosine {report['threshold']:.4f}: {report['how']}.",
    ]
    if "calibration" in report:
        c = report["calibration"]
        lines[0] += (
            f" Calibration: {c['count']} faces of {c['faces']}, best cosine to a test face median "
            f"{c['best_cosine_median']:.3f}, highest {c['best_cosine_max']:.3f}; "
            f"{c['dropped_at_threshold']} of them reach the threshold."
        )
    lines[0] += (
        f" Another photograph of a test person reaches it against that person's other faces "
        f"{recall['reached']} times in {recall['faces']} ({recall['recall']:.0%}): what a "
        "one-against-many threshold that spares strangers can catch; an identity of a labelled "
        f"source with {report['same_person']} or more faces matched to one test person is dropped "
        "whole."
    )
    lines += [
        "",
        "| source | images | aligned | not found | screened out | identities dropped whole | kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, part in report["sources"].items():
        a = alignment_counts(part["source"])
        whole = part["identities_dropped_whole"]
        people = ", ".join(f"{k} ({v})" for k, v in whole.items()) if whole else "-"
        lines.append(
            f"| {name}{'' if part['labelled'] else ' (unlabelled)'} | {a.get('images', '-')} | "
            f"{a.get('aligned', part['faces'])} | {a.get('not_found', '-')} "
            f"| {part['dropped']} | {people} | {part['kept']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crossres-screen", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "sources", nargs="*", help="labelled training faces: folders, list files, packed sets"
    )
    parser.add_argument(
        "--unlabelled", nargs="+", default=[], help="training faces whose folders are not people"
    )
    parser.add_argument(
        "--same-person",
        type=int,
        default=2,
        help="an identity of a labelled source with this many faces matched to one test person "
        "is dropped whole",
    )
    parser.add_argument("--test-people", required=True, help="faces of the people tested on")
    parser.add_argument("--out", type=Path, required=True, help="lists and report go here")
    parser.add_argument("--teacher", default="dlib_face_recognition_resnet_model_v1")
    parser.add_argument("--calibrate", help="faces of people known to share no one with the test")
    parser.add_argument("--false-match", type=float, default=0.01)
    parser.add_argument("--threshold", type=float, help="a cosine, instead of --calibrate's")
    parser.add_argument("--size", type=int, default=0, help="face side (0: the network's own)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--backend", default="auto", choices=["auto", "dali", "torchvision"])
    parser.add_argument(
        "--markdown", action="store_true", help="print the report as a table (make faces-screen)"
    )
    args = parser.parse_args(argv)
    try:
        report = screen(args)
    except CrossresError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.markdown:
        print(markdown(report))
        return 0
    recall = report["same_person_recall"]
    print(
        f"threshold {report['threshold']:.4f} ({report['how']}); another face of a test person "
        f"reaches it {recall['reached']} times in {recall['faces']}"
    )
    for name, part in report["sources"].items():
        whole = part["identities_dropped_whole"]
        people = f" ({len(whole)} identities whole: {', '.join(whole)})" if whole else ""
        print(
            f"{name}: {part['dropped']} of {part['faces']} dropped{people}, {part['kept']} kept "
            f"-> {part['list']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
