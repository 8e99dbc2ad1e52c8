"""IJB-style template features.

A template is a set of images of one subject from several media (a photo, or the frames of one
video). Its feature: the mean of each media's image features, the sum over media (each media
counts once, however many frames it has), then L2 normalisation. Optionally each image feature
is first weighted by its detector score, so that doubtful detections count less.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def template_features(
    features: torch.Tensor,
    templates: np.ndarray,
    media: np.ndarray,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, torch.Tensor]:
    """(template ids sorted, [T, D] unit features). `templates` and `media` give each image's
    template and media id; `weights` (detector scores) multiply the image features."""
    features = features.float()
    if weights is not None:
        features = features * torch.as_tensor(weights, dtype=torch.float32)[:, None]
    ids, template_index = np.unique(templates, return_inverse=True)
    # One row per (template, media): the media's mean feature.
    pairs, pair_index = np.unique(
        np.stack([template_index, np.asarray(media)], 1), axis=0, return_inverse=True
    )
    pair_index = torch.from_numpy(pair_index.reshape(-1))
    sums = torch.zeros(len(pairs), features.shape[1]).index_add_(0, pair_index, features)
    counts = torch.bincount(pair_index, minlength=len(pairs)).clamp(min=1)
    media_means = sums / counts[:, None]
    out = torch.zeros(len(ids), features.shape[1]).index_add_(
        0, torch.from_numpy(pairs[:, 0]), media_means
    )
    return ids, F.normalize(out, dim=1)
