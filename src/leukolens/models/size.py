"""A white cell's size in micrometres as evidence of its type, the way a hematologist uses it.

The cell model cuts each cell relative to its own box, so that a cell fills the same share of the input at every
magnification; that also hides how large the cell is. A hematologist does not forget it: a lymphocyte is about the
size of one to one and a half red cells (7-12 µm), a monocyte two (15-20 µm). Sizes in micrometres mean the same on
every microscope once the field's scale is known, and ``analyze`` estimates that scale from the field's own red
cells (:mod:`leukolens.predict.scale`). Fitted on any two of three microscopes, the median lymphocyte measured
10.8-12.3 µm and the median monocyte 16.6-17.2 µm (docs/domains.md).

The prior is a normal distribution of the logarithm of the cell's diameter (its box's longer side) per class,
fitted on training cells of several microscopes. A cell whose diameter is known gets Bayes' rule:
``p(type | image, size) ∝ p(type | image) · p(size | type)``; the image model was trained class-balanced, so its
probabilities stand in for the likelihood ratio of the image, and size adds its own. A cell without a known scale
(a single-cell image without ``--microns-per-pixel``, a field whose red cells could not be found) keeps the image's
probabilities unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SCALE_UNCERTAINTY = 0.10
"""Spread (in natural-log units, about 10%) added in quadrature to every class's fitted spread: a field's scale is
itself an estimate, off by up to about 10% on ordinary fields in the detector's scale sweep (docs/domains.md), and
that error shifts every cell of the field alike. Fixed from that measurement, not tuned on any typing result."""
MIN_CELLS = 10
"""Cells of a class the fit needs for a class of its own; a class with fewer gets the pooled distribution of all
cells, which is broad: size then says little for or against it."""


@dataclass(frozen=True)
class SizePrior:
    """Per-class normal distributions of log diameter (µm), in the class order of the cell model."""

    classes: tuple[str, ...]
    log_mean: tuple[float, ...]
    log_std: tuple[float, ...]  # the fitted spread, before SCALE_UNCERTAINTY is added
    cells: tuple[int, ...]  # training cells behind each class's figures (0: pooled)
    scale_uncertainty: float = SCALE_UNCERTAINTY

    def log_likelihood(self, diameters_um: np.ndarray) -> np.ndarray:
        """``[cells, classes]`` log densities of each diameter under each class (NaN rows for unknown sizes)."""
        logs = np.log(np.asarray(diameters_um, dtype=np.float64))[:, None]
        mean = np.asarray(self.log_mean)[None, :]
        std = np.sqrt(np.asarray(self.log_std) ** 2 + self.scale_uncertainty**2)[None, :]
        return -0.5 * ((logs - mean) / std) ** 2 - np.log(std)

    def apply(self, probabilities: np.ndarray, diameters_um: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
        """Class probabilities ``[cells, classes]`` (in ``classes``' order) updated by each cell's size.

        Cells whose diameter is NaN or not positive, and classes the prior does not name, are left as they are.
        """
        probabilities = np.asarray(probabilities, dtype=np.float64)
        diameters = np.asarray(diameters_um, dtype=np.float64)
        known = np.isfinite(diameters) & (diameters > 0)
        if not known.any():
            return probabilities.astype(np.float32)
        index = {name: i for i, name in enumerate(self.classes)}
        log_like = np.zeros((int(known.sum()), len(classes)))
        named = [j for j, name in enumerate(classes) if name in index]
        log_like[:, named] = self.log_likelihood(diameters[known])[:, [index[classes[j]] for j in named]]
        # Classes the prior does not name get the mean of the named ones: neither favoured nor penalised.
        others = [j for j in range(len(classes)) if j not in named]
        if others and named:
            log_like[:, others] = log_like[:, named].mean(axis=1, keepdims=True)
        log_post = np.log(np.clip(probabilities[known], 1e-12, None)) + log_like
        log_post -= log_post.max(axis=1, keepdims=True)
        posterior = np.exp(log_post)
        out = probabilities.copy()
        out[known] = posterior / posterior.sum(axis=1, keepdims=True)
        return out.astype(np.float32)

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, payload: dict) -> SizePrior:
        return cls(
            classes=tuple(payload["classes"]),
            log_mean=tuple(float(v) for v in payload["log_mean"]),
            log_std=tuple(float(v) for v in payload["log_std"]),
            cells=tuple(int(v) for v in payload["cells"]),
            scale_uncertainty=float(payload.get("scale_uncertainty", SCALE_UNCERTAINTY)),
        )

    def median_um(self) -> dict[str, float]:
        """Each class's median diameter in µm (for docs and reports)."""
        return {c: float(np.exp(m)) for c, m in zip(self.classes, self.log_mean, strict=True)}


def cell_diameter_um(box: tuple[float, float, float, float], microns_per_pixel: float | None) -> float:
    """A cell's diameter: its box's longer side in µm; NaN when the scale is unknown."""
    if microns_per_pixel is None or not np.isfinite(microns_per_pixel) or microns_per_pixel <= 0:
        return float("nan")
    x1, y1, x2, y2 = box
    return float(max(x2 - x1, y2 - y1) * microns_per_pixel)


def fit_size_prior(diameters_um, labels, classes: tuple[str, ...]) -> SizePrior:
    """Fit the per-class log-normal prior on training cells whose diameter (µm) and class name are known."""
    diameters = np.asarray(diameters_um, dtype=np.float64)
    labels = np.asarray(labels)
    keep = np.isfinite(diameters) & (diameters > 0)
    diameters, labels = diameters[keep], labels[keep]
    if len(diameters) < MIN_CELLS:
        raise ValueError(f"a size prior needs at least {MIN_CELLS} cells of known size, got {len(diameters)}")
    logs = np.log(diameters)
    pooled = (float(logs.mean()), float(logs.std()))
    means, stds, counts = [], [], []
    for name in classes:
        mine = logs[labels == name]
        if len(mine) >= MIN_CELLS:
            means.append(float(mine.mean()))
            stds.append(float(mine.std(ddof=1)))
            counts.append(len(mine))
        else:
            means.append(pooled[0])
            stds.append(pooled[1])
            counts.append(0)
    return SizePrior(tuple(classes), tuple(means), tuple(stds), tuple(counts))
