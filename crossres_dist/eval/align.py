"""Five-landmark face alignment, as the benchmarks' face crops need it.

A similarity transform (rotation, uniform scale, translation; Umeyama's least squares) maps the
detected landmarks (eyes, nose tip, mouth corners) onto a reference face placed on a square
canvas of the network's ``resize_shorter`` side; the pipeline then takes its centre crop as in
training (for SE-ResNet-50: 256, centre 224, the VGGFace2 style). The reference is the common
five-point template (ArcFace's, on 112 px), scaled by `face_scale` so that the face fills the
canvas the way a VGGFace2 loose crop does.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# Eyes, nose tip, mouth corners of a frontal face on a 112 x 112 canvas.
REFERENCE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)


def reference_points(side: int, face_scale: float = 0.7) -> np.ndarray:
    """The reference landmarks on a `side` px canvas, the face `face_scale` of the canvas."""
    return side / 2 + (REFERENCE_112 / 112 - 0.5) * side * face_scale


def similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2 x 3 similarity transform taking `source` points nearest to `target` (Umeyama)."""
    source, target = np.asarray(source, float), np.asarray(target, float)
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    covariance = t.T @ s / len(source)
    u, d, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1  # a reflection is not a similarity
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(d) @ sign) / s.var(0).sum()
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mu_t - matrix[:, :2] @ mu_s
    return matrix


def align(source: Path, landmarks: np.ndarray, target: Path, side: int, face_scale: float) -> None:
    """Write `source`'s face, aligned, as a `side` x `side` PNG at `target` (atomically)."""
    from PIL import Image

    matrix = similarity(landmarks, reference_points(side, face_scale))
    # PIL maps output pixels back to input pixels: the inverse transform.
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    with Image.open(source) as image:
        aligned = image.convert("RGB").transform(
            (side, side), Image.Transform.AFFINE, inverse.reshape(-1).tolist(), Image.BILINEAR
        )
    # Another job may align the same face at the same time: each writes its own partial file.
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    aligned.save(partial, format="PNG")
    partial.replace(target)
