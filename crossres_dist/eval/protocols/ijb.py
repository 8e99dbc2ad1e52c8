"""IJB-B and IJB-C: 1:1 template verification and 1:N identification, at full resolution and
with the probe side degraded (cross-resolution).

The layout most face-recognition code reads (ROOT is the IJBB or IJBC folder; P is ijbb or ijbc):

    ROOT/loose_crop/IMAGE                         the face images
    ROOT/meta/P_face_tid_mid.txt                  IMAGE TEMPLATE_ID MEDIA_ID
    ROOT/meta/P_template_pair_label.txt           TEMPLATE_1 TEMPLATE_2 LABEL (1: same subject)
    ROOT/meta/P_name_5pts_score.txt (or ROOT/)    IMAGE x1 y1 ... x5 y5 DETECTOR_SCORE
    ROOT/meta/P_1N_gallery_S1.csv, _S2.csv        (IJB-C: _G1, _G2) NIST's gallery templates
    ROOT/meta/P_1N_probe_mixed.csv                NIST's probe templates

The CSVs are NIST's, with a header naming TEMPLATE_ID and SUBJECT_ID. Faces are aligned from
their five landmarks (``eval.align``). A template's feature is the media-mean-then-sum of its
image features, L2-normalised (``eval.templates``).

Cross-resolution, as the paper: at r px, 1:1 compares the first template of every pair degraded
to r with the second at full resolution, and 1:N searches probes at r in a full-resolution
gallery.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossres_dist import distributed
from crossres_dist.data.settings import DataConfig
from crossres_dist.eval.align import align
from crossres_dist.eval.metrics import cmc, cosine, open_set, verification
from crossres_dist.eval.protocols.base import (
    Features,
    Protocol,
    first_of,
    fmt,
    number,
    provenance_lines,
    read_table,
    require,
    table,
    unique,
)
from crossres_dist.eval.templates import template_features
from pipelines import ViewSettings
from pipelines.sources import DataError, Sample

log = logging.getLogger(__name__)
FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
FPIRS = (0.01, 0.1)
RANKS = (1, 5, 10)
GALLERIES = {"ijbb": ("S1", "S2"), "ijbc": ("G1", "G2")}


def read_subjects(path: Path, known: set[int], tid_mid: Path) -> dict[int, int]:
    """template id -> subject id, from one of NIST's 1:N CSVs."""
    require(path, "NIST 1:N CSV")
    with path.open(newline="", encoding="utf-8-sig") as handle:  # a BOM is no header
        reader = csv.reader(handle)
        header = [h.strip().upper() for h in next(reader, [])]
        if "TEMPLATE_ID" not in header or "SUBJECT_ID" not in header:
            raise DataError(f"{path}:1: the header names no TEMPLATE_ID and SUBJECT_ID")
        t_col, s_col = header.index("TEMPLATE_ID"), header.index("SUBJECT_ID")
        subjects = {}
        for number, row in enumerate(reader, 2):
            if not row:
                continue
            try:
                template, subject = int(row[t_col]), int(row[s_col])
            except (ValueError, IndexError):
                raise DataError(f"{path}:{number}: unreadable TEMPLATE_ID/SUBJECT_ID") from None
            if template not in known:
                raise DataError(f"{path}:{number}: template {template} is not in {tid_mid}")
            subjects[template] = subject
    if not subjects:
        raise DataError(f"{path}: lists no template: an empty gallery or probe set")
    return subjects


@dataclass(frozen=True)
class Listed:
    """The images of P_face_tid_mid.txt that are there: their line in the file, name, template
    and media."""

    lines: list[int]
    names: list[str]
    templates: np.ndarray
    media: np.ndarray


def read_images(tid_mid: Path, images: Path) -> Listed:
    """P_face_tid_mid.txt: every listed image with its template and media. A missing image is
    left out (its template uses the others, said once); a template left with none is refused."""
    rows = read_table(tid_mid, 3, "image template_id media_id")
    if not rows:
        raise DataError(f"{tid_mid}: no images listed")
    names = [f[0] for _, f in rows]
    templates = np.array([number(f[1], int, tid_mid, n, "template id") for n, f in rows])
    media = np.array([number(f[2], int, tid_mid, n, "media id") for n, f in rows])
    present = np.array([(images / n).is_file() for n in names])
    for t in np.unique(templates[~present]):
        if not present[templates == t].any():
            first = int(np.flatnonzero(templates == t)[0])
            raise DataError(
                f"{tid_mid}:{rows[first][0]}: template {t} has no readable image in {images} "
                f"(e.g. {names[first]})"
            )
    if not present.all():
        log.warning(
            "%s: %d listed images are missing; their templates use the others",
            tid_mid,
            int((~present).sum()),
        )
    keep = np.flatnonzero(present)
    return Listed(
        [rows[i][0] for i in keep], [names[i] for i in keep], templates[keep], media[keep]
    )


def read_landmarks(
    marks_file: Path, listed: Listed, tid_mid: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Each listed image's five landmarks (N x 5 x 2) and detector score (N), from
    P_name_5pts_score.txt; an image without a line is refused."""
    marks = {
        f[0]: [number(v, float, marks_file, n, "landmark") for v in f[1:]]
        for n, f in read_table(marks_file, 12, "image, 5 x (x y), score")
    }
    landmarks = np.zeros((len(listed.names), 5, 2))
    scores = np.zeros(len(listed.names))
    for i, name in enumerate(listed.names):
        if name not in marks:
            raise DataError(f"{marks_file}: no landmarks for {name} ({tid_mid}:{listed.lines[i]})")
        values = np.array(marks[name], float)
        landmarks[i] = values[:10].reshape(5, 2)
        scores[i] = values[10]
    return landmarks, scores


def read_template_pairs(pair_file: Path, known: set[int], tid_mid: Path) -> np.ndarray:
    """P_template_pair_label.txt: (template 1, template 2, label) rows, every template listed in
    tid_mid and every label 0 or 1."""
    pairs = []
    for line, fields in read_table(pair_file, 3, "template_1 template_2 label"):
        a, b, label = (number(x, int, pair_file, line, "template pair field") for x in fields)
        for t in (a, b):
            if t not in known:
                raise DataError(f"{pair_file}:{line}: template {t} is not in {tid_mid}")
        if label not in (0, 1):
            raise DataError(f"{pair_file}:{line}: label {label} is neither 0 nor 1")
        pairs.append((a, b, label))
    return np.array(pairs, np.int64).reshape(-1, 3)


def read_search(meta: Path, p: str, task: str, known: set[int], tid_mid: Path) -> dict | None:
    """NIST's 1:N probe and gallery templates with their subjects, or None when 1:N is not
    asked for (--ijb-task) or, with "all", none of its CSVs is there (said once). Some of them
    missing is refused: a partial 1:N would not be the benchmark."""
    csvs = [meta / f"{p}_1N_gallery_{g}.csv" for g in GALLERIES[p]]
    probe_csv = meta / f"{p}_1N_probe_mixed.csv"
    missing = [c for c in [*csvs, probe_csv] if not c.is_file()]
    if task == "all" and missing and len(missing) < len(csvs) + 1:
        raise DataError(
            f"{missing[0]}: NIST 1:N CSV not found, while the other 1:N CSVs are there: restore "
            "it, or pass --ijb-task verification to leave 1:N identification out"
        )
    if task == "identification" or (task == "all" and not missing):
        galleries = {g: read_subjects(c, known, tid_mid) for g, c in zip(GALLERIES[p], csvs)}
        return {"probe": read_subjects(probe_csv, known, tid_mid), "galleries": galleries}
    if task == "all":
        log.warning(
            "%s: none of the 1:N CSVs (%s) is there: 1:N identification is left out, 1:1 "
            "verification only",
            meta,
            ", ".join(c.name for c in [*csvs, probe_csv]),
        )
    return None


class IJB(Protocol):
    prefix = ""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("IJB-B / IJB-C")
        group.add_argument(
            "--ijb-task",
            choices=["all", "verification", "identification"],
            default="all",
            help="1:1 verification, 1:N identification, or both (default; 1:N only when its "
            "CSVs are there)",
        )
        group.add_argument(
            "--detector-weights",
            action="store_true",
            help="weight each image's feature by its detector score in its template",
        )
        group.add_argument(
            "--aligned-cache",
            help="where the aligned faces are kept (default OUT/aligned); share it between the "
            "elements of a job array so that the faces are aligned once",
        )
        group.add_argument(
            "--face-scale",
            type=float,
            default=0.7,
            help="how much of the aligned canvas the face's reference landmarks span",
        )

    def __init__(self, args: argparse.Namespace, data_cfg: DataConfig, source: str) -> None:
        super().__init__(args, data_cfg, source)
        root, p = Path(args.root), self.prefix
        self.root, self.data_name = root, f"{p.upper()} at {root}"
        meta = require(root / "meta", "IJB meta folder")
        images = require(root / "loose_crop", "IJB loose_crop image folder")
        tid_mid = meta / f"{p}_face_tid_mid.txt"
        listed = read_images(tid_mid, images)
        self.lines, self.names = listed.lines, listed.names
        self.templates, self.media = listed.templates, listed.media
        self.known = set(self.templates.tolist())
        self.sources = [images / n for n in self.names]
        marks_file = first_of(
            [meta / f"{p}_name_5pts_score.txt", root / f"{p}_name_5pts_score.txt"],
            "five-landmark file",
        )
        self.landmarks, self.scores = read_landmarks(marks_file, listed, tid_mid)
        task = args.ijb_task
        self.pairs = None
        if task in ("all", "verification"):
            pair_file = meta / f"{p}_template_pair_label.txt"
            self.pairs = read_template_pairs(pair_file, self.known, tid_mid)
        self.search = read_search(meta, p, task, self.known, tid_mid)
        # The images the network sees: aligned crops (written by prepare).
        self.samples = []

    def prepare(self, out: Path, views: ViewSettings) -> None:
        """Align every face once (each rank its share; kept in OUT/aligned for the next run)."""
        side, scale = views.resize_shorter, self.args.face_scale
        base = Path(self.args.aligned_cache) if self.args.aligned_cache else out / "aligned"
        folder = base / f"{self.prefix}-{side}px-scale{scale:g}"
        # Each aligned face is named after what made it (the source file as it is now, its five
        # landmarks, the canvas and the face scale): a changed input is aligned again, never
        # served from a shared --aligned-cache under its old name.
        targets = [
            folder
            / f"{Path(n).with_suffix('').as_posix()}-{self._alignment_key(i, side, scale)}.png"
            for i, n in enumerate(self.names)
        ]
        rank, world = distributed.rank(), distributed.world_size()
        todo = [i for i in range(rank, len(targets), world) if not targets[i].is_file()]
        if todo:
            log.info("aligning %d faces into %s", len(todo) * world, folder)
        for i in todo:
            targets[i].parent.mkdir(parents=True, exist_ok=True)
            try:
                align(self.sources[i], self.landmarks[i], targets[i], side, scale)
            except OSError as err:
                raise DataError(f"{self.sources[i]}: cannot read this image ({err})") from None
        distributed.broadcast_object(None)  # every rank's share is written
        self.samples = [Sample(str(t), int(tid)) for t, tid in zip(targets, self.templates)]

    def _alignment_key(self, i: int, side: int, scale: float) -> str:
        stat = self.sources[i].stat()
        marks = [round(float(v), 4) for v in np.ravel(self.landmarks[i])]
        parts = [self.names[i], stat.st_size, stat.st_mtime_ns, marks, side, scale]
        return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:10]

    def images(self) -> list[str]:
        return [str(p) for p in self.sources]  # the release's images, before alignment

    def conditions(self, requested: list) -> list:
        # The full-resolution side of every comparison is always needed.
        return unique([*requested, None])

    def _templates(self, features):
        weights = self.scores if self.args.detector_weights else None
        ids, feats = template_features(features, self.templates, self.media, weights)
        return {int(t): i for i, t in enumerate(ids)}, feats

    def score(self, checkpoint: str, features: Features) -> dict:
        full_index, full = self._templates(features["full"][0])
        result = {}
        for label, (image_features, _) in features.items():
            # The full-resolution templates are pooled once, above.
            index, degraded = (
                (full_index, full) if label == "full" else self._templates(image_features)
            )
            row = {}
            if self.pairs is not None:
                a = degraded[[index[t] for t in self.pairs[:, 0]]]
                b = full[[full_index[t] for t in self.pairs[:, 1]]]
                scores = (a * b).sum(1).numpy()
                row["verification"] = verification(scores, self.pairs[:, 2] == 1, FARS)
            if self.search is not None:
                probes = self.search["probe"]
                probe_ids = np.array(sorted(probes))
                probe_subjects = np.array([probes[t] for t in probe_ids])
                per_gallery = {}
                for g, gallery in self.search["galleries"].items():
                    gallery_ids = np.array(sorted(gallery))
                    sims = cosine(
                        degraded[[index[t] for t in probe_ids]],
                        full[[full_index[t] for t in gallery_ids]],
                    )
                    subjects = np.array([gallery[t] for t in gallery_ids])
                    per_gallery[g] = {
                        **cmc(sims, probe_subjects, subjects, RANKS),
                        **open_set(sims, probe_subjects, subjects, FPIRS, self.open_set_rank),
                    }
                mean = {
                    k: (
                        None
                        if any(v[k] is None for v in per_gallery.values())
                        else float(np.mean([v[k] for v in per_gallery.values()]))
                    )
                    for k in next(iter(per_gallery.values()))
                }
                row["identification"] = {"galleries": per_gallery, "mean": mean}
            result[label] = row
        return {"by_resolution": result}

    def markdown(self, report: dict) -> str:
        lines = [f"{report['data']}: {report['images']} images.", *provenance_lines(report), ""]
        for name, model in report["models"].items():
            rows = model["by_resolution"]
            labels = list(rows)
            if self.pairs is not None:
                lines += [
                    f"{name}, 1:1 verification, first template at r px, second at full "
                    f"({len(self.pairs)} pairs): TAR at FAR",
                    "",
                    *table(
                        ["r", *(f"{far:g}" for far in FARS), "AUC"],
                        [
                            [
                                r,
                                *(fmt(rows[r]["verification"][f"tar@far={far:g}"]) for far in FARS),
                                fmt(rows[r]["verification"]["auc"]),
                            ]
                            for r in labels
                        ],
                    ),
                    "",
                ]
            if self.search is not None:
                keys = [f"rank{k}" for k in RANKS] + [f"tpir@fpir={f:g}" for f in FPIRS]
                lines += [
                    f"{name}, 1:N identification, probes at r px, full-resolution galleries "
                    f"(mean of the two): CMC and open-set TPIR at FPIR (rank {self.open_set_rank})",
                    "",
                    *table(
                        ["r", *keys],
                        [
                            [r, *(fmt(rows[r]["identification"]["mean"][k]) for k in keys)]
                            for r in labels
                        ],
                    ),
                    "",
                ]
        return "\n".join(lines)

    def plots(self, out: Path, report: dict) -> list[Path]:
        from crossres_dist.eval.report import plot_rocs

        return plot_rocs(out, report, "verification")


class IJBB(IJB):
    name, prefix = "ijbb", "ijbb"
    summary = "IJB-B: 1:1 template verification (TAR at FAR) and 1:N identification"


class IJBC(IJB):
    name, prefix = "ijbc", "ijbc"
    summary = "IJB-C: 1:1 template verification (TAR at FAR) and 1:N identification"
