"""How unlike the training cells a cell is: the atypicality score behind "atypical, review".

A classifier trained on normal cells forces a blast into the nearest normal class, often with high confidence. The
score here asks a different question: is there anything in the training set that looks like this cell? Features
are the model's own (the pooled backbone features, optionally with what each attribute head pooled), reduced by
an (uncentred) SVD fitted on training cells; the score is the mean distance to the ``k`` nearest training cells
after normalising to unit length (deep nearest neighbours, Sun et al. 2022), or the Mahalanobis distance to the
nearest class mean with the tied within-class covariance (Lee et al. 2018). The threshold is the ``quantile`` of
validation scores of known cells, so about ``1 - quantile`` of normal cells get flagged. Everything fitted is
stored as tensors in the checkpoint (float16 where large).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

METHODS = ("knn", "mahalanobis")
FEATURES = ("embedding", "heads", "both")
MIN_GROUP = 20
"""Validation cells a microscope needs for its own threshold quantile (see :meth:`AtypicalityScorer.calibrate`)."""


@dataclass
class AtypicalityScorer:
    """A fitted scorer: PCA, the training bank (kNN) or class means (Mahalanobis), and the threshold."""

    method: str
    features: str
    mean: np.ndarray  # [dim] feature mean before PCA
    components: np.ndarray  # [pcs, dim] PCA directions (scaled to whiten for Mahalanobis)
    bank: np.ndarray  # kNN: [cells, pcs] unit-normalised training cells; Mahalanobis: [classes, pcs] class means
    k: int = 50
    threshold: float = float("inf")

    def project(self, features: np.ndarray) -> np.ndarray:
        projected = (features - self.mean) @ self.components.T  # [cells, pcs]
        if self.method == "knn":
            projected /= np.linalg.norm(projected, axis=1, keepdims=True) + 1e-8
        return projected

    def score(self, features: np.ndarray) -> np.ndarray:
        """Higher is more atypical. ``features`` as chosen by :func:`select_features`."""
        projected = self.project(np.asarray(features, dtype=np.float32))
        bank = self.bank.astype(np.float32)
        if self.method == "knn":
            # Squared distances between unit vectors: 2 - 2 cos.
            distances = np.clip(2 - 2 * projected @ bank.T, 0, None)  # [cells, bank]
            k = min(self.k, bank.shape[0])
            nearest = np.partition(distances, k - 1, axis=1)[:, :k]
            return np.sqrt(nearest).mean(axis=1)
        # Whitened space with a tied covariance: Mahalanobis is Euclidean here.
        distances = ((projected[:, None, :] - bank[None, :, :]) ** 2).sum(-1)  # [cells, classes]
        return np.sqrt(distances.min(axis=1))

    def calibrate(self, known_features: np.ndarray, quantile: float = 0.95, groups=None) -> float:
        """Set the threshold so that ``1 - quantile`` of these known cells are flagged; returns it.

        With ``groups`` (each cell's microscope or data set), the threshold is the highest of the groups' own
        quantiles, so that at most ``1 - quantile`` of any one microscope's ordinary cells are flagged: pooled, the
        largest set decides and a smaller microscope's ordinary cells get flagged for their style. Groups of fewer
        than :data:`MIN_GROUP` cells have no quantile of their own.
        """
        scores = self.score(known_features)
        self.threshold = float(np.quantile(scores, quantile))
        if groups is not None:
            groups = np.asarray(groups)
            for group in np.unique(groups):
                if (groups == group).sum() >= MIN_GROUP:
                    self.threshold = max(self.threshold, float(np.quantile(scores[groups == group], quantile)))
        return self.threshold

    def as_dict(self) -> dict:
        """Plain values and tensors (what ``torch.load(weights_only=True)`` accepts), large arrays in float16."""
        return {
            "method": self.method,
            "features": self.features,
            "mean": torch.from_numpy(self.mean.astype(np.float32)),
            "components": torch.from_numpy(self.components.astype(np.float16)),
            "bank": torch.from_numpy(self.bank.astype(np.float16)),
            "k": self.k,
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, values: dict) -> AtypicalityScorer:
        return cls(
            method=values["method"],
            features=values["features"],
            mean=_array(values["mean"]),
            components=_array(values["components"]),
            bank=_array(values["bank"]),
            k=int(values["k"]),
            threshold=float(values["threshold"]),
        )


def _array(value) -> np.ndarray:
    return value.float().numpy() if isinstance(value, torch.Tensor) else np.asarray(value, np.float32)


def select_features(embeddings: np.ndarray, head_features: np.ndarray, which: str) -> np.ndarray:
    """The feature vectors a scorer uses: ``embedding``, ``heads`` (attribute heads' pooled features) or ``both``."""
    if which == "embedding" or head_features.shape[1] == 0:
        return embeddings
    if which == "heads":
        return head_features
    if which == "both":
        # Scale each block to unit average norm so that neither dominates by size alone.
        a = embeddings / (np.linalg.norm(embeddings, axis=1).mean() + 1e-8)
        b = head_features / (np.linalg.norm(head_features, axis=1).mean() + 1e-8)
        return np.concatenate([a, b], axis=1)
    raise ValueError(f"unknown feature set {which!r}: use one of {FEATURES}")


def fit_scorer(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    method: str = "knn",
    which: str = "embedding",
    components: int = 256,
    k: int = 50,
    bank_size: int = 4000,
    seed: int = 0,
) -> AtypicalityScorer:
    """Fit the projection on training features, then the kNN bank or the (whitened) class means."""
    if method not in METHODS:
        raise ValueError(f"unknown atypicality method {method!r}: use one of {METHODS}")
    features = np.asarray(features, dtype=np.float64)
    if method == "knn":
        # No centring: the direction of the raw (non-negative) features is what deep kNN compares; centring
        # first loses much of it (on held-out immature granulocytes, AUROC 0.75 centred against 0.86 not).
        mean = np.zeros(features.shape[1])
        _, _, vt = np.linalg.svd(features, full_matrices=False)
        projection = vt[: min(components, vt.shape[0])]
    else:  # Mahalanobis: whiten with the tied within-class covariance, as Lee et al.
        mean = features.mean(axis=0)
        classes = np.unique(labels)
        class_means = np.stack([features[labels == c].mean(axis=0) for c in classes])
        centred = features - class_means[np.searchsorted(classes, labels)]
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        pcs = min(components, vt.shape[0])
        scale = singular[:pcs] / np.sqrt(max(1, len(features) - 1))  # std along each component
        projection = vt[:pcs] / (scale[:, None] + 1e-6)
    pcs = projection.shape[0]
    scorer = AtypicalityScorer(
        method, which, mean.astype(np.float32), projection.astype(np.float32), np.zeros((0, pcs), np.float32), k
    )
    projected = scorer.project(features.astype(np.float32))
    if method == "knn":
        if len(projected) > bank_size:  # keep the checkpoint small
            projected = projected[np.random.default_rng(seed).choice(len(projected), bank_size, replace=False)]
        scorer.bank = projected.astype(np.float32)
    else:
        scorer.bank = np.stack([projected[labels == c].mean(axis=0) for c in np.unique(labels)]).astype(np.float32)
    return scorer
