"""Verification accuracy as insightface computes it (``eval/verification.py``).

Each image's embedding plus that of its mirror image, L2-normalised; the squared distance of the
two embeddings of a pair; a pair is called "same" when the distance is below the threshold. Ten
folds of consecutive pairs (scikit-learn's KFold, not shuffled): on each fold, the threshold of
``arange(0, 4, 0.01)`` that is most accurate on the other nine is applied to it. Reported: the
mean and standard deviation of the ten folds' accuracy; ``val``, the true-accept rate at the
threshold whose FAR on the other nine folds is 1e-3 (over ``arange(0, 4, 0.001)``); and XNorm,
the mean norm of the embeddings before normalisation.

Counting replaces insightface's loop over thresholds (``searchsorted`` on the sorted distances
counts exactly the pairs below each threshold), so a 6,000-pair set scores in milliseconds. One
reading differs: insightface finds the FAR threshold with SciPy's ``interp1d(kind='slinear')``
on a FAR curve with repeated values, which SciPy 1.9 and later refuse; here it is interpolated
between the last threshold below the target FAR and the first that reaches it, which is what the
older SciPy returned whenever the target lies between two FAR values of the curve; where several
thresholds have exactly the target FAR (a set of 20,000 pairs can; no released set does), the
last of them, as that SciPy did.
"""

from __future__ import annotations

import numpy as np

FOLDS = 10
THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)
FAR_TARGET = 1e-3


def fold_slices(count: int, folds: int = FOLDS) -> list[slice]:
    """KFold(n_splits=folds, shuffle=False): consecutive folds, the first count % folds of
    them one longer."""
    if count < folds:
        raise ValueError(f"{count} pairs cannot make {folds} folds")
    sizes = np.full(folds, count // folds)
    sizes[: count % folds] += 1
    ends = np.cumsum(sizes)
    return [slice(int(e - s), int(e)) for s, e in zip(sizes, ends)]


def _below(distances: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of `distances` lie strictly below each threshold (insightface: dist < t)."""
    return np.searchsorted(np.sort(distances), thresholds, side="left")


def _accuracy(dist: np.ndarray, same: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    true_accept = _below(dist[same], thresholds)
    true_reject = (~same).sum() - _below(dist[~same], thresholds)
    return (true_accept + true_reject) / len(dist)


def _val_far(dist: np.ndarray, same: np.ndarray, thresholds: np.ndarray):
    n_same, n_diff = same.sum(), (~same).sum()
    val = _below(dist[same], thresholds) / n_same if n_same else np.zeros(len(thresholds))
    far = _below(dist[~same], thresholds) / n_diff if n_diff else np.zeros(len(thresholds))
    return val, far


def _far_threshold(far: np.ndarray, thresholds: np.ndarray, target: float) -> float:
    """The threshold at which the (non-decreasing) FAR curve reaches `target`, linearly
    interpolated; 0 when it never does (insightface's fallback)."""
    if far.max() < target:
        return 0.0
    equal = np.flatnonzero(far == target)
    if len(equal):
        # A tie (several thresholds with exactly the target FAR): the last of them, which is
        # what insightface's interp1d returned with the SciPy it was written for.
        return float(thresholds[equal[-1]])
    k = int(np.argmax(far >= target))
    if far[k] == target or k == 0:
        return float(thresholds[k])
    f0, f1 = far[k - 1], far[k]
    return float(
        thresholds[k - 1] + (target - f0) / (f1 - f0) * (thresholds[k] - thresholds[k - 1])
    )


def tar_at_far(scores: np.ndarray, genuine: np.ndarray, far: float) -> float:
    """The ROC's true-accept rate at `far` (higher scores accept), interpolated linearly
    between its points (scikit-learn's ROC)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(np.asarray(genuine, int), np.asarray(scores, float))
    return float(np.interp(far, fpr, tpr))


def l2_normalise(x: np.ndarray) -> np.ndarray:
    # sklearn.preprocessing.normalize: a zero row stays zero.
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def ten_fold(
    first: np.ndarray,
    second: np.ndarray,
    issame: np.ndarray,
    first_mirror: np.ndarray | None = None,
    second_mirror: np.ndarray | None = None,
    folds: int = FOLDS,
) -> dict:
    """insightface's verification metrics of N pairs: the embeddings of each pair's first and
    second image [N, D], and optionally those of their mirror images (added before the
    normalisation; XNorm counts them too)."""
    issame = np.asarray(issame, bool)
    raw = [first, second] + [m for m in (first_mirror, second_mirror) if m is not None]
    xnorm = float(
        np.mean(np.concatenate([np.linalg.norm(np.asarray(r, np.float64), axis=1) for r in raw]))
    )
    a = np.asarray(first, np.float64) + (0 if first_mirror is None else first_mirror)
    b = np.asarray(second, np.float64) + (0 if second_mirror is None else second_mirror)
    dist = np.sum(np.square(l2_normalise(a) - l2_normalise(b)), 1)
    accuracy, val, far, thresholds = [], [], [], []
    for test in fold_slices(len(dist), folds):
        train = np.ones(len(dist), bool)
        train[test] = False
        best = THRESHOLDS[int(np.argmax(_accuracy(dist[train], issame[train], THRESHOLDS)))]
        accuracy.append(_accuracy(dist[test], issame[test], np.array([best]))[0])
        thresholds.append(float(best))
        _, far_train = _val_far(dist[train], issame[train], VAL_THRESHOLDS)
        at = _far_threshold(far_train, VAL_THRESHOLDS, FAR_TARGET)
        v, f = _val_far(dist[test], issame[test], np.array([at]))
        val.append(v[0])
        far.append(f[0])
    return {
        "accuracy": float(np.mean(accuracy)),
        "accuracy_std": float(np.std(accuracy)),
        "val@far=0.001": float(np.mean(val)),
        "val_std": float(np.std(val)),
        "far": float(np.mean(far)),
        "xnorm": xnorm,
        # Over all pairs (no folds), where there are 1/far different-person pairs to measure it.
        "tar@far=0.01": (tar_at_far(-dist, issame, 0.01) if (~issame).sum() * 0.01 >= 1 else None),
        "best_thresholds": thresholds,
        "pairs": int(len(dist)),
    }
