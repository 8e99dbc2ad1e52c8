"""SCface: surveillance cameras at three distances against a frontal mugshot gallery (Grgic et
al., 2011), the set the journal version of the paper reports.

The release's layout, read as it is (ROOT is the folder that holds these):

    ROOT/mugshot_frontal_cropped_all/NNN_frontal.JPG         the gallery, one per subject
    ROOT/surveillance_cameras_distance_D/camN/NNN_camN_D.jpg  subject NNN, camera N, distance D

Distance 1 is the farthest (4.20 m), 3 the nearest (1.00 m). Cameras 1 to 5 are visible light;
the infrared ones (cam6, cam7 and cam8) are left out unless ``--scface-infrared``. Every
surveillance image of a tested subject is a probe, identified against the mugshots of the tested
subjects: rank-1 (and rank-5) per distance and per camera, as the SCface papers report them.

The split: ``--scface-test-subjects K`` tests the K subjects with the highest numbers (default
80, the split of the papers that fine-tune on SCface: subjects 1-50 for fine-tuning, 51-130 for
testing); ``--scface-test-subjects 130`` tests every subject (no fine-tuning). The faces are
evaluated at their own resolution, the mugshots as the training views see a face.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from crossres_dist.data.settings import DataConfig
from crossres_dist.eval.metrics import cmc, cosine
from crossres_dist.eval.protocols.base import (
    Features,
    Protocol,
    fmt,
    provenance_lines,
    require,
    table,
    unique,
)
from pipelines.sources import DataError, Sample

MUGSHOTS = "mugshot_frontal_cropped_all"
MUGSHOT = re.compile(r"^(\d{3})_frontal\.jpe?g$", re.IGNORECASE)
PROBE = re.compile(r"^(\d{3})_cam(\d)_(\d)\.jpe?g$", re.IGNORECASE)
VISIBLE = (1, 2, 3, 4, 5)
INFRARED = (6, 7, 8)
DISTANCES = (1, 2, 3)
RANKS = (1, 5)


class SCface(Protocol):
    name = "scface"
    summary = "SCface: surveillance cameras at three distances against mugshots, rank-1"
    native_resolution = True

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("SCface")
        group.add_argument(
            "--scface-test-subjects",
            type=int,
            default=80,
            metavar="K",
            help="test the K highest-numbered subjects (default 80: 1-50 are the papers' "
            "fine-tuning split; 130 tests all)",
        )
        group.add_argument(
            "--scface-infrared",
            action="store_true",
            help="also the infrared cameras (cam6, cam7, cam8)",
        )

    def __init__(self, args, data_cfg: DataConfig, source: str) -> None:
        super().__init__(args, data_cfg, source)
        root = require(Path(args.root), "SCface root")
        self.cameras = VISIBLE + (INFRARED if args.scface_infrared else ())
        mugshots = self._mugshots(require(root / MUGSHOTS, "SCface mugshot folder"))
        every = []  # (path, subject, camera, distance) of every subject
        for distance in DISTANCES:
            folder = require(
                root / f"surveillance_cameras_distance_{distance}", "SCface distance folder"
            )
            every += self._probes(folder, distance)
        # The subjects are numbered by the release, whether or not a file is missing: the K
        # highest numbers, so that a lost mugshot cannot shift the tested set in silence.
        known = sorted(set(mugshots) | {p[1] for p in every})
        wanted = args.scface_test_subjects
        if wanted < 1 or wanted > len(known):
            raise DataError(
                f"{root / MUGSHOTS}: {len(known)} subjects, --scface-test-subjects {wanted} "
                f"asks for {'more' if wanted > len(known) else 'none'}"
            )
        self.subjects = known[-wanted:]
        missing = [s for s in self.subjects if s not in mugshots]
        if missing:
            raise DataError(
                f"{root / MUGSHOTS}: tested subject {missing[0]:03d} has surveillance images but "
                f"no mugshot ({missing[0]:03d}_frontal.JPG; {len(missing)} tested subject(s) "
                "without one): restore it, or the gallery would lose a person"
            )
        probes = [p for p in every if p[1] in set(self.subjects)]
        if not probes:
            raise DataError(f"{root}: no surveillance image of the tested subjects")
        self.data_name = (
            f"SCface at {root} ({len(self.subjects)} subjects tested, "
            f"{self.subjects[0]:03d}-{self.subjects[-1]:03d}; cameras "
            f"{', '.join(map(str, self.cameras))})"
        )
        self.n_gallery = len(self.subjects)
        self.gallery_ids = np.array(self.subjects)
        self.probe_ids = np.array([p[1] for p in probes])
        self.probe_camera = np.array([p[2] for p in probes])
        self.probe_distance = np.array([p[3] for p in probes])
        paths = [mugshots[s] for s in self.subjects] + [p[0] for p in probes]
        self.samples = [Sample(str(p), 0) for p in paths]

    @staticmethod
    def _mugshots(folder: Path) -> dict[int, Path]:
        found: dict[int, Path] = {}
        for path in sorted(folder.iterdir()):
            match = MUGSHOT.match(path.name)
            if match is None:
                continue
            subject = int(match[1])
            if subject in found:
                raise DataError(f"{path}: a second mugshot of subject {subject:03d}")
            found[subject] = path
        if not found:
            raise DataError(f"{folder}: no mugshot named NNN_frontal.JPG")
        return found

    def _probes(self, folder: Path, distance: int) -> list[tuple]:
        out = []
        for camera_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            for path in sorted(camera_dir.iterdir()):
                match = PROBE.match(path.name)
                if match is None:
                    continue
                subject, camera, at = int(match[1]), int(match[2]), int(match[3])
                if at != distance or camera_dir.name != f"cam{camera}":
                    raise DataError(
                        f"{path}: names camera {camera} at distance {at}, but lies in "
                        f"{folder.name}/{camera_dir.name}"
                    )
                if camera in self.cameras:
                    out.append((path, subject, camera, distance))
        return out

    def conditions(self, requested: list) -> list:
        return unique([None])

    def score(self, checkpoint: str, features: Features) -> dict:
        feats = features["full"][0]
        g = self.n_gallery
        sims = cosine(feats[g:], feats[:g])
        result = {"all": {**cmc(sims, self.probe_ids, self.gallery_ids, RANKS)}}
        for kind, values, choices in (
            ("distance", self.probe_distance, DISTANCES),
            ("camera", self.probe_camera, self.cameras),
        ):
            for value in choices:
                chosen = values == value
                if chosen.any():
                    result[f"{kind}{value}"] = {
                        **cmc(sims[chosen], self.probe_ids[chosen], self.gallery_ids, RANKS),
                        "probes": int(chosen.sum()),
                    }
        result["all"]["probes"] = len(self.probe_ids)
        return {"identification": result}

    def markdown(self, report: dict) -> str:
        models = report["models"]
        lines = [
            f"{report['data']}: {len(self.probe_ids)} surveillance probes against "
            f"{self.n_gallery} mugshots, at their own resolution.",
            *provenance_lines(report),
            "",
            "Rank-1 identification by distance (1: 4.20 m, 2: 2.60 m, 3: 1.00 m)",
            "",
            *table(
                ["model", *(f"d{d}" for d in DISTANCES), "all", "all rank-5"],
                [
                    [
                        n,
                        *(_rank1(m, f"distance{d}") for d in DISTANCES),
                        fmt(m["identification"]["all"]["rank1"]),
                        fmt(m["identification"]["all"]["rank5"]),
                    ]
                    for n, m in models.items()
                ],
            ),
            "",
            "Rank-1 identification by camera",
            "",
            *table(
                ["model", *(f"cam{c}" for c in self.cameras)],
                [[n, *(_rank1(m, f"camera{c}") for c in self.cameras)] for n, m in models.items()],
            ),
            "",
        ]
        return "\n".join(lines)


def _rank1(model: dict, key: str) -> str:
    entry = model["identification"].get(key)
    return fmt(entry["rank1"]) if entry else "n/a"
