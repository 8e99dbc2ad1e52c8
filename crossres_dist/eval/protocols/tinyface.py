"""TinyFace: identification of native low-resolution faces (about 20 px) against a gallery with
153k distractors.

The release's layout (ROOT is the folder that holds ``Testing_Set``):

    ROOT/Testing_Set/Probe/                          probe faces
    ROOT/Testing_Set/Gallery_Match/                  the probes' mates
    ROOT/Testing_Set/Gallery_Distractor/             distractors (no probe's identity)
    ROOT/Testing_Set/probe_img_ID_pairs.mat          probe_set (file names), probe_ids
    ROOT/Testing_Set/gallery_match_img_ID_pairs.mat  gallery_set, gallery_ids

Ranking is by gallery image, as the release's own evaluation: rank-k counts a probe when an image
of its identity is among its k most similar gallery images. The faces are evaluated at their own
resolution (``--resolutions`` does not apply).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from crossres_dist.data.settings import DataConfig
from crossres_dist.eval.metrics import cmc, cosine
from crossres_dist.eval.protocols.base import (
    Features,
    Protocol,
    fmt,
    image_files,
    named_images,
    provenance_lines,
    require,
    table,
)
from pipelines.sources import DataError, Sample

log = logging.getLogger(__name__)
RANKS = (1, 5, 20)


class TinyFace(Protocol):
    name = "tinyface"
    summary = "TinyFace: native low-resolution probes against a gallery with distractors"
    native_resolution = True

    def __init__(self, args, data_cfg: DataConfig, source: str) -> None:
        super().__init__(args, data_cfg, source)
        test = require(Path(args.root) / "Testing_Set", "TinyFace Testing_Set folder")
        self.data_name = f"TinyFace at {args.root}"
        probes, probe_ids = named_images(test, "Probe", "probe_img_ID_pairs", "probe")
        matches, match_ids = named_images(
            test, "Gallery_Match", "gallery_match_img_ID_pairs", "gallery"
        )
        distractors = image_files(test / "Gallery_Distractor")
        self.n_probe, self.n_match = len(probes), len(matches)
        # A probe whose identity has no gallery match cannot be ranked: it is left out of the
        # CMC, and the report counts the probes that are scored, not the ones listed.
        unmatched = ~np.isin(probe_ids, match_ids)
        self.n_scored = int((~unmatched).sum())
        if unmatched.any():
            log.warning(
                "%s: %d of %d probes have no gallery match (e.g. %s, identity %d) and are left "
                "out of the CMC",
                test / "probe_img_ID_pairs.mat",
                int(unmatched.sum()),
                len(probes),
                probes[int(np.flatnonzero(unmatched)[0])].name,
                int(probe_ids[unmatched][0]),
            )
            if not self.n_scored:
                raise DataError(f"{test}: no probe has a gallery match: nothing to score")
        # Distractors belong to no probe's identity: each its own negative label.
        self.labels = np.concatenate([probe_ids, match_ids, -1 - np.arange(len(distractors))])
        self.samples = [Sample(str(p), 0) for p in [*probes, *matches, *distractors]]

    def score(self, checkpoint: str, features: Features) -> dict:
        feats = features["full"][0]
        p = self.n_probe
        sims = cosine(feats[:p], feats[p:])
        return {
            "identification": {
                **cmc(sims, self.labels[:p], self.labels[p:], RANKS, by_image=True),
                "probes": self.n_scored,
                "probes_without_match": p - self.n_scored,
                "gallery": len(self.samples) - p,
                "distractors": len(self.samples) - p - self.n_match,
            }
        }

    def markdown(self, report: dict) -> str:
        keys = [f"rank{k}" for k in RANKS]
        any_model = next(iter(report["models"].values()))["identification"]
        return "\n".join(
            [
                f"{report['data']}: {any_model['probes']} probes against {any_model['gallery']} "
                f"gallery images ({any_model['distractors']} distractors), at their own "
                "resolution.",
                *provenance_lines(report),
                "",
                *table(
                    ["model", *keys],
                    [
                        [n, *(fmt(m["identification"][k]) for k in keys)]
                        for n, m in report["models"].items()
                    ],
                ),
                "",
            ]
        )
