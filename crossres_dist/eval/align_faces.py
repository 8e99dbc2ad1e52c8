"""``crossres-align RAW OUT --template dlib150|arcface112``: detect each face and its five
landmarks, and write the aligned chip a network needs.

    crossres-align ../shared/data/lfw_deepfunneled_10to19 runs/lfw-10to19-dlib150 --template dlib150

- RAW is anything the training data takes: identity folders, a list file, or a packed set
  (RecordIO, webdataset). OUT gets identity folders of PNG chips and ``align_report.csv`` with a
  row for every input image: aligned, or why not. Nothing is dropped in silence: a face that is
  not found is one line on stderr and one row in the report.
- Detection and landmarks are dlib's (``pip install crossres-dist[align]``: the dlib-bin wheel;
  the landmark model is the 5-point one that face_recognition_models ships; never the 68-point
  one, whose training data excludes commercial use). Where an image holds several faces, the one
  whose centre is nearest the image's centre is taken, as face sets centre their subject.
- ``dlib150``: dlib's own chip (``get_face_chip``, 150 px, padding 0.25): what dlib's face
  network was trained on and what ``compute_face_descriptor`` feeds it.
- ``arcface112``: the similarity transform onto ArcFace's 112 px template (``eval.align``).
  dlib's five points are eye corners and the base of the nose, not ArcFace's eye centres, nose
  tip and mouth corners: the eye centres and the nose base are fitted to the template's eyes and
  nose, and the run says so in one line.
- ``--pad F``: a face the detector misses is looked for again in the image padded by F of its
  size on every side (its edge pixels repeated). Tightly cropped faces (UTKFace's) fill the frame,
  and dlib's HOG detector needs some context around a face to find it; the chip of a face found
  at once is the same with or without the option, and the report says which faces needed it.
- An existing chip is kept (a rerun finishes what a stopped one left), and every chip is written
  atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from crossres_dist.errors import CrossresError
from crossres_dist.eval.align import REFERENCE_112, similarity
from crossres_dist.weights.dlib_dat import packaged_model
from crossres_dist.weights.forms import FormatError

TEMPLATES = ("dlib150", "arcface112")
PREDICTOR = "shape_predictor_5_face_landmarks.dat"
REPORT = "align_report.csv"


class AlignError(CrossresError, RuntimeError):
    """An aligner that cannot start (dlib or its landmark model missing, bad arguments)."""


def predictor_path() -> Path:
    """dlib's 5-point landmark model, from the installed face_recognition_models package."""
    try:
        return packaged_model(
            PREDICTOR,
            f"the 5-point landmark model ({PREDICTOR})",
            "pip install crossres-dist[align]",
        )
    except FormatError as err:
        raise AlignError(str(err)) from None


def import_dlib():
    try:
        import dlib
    except ImportError:
        raise AlignError(
            "crossres-align detects faces with dlib: pip install crossres-dist[align] "
            "(the dlib-bin wheel)"
        ) from None
    return dlib


_WORKER: dict = {}


def _start_worker(predictor: str, template: str, pad: float = 0.0) -> None:
    dlib = import_dlib()
    _WORKER.update(
        dlib=dlib,
        detector=dlib.get_frontal_face_detector(),
        predictor=dlib.shape_predictor(predictor),
        template=template,
        pad=pad,
    )


def padded(image: np.ndarray, pad: float) -> np.ndarray:
    """`image` with `pad` of its height and width added on every side, edge pixels repeated."""
    dy, dx = round(image.shape[0] * pad), round(image.shape[1] * pad)
    return np.pad(image, ((dy, dy), (dx, dx), (0, 0)), mode="edge")


def central_face(faces, width: int, height: int):
    """The detection nearest the image's centre (ties: the larger)."""

    def key(rect):
        dx = (rect.left() + rect.right()) / 2 - width / 2
        dy = (rect.top() + rect.bottom()) / 2 - height / 2
        return (dx * dx + dy * dy, -rect.area())

    return min(faces, key=key)


def arcface_chip(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The face on ArcFace's 112 px template from dlib's five points (eye corners 0-1 and 2-3,
    nose base 4): eye centres and nose onto the template's eyes and nose."""
    from PIL import Image

    eyes = sorted([points[0:2].mean(0), points[2:4].mean(0)], key=lambda p: p[0])
    source = np.array([eyes[0], eyes[1], points[4]])
    matrix = similarity(source, REFERENCE_112[:3])
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    chip = Image.fromarray(image).transform(
        (112, 112), Image.Transform.AFFINE, inverse.reshape(-1).tolist(), Image.BILINEAR
    )
    return np.asarray(chip)


def align_one(job: tuple[str, str]) -> tuple[str, str, int]:
    """(status, detail, faces) for one image; writes its chip to the target."""
    from PIL import Image, UnidentifiedImageError

    from pipelines.packed import read_encoded

    source, target = job
    dlib = _WORKER["dlib"]
    try:
        with Image.open(io.BytesIO(read_encoded(source))) as opened:
            image = np.asarray(opened.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        return "undecodable", str(err).splitlines()[0][:120], 0
    faces = _WORKER["detector"](image, 1)
    detail = ""
    if len(faces) == 0 and _WORKER["pad"] > 0:
        image = padded(image, _WORKER["pad"])
        faces = _WORKER["detector"](image, 1)
        detail = f"found in the image padded by {_WORKER['pad']:g}"
    if len(faces) == 0:
        tried = f", and padded by {_WORKER['pad']:g}" if _WORKER["pad"] > 0 else ""
        return "no_face", f"dlib's detector found no face (upsampled once{tried})", 0
    rect = central_face(faces, image.shape[1], image.shape[0])
    shape = _WORKER["predictor"](image, rect)
    if _WORKER["template"] == "dlib150":
        chip = dlib.get_face_chip(image, shape, size=150, padding=0.25)
    else:
        points = np.array([[p.x, p.y] for p in shape.parts()], float)
        chip = arcface_chip(image, points)
    out = Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    Image.fromarray(chip).save(partial, format="PNG")
    partial.replace(out)
    return "aligned", detail, len(faces)


def _run(todo: list, workers: int, predictor: str, template: str, pad: float):
    """The results of `todo` in order: in this process for one worker, else in a pool."""
    if workers == 1:
        _start_worker(predictor, template, pad)
        yield from map(align_one, todo)
        return
    with ProcessPoolExecutor(
        workers, initializer=_start_worker, initargs=(predictor, template, pad)
    ) as pool:
        yield from pool.map(align_one, todo, chunksize=8)


def plan_jobs(raw: str, out: Path) -> list[tuple[str, str, str]]:
    """(source, identity, target) for every image of `raw`, targets unique per identity."""
    from pipelines.packed import parse_locator
    from pipelines.sources import DataError, load_source

    try:
        dataset = load_source(raw)
    except DataError as err:
        raise AlignError(str(err)) from None
    name_of = {label: name for name, label in dataset.identities.items()}
    jobs, taken = [], set()
    for index, sample in enumerate(dataset.samples):
        identity = name_of[sample.label]
        located = parse_locator(sample.path)
        # A packed record is named by its place in the set, a plain file by its own name.
        stem = f"{index:07d}" if located else Path(sample.path).stem
        name = f"{stem}.png"
        if (identity, name) in taken:  # two folders' files of one name in a list file
            name = f"{stem}_{index:07d}.png"
        taken.add((identity, name))
        jobs.append((sample.path, identity, str(out / identity / name)))
    return jobs


def align_set(
    raw: str, out: Path, template: str, workers: int = 0, pad: float = 0.0
) -> dict[str, int]:
    """Align every image of `raw` into `out`; the counts by status (faces found only in the
    padded image counted apart). The report is written even when the run is stopped, for what
    was done."""
    if template not in TEMPLATES:
        raise AlignError(f"--template: {template!r} is not one of {', '.join(TEMPLATES)}")
    if not 0 <= pad <= 1:
        raise AlignError(f"--pad: {pad} is not a fraction of the image between 0 and 1")
    predictor = predictor_path()
    import_dlib()
    jobs = plan_jobs(raw, out)
    if template == "arcface112":
        print(
            "note: arcface112 from dlib's 5 points: eye centres and nose base fitted to "
            "ArcFace's eyes and nose tip (dlib finds no mouth corners)",
            file=sys.stderr,
        )
    out.mkdir(parents=True, exist_ok=True)
    todo = [(s, t) for s, _, t in jobs if not Path(t).is_file()]
    earlier = earlier_rows(out / REPORT)
    results = {
        t: earlier.get(t, ("aligned", "kept from an earlier run", 1))
        for _, _, t in jobs
        if Path(t).is_file()
    }
    workers = workers or min(len(todo), os.cpu_count() or 1) or 1
    try:
        for (source, target), result in zip(
            todo, _run(todo, workers, str(predictor), template, pad)
        ):
            results[target] = result
            if result[0] != "aligned":
                print(f"{source}: {result[0]}: {result[1]}", file=sys.stderr)
    finally:
        write_report(out / REPORT, jobs, results)
    counts: dict[str, int] = {}
    for status, detail, _ in results.values():
        counts[status] = counts.get(status, 0) + 1
        if status == "aligned" and detail.startswith("found in the image padded"):
            counts["aligned_padded"] = counts.get("aligned_padded", 0) + 1
    return counts


def earlier_rows(path: Path) -> dict[str, tuple[str, str, int]]:
    """{chip: (status, detail, faces)} of the aligned rows an earlier run's report holds, so that
    a rerun that keeps a chip keeps what was found of it (padded or not); {} without one."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("status") == "aligned" and r.get("chip")]
    return {
        str(path.parent / r["chip"]): ("aligned", r["detail"], int(r["faces_found"] or 1))
        for r in rows
    }


def write_report(path: Path, jobs, results) -> None:
    partial = path.with_name(f"{path.name}.tmp")
    with open(partial, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "identity", "chip", "status", "detail", "faces_found"])
        for source, identity, target in jobs:
            status, detail, faces = results.get(target, ("not_done", "the run stopped first", 0))
            chip = os.path.relpath(target, path.parent) if status == "aligned" else ""
            writer.writerow([source, identity, chip, status, detail, faces])
    partial.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crossres-align", description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", help="identity folders, a list file or a packed set")
    parser.add_argument("out", type=Path, help="where the aligned identity folders go")
    parser.add_argument("--template", default="dlib150", help=f"one of {', '.join(TEMPLATES)}")
    parser.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    parser.add_argument(
        "--pad",
        type=float,
        default=0.0,
        help="look again for a face not found in the image padded by this fraction of its size "
        "on every side (tight crops; 0: never)",
    )
    args = parser.parse_args(argv)
    try:
        counts = align_set(args.raw, args.out, args.template, args.workers, args.pad)
    except CrossresError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    others = ", ".join(
        f"{k} {v}" for k, v in sorted(counts.items()) if k not in ("aligned", "aligned_padded")
    )
    total = sum(v for k, v in counts.items() if k != "aligned_padded")
    if counts.get("aligned_padded"):
        others = f"{counts['aligned_padded']} of them found only when padded" + (
            f", {others}" if others else ""
        )
    print(
        f"{args.out}: {counts.get('aligned', 0)} of {total} images aligned "
        f"({args.template}); {others + '; ' if others else ''}report: {args.out / REPORT}"
    )
    if not counts.get("aligned"):
        print(f"error: {args.raw}: no face found in any image", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
