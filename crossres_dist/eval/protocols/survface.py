"""QMUL-SurvFace: verification and open-set identification of native surveillance faces
(median 24 x 20 px).

The release's layout (ROOT is the folder that holds the two test sets):

    ROOT/Face_Verification_Test_Set/verification_images/
    ROOT/Face_Verification_Test_Set/positive_pairs_names.mat   positive_pairs_names (N x 2)
    ROOT/Face_Verification_Test_Set/negative_pairs_names.mat   negative_pairs_names (N x 2)
    ROOT/Face_Identification_Test_Set/gallery/, mated_probe/, unmated_probe/
    ROOT/Face_Identification_Test_Set/gallery_img_ID_pairs.mat      gallery_set, gallery_ids
    ROOT/Face_Identification_Test_Set/mated_probe_img_ID_pairs.mat  mated_probe_set,
                                                                     mated_probe_ids

Every image in ``unmated_probe/`` is a non-mated probe. Verification reports TAR at FAR 0.3,
0.1, 0.01, 0.001 and AUC; identification TPIR at FPIR 0.3, 0.2, 0.1 at rank 20, the
benchmark's TPIR20@FPIR (``--open-set-rank`` sets another rank). The faces are evaluated at
their own resolution.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch.nn.functional as F

from crossres_dist.data.settings import DataConfig
from crossres_dist.eval.metrics import cosine, open_set, verification
from crossres_dist.eval.protocols.base import (
    Features,
    Protocol,
    fmt,
    image_files,
    named_images,
    provenance_lines,
    read_mat,
    require,
    strings,
    table,
)
from pipelines.sources import DataError, Sample

log = logging.getLogger(__name__)
FARS = (0.001, 0.01, 0.1, 0.3)  # every table: the strictest operating point first
FPIRS = (0.1, 0.2, 0.3)


def read_pairs_mat(verify_dir: Path, paths: list[Path]) -> np.ndarray:
    """The verification pairs of positive_pairs_names.mat and negative_pairs_names.mat as rows
    (index of image a, index of image b, same): every image named is appended once to `paths`,
    which the indices point into. A cell that is not N x 2 is refused, never guessed."""
    images = require(verify_dir / "verification_images", "verification image folder")
    index: dict[str, int] = {}
    pairs = []
    for label, key in ((True, "positive_pairs_names"), (False, "negative_pairs_names")):
        mat = verify_dir / f"{key}.mat"
        raw = np.asarray(read_mat(mat, (key,), "SurvFace pair file")[key], dtype=object)
        if raw.ndim != 2 or raw.shape[1] != 2:
            # Read as N x 2 it would pair other faces: refused, never guessed.
            raise DataError(
                f"{mat}: {key} is {' x '.join(map(str, raw.shape))}; the release stores "
                "N x 2 (one name pair per row): store it so"
            )
        names = strings(raw)
        # MATLAB stores the N x 2 cell column by column.
        half = len(names) // 2
        for a, b in zip(names[:half], names[half:]):
            ends = []
            for name in (a, b):
                if name not in index:
                    if not (images / name).is_file():
                        raise DataError(f"{mat}: names {name}, which is not in {images}")
                    index[name] = len(paths)
                    paths.append(images / name)
                ends.append(index[name])
            pairs.append((*ends, label))
    return np.array(pairs, dtype=object)


def read_identification(ident_dir: Path, paths: list[Path]) -> dict:
    """The open-set identification set: gallery, mated and unmated probes appended to `paths`,
    with their positions and identities (a non-mated probe's is one no gallery image has)."""
    gallery, gallery_ids = named_images(ident_dir, "gallery", "gallery_img_ID_pairs", "gallery")
    if not gallery:
        raise DataError(
            f"{ident_dir / 'gallery'}: no gallery images (gallery_img_ID_pairs.mat "
            "names none): identification needs a gallery"
        )
    mated, mated_ids = named_images(
        ident_dir, "mated_probe", "mated_probe_img_ID_pairs", "mated_probe"
    )
    unmated = image_files(ident_dir / "unmated_probe")
    if not unmated:
        log.warning(
            "%s has no images: open-set TPIR at FPIR cannot be measured (n/a in the "
            "tables); only mated probes are scored",
            ident_dir / "unmated_probe",
        )
    start = len(paths)
    paths += [*gallery, *mated, *unmated]
    return {
        "gallery": np.arange(start, start + len(gallery)),
        "probes": np.arange(start + len(gallery), len(paths)),
        "gallery_ids": gallery_ids,
        "probe_ids": np.concatenate(
            [mated_ids, np.full(len(unmated), min(gallery_ids.min(), 0) - 1)]
        ),
    }


class SurvFace(Protocol):
    name = "survface"
    summary = "QMUL-SurvFace: native low-resolution verification and open-set identification"
    native_resolution = True
    default_open_set_rank = 20  # the benchmark's TPIR20@FPIR

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument_group("QMUL-SurvFace").add_argument(
            "--survface-task",
            choices=["all", "verification", "identification"],
            default="all",
            help="which of the two test sets (default: both, each when its folder is there)",
        )

    def __init__(self, args, data_cfg: DataConfig, source: str) -> None:
        super().__init__(args, data_cfg, source)
        root = require(Path(args.root), "QMUL-SurvFace root")
        self.data_name = f"QMUL-SurvFace at {root}"
        task = args.survface_task
        verify_dir = root / "Face_Verification_Test_Set"
        ident_dir = root / "Face_Identification_Test_Set"
        self.pairs = self.ident = None
        paths: list[Path] = []
        if task == "verification" or (task == "all" and verify_dir.exists()):
            self.pairs = read_pairs_mat(verify_dir, paths)
        if task == "identification" or (task == "all" and ident_dir.exists()):
            self.ident = read_identification(ident_dir, paths)
        if self.pairs is None and self.ident is None:
            raise DataError(
                f"{root}: neither Face_Verification_Test_Set nor Face_Identification_Test_Set"
            )
        self.samples = [Sample(str(p), 0) for p in paths]

    def score(self, checkpoint: str, features: Features) -> dict:
        feats = features["full"][0]
        result = {}
        if self.pairs is not None:
            a = feats[self.pairs[:, 0].astype(int)]
            b = feats[self.pairs[:, 1].astype(int)]
            scores = F.cosine_similarity(a.float(), b.float()).numpy()
            result["verification"] = verification(scores, self.pairs[:, 2].astype(bool), FARS)
        if self.ident is not None:
            d = self.ident
            sims = cosine(feats[d["probes"]], feats[d["gallery"]])
            result["identification"] = {
                **open_set(sims, d["probe_ids"], d["gallery_ids"], FPIRS, rank=self.open_set_rank)
            }
        return result

    def markdown(self, report: dict) -> str:
        lines = [
            f"{report['data']}: {report['images']} images, at their own resolution.",
            *provenance_lines(report),
            "",
        ]
        models = report["models"]
        if self.pairs is not None:
            lines += [
                f"Verification ({len(self.pairs)} pairs): TAR at FAR, and AUC",
                "",
                *table(
                    ["model", *(f"{f:g}" for f in FARS), "AUC"],
                    [
                        [
                            n,
                            *(fmt(m["verification"][f"tar@far={f:g}"]) for f in FARS),
                            fmt(m["verification"]["auc"]),
                        ]
                        for n, m in models.items()
                    ],
                ),
                "",
            ]
        if self.ident is not None:
            lines += [
                f"Open-set identification: TPIR{self.open_set_rank} at FPIR",
                "",
                *table(
                    ["model", *(f"{f:g}" for f in FPIRS)],
                    [
                        [n, *(fmt(m["identification"][f"tpir@fpir={f:g}"]) for f in FPIRS)]
                        for n, m in models.items()
                    ],
                ),
                "",
            ]
        return "\n".join(lines)

    def plots(self, out: Path, report: dict) -> list[Path]:
        from crossres_dist.eval.report import plot_rocs

        return plot_rocs(out, report, "verification")
