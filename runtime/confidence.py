"""From logits (and pooled features) to numbers a camera box can act on: calibrated probabilities and an
"is this one of my classes at all" score, plus the metrics that judge both (ECE, AUROC, FPR at 95% TPR).

numpy only: the trainer fits the temperature and the OOD statistics with these same functions, export measures
them per format with them, and the device applies them, so the three never disagree on a formula.

Every OOD score here is "higher = more like the training data": maximum softmax probability (``msp``), the
negative free energy ``T·logsumexp(z/T)`` (``energy``, Liu et al. 2020) and the negative Mahalanobis distance
of the pooled features to the nearest class mean under one shared covariance (``mahalanobis``, Lee et al. 2018).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["OOD_SCORES", "FEATURE_SCORES", "softmax", "scaled_softmax", "ood_score", "MahalanobisStats",
           "expected_calibration_error", "auroc", "fpr_at_tpr", "ECE_BINS"]

OOD_SCORES = ("msp", "energy", "mahalanobis")
#: The scores that need the model's pooled features (a second graph output and the stats file).
FEATURE_SCORES = ("mahalanobis",)
ECE_BINS = 15


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)  # stable for large logits
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def scaled_softmax(logits: np.ndarray, temperature: float | None) -> np.ndarray:
    """Probabilities of ``logits / temperature`` (temperature scaling, Guo et al. 2017); None or 1: plain softmax."""
    return softmax(logits if temperature in (None, 1.0) else logits / np.float32(temperature))


@dataclass(frozen=True)
class MahalanobisStats:
    """Class means and a whitening matrix ``W`` with ``W.T @ W`` = the inverse shared covariance, stored whitened:
    ``distance_c(f) = ||W f - W mu_c||^2``.

    An exported model applies ``W`` in its own graph (its ``features`` output is ``W f``: one MatMul in the inference
    engine's kernels, where numpy's BLAS threads would fight the engine's for a 2-core device's cores), so a bundle
    stores the centres alone and ``whitener`` is None here; the trainer keeps both."""

    whitener: np.ndarray | None  # (D, D) float32, or None: the features arrive whitened
    centres: np.ndarray  # (C, D) float32: W @ mu_c

    def __post_init__(self) -> None:
        w, c = self.whitener, self.centres
        if c.ndim != 2 or (w is not None and (w.ndim != 2 or w.shape[0] != w.shape[1] or c.shape[1] != w.shape[0])):
            raise ValueError(f"Mahalanobis stats: whitener {None if w is None else w.shape} must be (D, D) and "
                             f"centres {c.shape} (C, D)")
        if not (np.isfinite(c).all() and (w is None or np.isfinite(w).all())):
            raise ValueError("Mahalanobis stats hold NaN or inf")

    @property
    def dim(self) -> int:
        return int(self.centres.shape[1])

    def score(self, features: np.ndarray) -> np.ndarray:
        """(N, D) pooled features (already whitened when ``whitener`` is None) → (N,) negative squared distance to
        the nearest class centre."""
        z = features.astype(np.float32, copy=False)
        if self.whitener is not None:
            z = z @ self.whitener.T
        # ||z - c||^2 = ||z||^2 - 2 z.c + ||c||^2, for all classes in one product
        d = (z * z).sum(1, keepdims=True) - 2.0 * z @ self.centres.T + (self.centres * self.centres).sum(1)
        return -d.min(axis=1)

    def to_array(self) -> np.ndarray:
        """One float32 array: (D + C, D), whitener rows first (the checkpoint), or (C, D) without a whitener (the
        bundle). ``np.save`` writes the same bytes for the same numbers, so a bundle stays reproducible."""
        parts = [self.centres] if self.whitener is None else [self.whitener, self.centres]
        return np.concatenate(parts).astype(np.float32)

    @classmethod
    def from_array(cls, array: np.ndarray, num_classes: int) -> MahalanobisStats:
        """Either form of ``to_array``: (C, D) centres of whitened features, or (D + C, D) whitener and centres."""
        if array.ndim != 2 or array.dtype != np.float32 or array.shape[0] not in (num_classes, array.shape[1] + num_classes):
            raise ValueError(f"expected a float32 array of shape ({num_classes}, D) or (D + {num_classes}, D), "
                             f"got {array.dtype} {array.shape}")
        if array.shape[0] == num_classes:
            return cls(None, array)
        dim = array.shape[1]
        return cls(array[:dim], array[dim:])

    def whitened(self) -> MahalanobisStats:
        """The same statistics for features that arrive whitened (what a bundle stores)."""
        return MahalanobisStats(None, self.centres)

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, num_classes: int, shrinkage: float | None = None) -> MahalanobisStats:
        """Class means and one shared covariance of the training features, shrunk towards a scaled identity
        (Ledoit-Wolf's estimate of the weight when ``shrinkage`` is None): 1,280 dimensions from a few hundred
        images is singular without it."""
        x = features.astype(np.float64)
        means = np.stack([x[labels == c].mean(0) if (labels == c).any() else x.mean(0) for c in range(num_classes)])
        centred = x - means[labels]
        n, d = centred.shape
        cov = centred.T @ centred / max(n, 1)
        mu = np.trace(cov) / d
        if shrinkage is None:  # Ledoit & Wolf (2004), as sklearn.covariance.ledoit_wolf_shrinkage computes it
            delta = ((cov - mu * np.eye(d)) ** 2).sum() / d
            beta = min(delta, ((centred ** 2).T @ (centred ** 2) / n - cov ** 2).sum() / (n * d))
            shrinkage = beta / delta if delta > 0 else 1.0
        shrunk = (1 - shrinkage) * cov + shrinkage * mu * np.eye(d)
        values, vectors = np.linalg.eigh(shrunk)
        whitener = (vectors / np.sqrt(np.maximum(values, 1e-12))).T  # W.T @ W = shrunk^-1
        return cls(whitener.astype(np.float32), (means @ whitener.T).astype(np.float32))


def ood_score(name: str, logits: np.ndarray, temperature: float | None = None, features: np.ndarray | None = None,
              stats: MahalanobisStats | None = None) -> np.ndarray:
    """(N,) score ``name`` (one of ``OOD_SCORES``), higher = more in-distribution."""
    if name == "msp":
        return scaled_softmax(logits, temperature).max(axis=1)
    if name == "energy":
        t = float(temperature or 1.0)
        z = logits.astype(np.float64) / t
        top = z.max(axis=1, keepdims=True)
        return (t * (top[:, 0] + np.log(np.exp(z - top).sum(axis=1)))).astype(np.float32)
    if name == "mahalanobis":
        if features is None or stats is None:
            raise ValueError("the mahalanobis score needs the model's pooled features and the bundle's stats")
        return stats.score(features)
    raise ValueError(f"unknown OOD score {name!r}; choose one of {', '.join(OOD_SCORES)}")


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE with ``bins`` equal-width confidence bins (Guo et al. 2017): the gap between confidence and accuracy,
    weighted by how many predictions fall in each bin. 0.0 is perfect; reported as a fraction."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """Area under the ROC curve of telling ``inside`` scores (positives) from ``outside`` ones, ties counted half
    (the Mann-Whitney U statistic)."""
    scores = np.concatenate([inside, outside])
    order = scores.argsort(kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks over ties
        tied = scores == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    n_in, n_out = len(inside), len(outside)
    return float((ranks[:n_in].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out))


def fpr_at_tpr(inside: np.ndarray, outside: np.ndarray, tpr: float = 0.95) -> float:
    """Share of ``outside`` scores at or above the threshold that keeps ``tpr`` of the ``inside`` ones."""
    threshold = np.quantile(inside, 1.0 - tpr, method="lower")
    return float((outside >= threshold).mean())
