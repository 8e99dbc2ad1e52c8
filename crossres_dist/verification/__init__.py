"""The field's verification sets: insightface's ``.bin`` files read without running them
(``binfile``), its ten-fold accuracy (``metric``), LFW-style pairs (``pairs``), and the sets
scored at every resolution on every rank together (``suite``), which training's validation and
``crossres_dist.evaluate --protocol verification`` share."""

from crossres_dist.verification.binfile import (
    BinError,
    VerificationSet,
    find_bins,
    read_bin,
    write_bin,
)
from crossres_dist.verification.metric import ten_fold
from crossres_dist.verification.suite import (
    VerificationSuite,
    embed_mirrored,
    image_namer,
    images_of,
    load_sets,
    score_pairs,
    verification_paths,
)

__all__ = [
    "BinError",
    "VerificationSet",
    "VerificationSuite",
    "embed_mirrored",
    "find_bins",
    "image_namer",
    "images_of",
    "load_sets",
    "read_bin",
    "score_pairs",
    "ten_fold",
    "verification_paths",
    "write_bin",
]
