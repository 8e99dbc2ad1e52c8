"""Face-recognition metrics, on cosine similarities.

- verification: ROC, AUC, EER and TAR at given FARs (scikit-learn's ROC);
- closed-set identification: CMC at given ranks, gallery by image or by template;
- open-set identification: TPIR at given FPIRs at rank k (NIST's FRVT definitions, as the
  research code's metrics): a non-mated probe is a false alarm when its best gallery score
  reaches the threshold; a mated probe is found when its mate is within the top k and scores at
  least the threshold.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from crossres_dist.verification.metric import tar_at_far

FARS = (1e-3, 1e-2, 1e-1)  # in every table and JSON: the strictest first


def cosine(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """[len(a), len(b)] cosine similarities."""
    return (F.normalize(a.float(), dim=1) @ F.normalize(b.float(), dim=1).T).numpy()


def verification(scores: np.ndarray, genuine: np.ndarray, fars=FARS) -> dict:
    """ROC of pair scores (genuine True for same-identity pairs). TAR at a FAR below
    1 / impostors cannot be measured: None."""
    from sklearn.metrics import auc, roc_curve

    scores, genuine = np.asarray(scores, float), np.asarray(genuine, bool)
    fpr, tpr, _ = roc_curve(genuine.astype(int), scores)
    eer_index = np.nanargmin(np.abs(fpr - (1 - tpr)))
    impostors = int((~genuine).sum())
    result = {
        "auc": float(auc(fpr, tpr)),
        "eer": float((fpr[eer_index] + 1 - tpr[eer_index]) / 2),
        "genuine_pairs": int(genuine.sum()),
        "impostor_pairs": impostors,
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
    }
    for far in fars:
        result[f"tar@far={far:g}"] = (
            tar_at_far(scores, genuine, far) if impostors * far >= 1 else None
        )
    return result


def cmc(scores: np.ndarray, probe_labels, gallery_labels, ranks=(1, 5), by_image=False) -> dict:
    """Closed-set CMC: a probe is found at rank k when its identity is among the k best gallery
    identities (each identity scored by its best gallery entry), or with `by_image` among the
    identities of the k best gallery images. Probes whose identity has no gallery entry do not
    count."""
    probe_labels, gallery_labels = np.asarray(probe_labels), np.asarray(gallery_labels)
    if by_image:
        mated = np.isin(probe_labels, gallery_labels)
        order = gallery_labels[np.argsort(-scores[mated], axis=1, kind="stable")]
        first = (order == probe_labels[mated][:, None]).argmax(1)
        return {f"rank{k}": float((first < k).mean()) for k in ranks}
    identities = np.unique(gallery_labels)
    per_identity = np.stack(
        [scores[:, gallery_labels == i].max(1) for i in identities], 1
    )  # [probes, identities]
    mated = np.isin(probe_labels, identities)
    order = identities[np.argsort(-per_identity[mated], axis=1, kind="stable")]
    hits = (order == probe_labels[mated][:, None]).cumsum(1).clip(max=1).mean(0)
    return {f"rank{k}": float(hits[min(k, len(hits)) - 1]) for k in ranks}


def identification(probe, probe_labels, gallery, gallery_labels, ranks=(1, 5)) -> dict:
    """CMC of probe features against gallery features (cosine)."""
    return cmc(cosine(probe, gallery), probe_labels, gallery_labels, ranks)


def open_set(
    scores: np.ndarray, probe_labels, gallery_labels, fpirs=(0.1, 0.01), rank: int = 1
) -> dict:
    """Open-set identification at rank `rank`: TPIR (1 - FNIR) at each FPIR. Probes whose
    identity is in the gallery are mated, the others non-mated. The threshold for an FPIR is
    the lowest score that at most that fraction of non-mated probes reach; an FPIR below
    1 / non-mated probes cannot be measured (None)."""
    probe_labels, gallery_labels = np.asarray(probe_labels), np.asarray(gallery_labels)
    identities = np.unique(gallery_labels)
    per_identity = np.stack([scores[:, gallery_labels == i].max(1) for i in identities], 1)
    mated = np.isin(probe_labels, identities)
    nonmated_best = np.sort(per_identity[~mated].max(1))[::-1]
    # A mated probe's score: its mate's, if the mate is within the top `rank`, else -inf.
    mate_scores = per_identity[mated][
        np.arange(mated.sum()), np.searchsorted(identities, probe_labels[mated])
    ]
    position = (per_identity[mated] > mate_scores[:, None]).sum(1)  # better identities
    found = np.where(position < rank, mate_scores, -np.inf)
    result = {
        "rank": rank,
        "mated_probes": int(mated.sum()),
        "nonmated_probes": int((~mated).sum()),
    }
    for fpir in fpirs:
        allowed = int(np.floor(fpir * len(nonmated_best)))
        if allowed < 1 or not mated.any():
            result[f"tpir@fpir={fpir:g}"] = None
            continue
        # Strictly above the (allowed + 1)-th best non-mated score: at most `allowed` alarms.
        threshold = nonmated_best[allowed] if allowed < len(nonmated_best) else -np.inf
        result[f"tpir@fpir={fpir:g}"] = float((found > threshold).mean())
    return result
