"""How blast-like a white cell is: the blast score behind ``blast_probability`` and "blast (suspected)".

The cell model was trained on normal cells and has no blast class; no labelled blast corpus may ship with it. The
blast concept is built from three scores computed on the model's own outputs, combined by a small fitted model:

- **morphology** (zero-shot, nothing fitted): the attribute heads' probabilities of what a hematologist sees in a
  blast, large cell, high nuclear-to-cytoplasmic ratio, fine loosely packed chromatin, no granules, blue
  (basophilic) cytoplasm (:data:`BLAST_MORPHOLOGY`, WBCAtt's values), averaged as log-probabilities so that one
  clearly absent feature (coarse granules, say) pulls the score down;
- **prototypes** (few-shot): how much closer the cell's embedding is to the ``k`` nearest real blast examples than
  to the ``k`` nearest normal training cells (cosine similarity of unit-length embeddings); a lab adds its own
  blasts with :meth:`BlastScorer.with_examples`;
- **atypicality**: the checkpoint's own score of how unlike the training cells the cell is
  (:mod:`leukolens.models.atypicality`).

Each score is standardised by the mean and spread of normal cells, then a logistic regression with non-negative
weights (each score is built so that higher means more blast-like) and a strong L2 penalty, fitted class-balanced on
the few blast examples against normal cells, gives ``blast_probability``. The threshold for ``blast_suspected`` is a
quantile of normal validation cells' probabilities (the 95th: at most 5% of them called blast). The fit also measures
how often that call is right (:class:`BlastCallRates`: its sensitivity on the examples, each left out of the
prototypes, and its false-positive rate on the validation cells), with which a sample's secondary, adjusted blast %
is computed (:mod:`leukolens.sample.interpret`; the rules test the counted one). Everything fitted is stored as
plain values and tensors in the cell checkpoint (``CellCheckpoint.blast``), the embeddings in float16.

Fitting from images (running the model over example folders and normal cells) is
:func:`leukolens.train.blast.fit_blast`; this module holds the scorer and the fit on arrays.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from leukolens.errors import LeukolensError
from leukolens.io.common import IMAGE_SUFFIXES

BLAST_MORPHOLOGY: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("cell_size", ("big",), "large cell"),
    ("nuclear_cytoplasmic_ratio", ("high",), "high nuclear-to-cytoplasmic ratio"),
    ("chromatin_density", ("loosely",), "loosely packed (fine) chromatin"),
    ("granularity", ("no",), "no granules"),
    ("cytoplasm_colour", ("blue",), "blue (basophilic) cytoplasm"),
)
"""What makes a cell look like a blast, in WBCAtt's attributes: (attribute, its blast-like values, how to say it)."""

SCORES = ("morphology", "prototype", "atypicality")
"""The scores the fitted combination may use, in this order."""

RESEMBLES_EXAMPLES = "resembles the blast examples"
"""The reason given when no single attribute reads blast-like but the cell was still called blast."""


@dataclass(frozen=True)
class BlastCallRates:
    """How often ``blast_suspected`` is right, measured when the scorer was fitted, with the counts behind it.

    Attributes:
        blasts_called: blast examples called blast, each scored left out of the prototypes it is compared with.
        blasts: the blast examples.
        normals_called: normal validation cells called blast (the cells the threshold is set on).
        normals: the normal validation cells.
    """

    blasts_called: int
    blasts: int
    normals_called: int
    normals: int

    def __post_init__(self) -> None:
        if not (0 <= self.blasts_called <= self.blasts and 0 <= self.normals_called <= self.normals):
            raise ValueError(f"called counts must lie in 0..total, got {self}")
        if self.blasts == 0 or self.normals == 0:
            raise ValueError(f"call rates need blasts and normal cells to be measured on, got {self}")

    @property
    def true_positive_rate(self) -> float:
        """Sensitivity: the share of the blast examples called blast."""
        return self.blasts_called / self.blasts

    @property
    def false_positive_rate(self) -> float:
        """The share of the normal validation cells called blast (about 1 - the threshold's quantile)."""
        return self.normals_called / self.normals

    def as_dict(self) -> dict:
        return {"blasts_called": self.blasts_called, "blasts": self.blasts, "normals_called": self.normals_called,
                "normals": self.normals, "true_positive_rate": self.true_positive_rate,
                "false_positive_rate": self.false_positive_rate}

    @classmethod
    def from_dict(cls, values: Mapping) -> BlastCallRates:
        return cls(int(values["blasts_called"]), int(values["blasts"]), int(values["normals_called"]),
                   int(values["normals"]))


@dataclass(frozen=True, eq=False)
class BlastScorer:
    """A fitted blast scorer: the morphology recipe, the example and normal embeddings, the combination and its
    threshold.

    Attributes:
        morphology: (attribute, blast-like values, phrase) per morphological feature (:data:`BLAST_MORPHOLOGY`).
        examples: ``[examples, features]`` unit-length embeddings of real blasts.
        example_sources: where each example came from (file names), for the record.
        normals: ``[cells, features]`` unit-length embeddings of normal training cells.
        scores: the scores combined, a subset of :data:`SCORES` in that order.
        mean, spread: ``[scores]`` each score's mean and standard deviation on normal cells.
        weights: ``[scores]`` non-negative logistic-regression weights on the standardised scores.
        bias: the logistic regression's intercept.
        threshold: ``blast_probability`` above which a cell is ``blast_suspected``.
        k_examples, k_normals: neighbours averaged on each side of the prototype margin.
        floor: the smallest probability a morphological feature counts with (log of 0 is not a score).
        fitted: what the fit saw and reached (counts, the share of validation cells called blast).
        call_rates: the call's sensitivity and false-positive rate as fitted; None for a scorer fitted before they
            were measured, or one whose examples changed after the fit (:meth:`with_examples`).
    """

    morphology: tuple[tuple[str, tuple[str, ...], str], ...]
    examples: np.ndarray
    example_sources: tuple[str, ...]
    normals: np.ndarray
    scores: tuple[str, ...]
    mean: np.ndarray
    spread: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float
    k_examples: int = 3
    k_normals: int = 25
    floor: float = 0.02
    fitted: dict = field(default_factory=dict)
    call_rates: BlastCallRates | None = None

    # -------------------------------------------------------------------------------------------- the three scores
    def morphology_score(
        self, attribute_probabilities: Mapping[str, np.ndarray], head_values: Mapping[str, Sequence[str]]
    ) -> np.ndarray:
        """Mean log-probability ``[cells]`` of the blast-like value of each morphological feature.

        Args:
            attribute_probabilities: attribute name -> ``[cells, values]`` probabilities of the attribute head.
            head_values: attribute name -> the head's value names, in the order of its probabilities.
        """
        parts = []
        for name, blast_values, _ in self.morphology:
            if name not in attribute_probabilities:
                raise ValueError(f"the blast scorer needs the attribute head {name!r}; this model has "
                                 f"{', '.join(attribute_probabilities) or 'none'}")
            columns = [list(head_values[name]).index(v) for v in blast_values]
            probability = np.asarray(attribute_probabilities[name])[:, columns].sum(axis=1)  # [cells]
            parts.append(np.log(np.clip(probability, self.floor, 1.0)))
        return np.mean(parts, axis=0)

    def prototype_score(self, embeddings: np.ndarray, *, leave_self_out: bool = False) -> np.ndarray:
        """Mean similarity ``[cells]`` to the nearest blast examples minus that to the nearest normal cells.

        Args:
            leave_self_out: the cells are the examples themselves (in order): each leaves itself out (fitting).
        """
        cells = unit_rows(embeddings)
        to_examples = cells @ self.examples.T  # [cells, examples]
        if leave_self_out:
            np.fill_diagonal(to_examples, -np.inf)
        available = to_examples.shape[1] - (1 if leave_self_out else 0)
        k = max(1, min(self.k_examples, available))
        blast_side = -np.partition(-to_examples, k - 1, axis=1)[:, :k].mean(axis=1)
        to_normals = cells @ self.normals.T  # [cells, normals]
        k = min(self.k_normals, to_normals.shape[1])
        normal_side = -np.partition(-to_normals, k - 1, axis=1)[:, :k].mean(axis=1)
        return blast_side - normal_side

    def component_scores(
        self,
        attribute_probabilities: Mapping[str, np.ndarray],
        head_values: Mapping[str, Sequence[str]],
        embeddings: np.ndarray,
        atypicality: np.ndarray | None,
        *,
        leave_self_out: bool = False,
    ) -> np.ndarray:
        """The scores this scorer combines, ``[cells, len(self.scores)]``, unstandardised."""
        found = {
            "morphology": lambda: self.morphology_score(attribute_probabilities, head_values),
            "prototype": lambda: self.prototype_score(embeddings, leave_self_out=leave_self_out),
            "atypicality": lambda: _required_atypicality(atypicality),
        }
        return np.stack([np.asarray(found[name](), dtype=np.float64) for name in self.scores], axis=1)

    # -------------------------------------------------------------------------------------------- the combination
    def probability_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """``blast_probability`` ``[cells]`` from :meth:`component_scores`."""
        logits = ((scores - self.mean) / self.spread) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-logits))

    def probability(
        self,
        attribute_probabilities: Mapping[str, np.ndarray],
        head_values: Mapping[str, Sequence[str]],
        embeddings: np.ndarray,
        atypicality: np.ndarray | None = None,
    ) -> np.ndarray:
        """``blast_probability`` ``[cells]`` of cells given the cell model's outputs for them."""
        scores = self.component_scores(attribute_probabilities, head_values, embeddings, atypicality)
        return self.probability_from_scores(scores)

    def suspected(self, probabilities: np.ndarray) -> np.ndarray:
        """``blast_suspected`` ``[cells]``: the probability above the threshold."""
        return np.asarray(probabilities) > self.threshold

    def reasons(self, attributes: Mapping[str, Mapping[str, float]]) -> tuple[str, ...]:
        """The morphological features that read blast-like in one cell (probability of the blast-like values at
        least one half), as phrases; :data:`RESEMBLES_EXAMPLES` when none does.

        Args:
            attributes: attribute name -> value -> probability (``AttributePrediction.probabilities``).
        """
        found = tuple(
            phrase
            for name, blast_values, phrase in self.morphology
            if sum(attributes.get(name, {}).get(v, 0.0) for v in blast_values) >= 0.5
        )
        return found or (RESEMBLES_EXAMPLES,)

    def with_examples(self, embeddings: np.ndarray, sources: Sequence[str]) -> BlastScorer:
        """This scorer with more blast examples (a lab's own), the combination and threshold unchanged; without call
        rates, since the fitted ones were measured with the examples before (more examples call more cells blast,
        blasts and normal cells alike): refit to measure them."""
        if len(embeddings) != len(sources):
            raise ValueError(f"{len(embeddings)} embeddings but {len(sources)} sources")
        examples = np.concatenate([self.examples, unit_rows(embeddings).astype(np.float32)])
        return dataclasses.replace(self, examples=examples, example_sources=(*self.example_sources, *sources),
                                   call_rates=None)

    # -------------------------------------------------------------------------------------------- stored form
    def as_dict(self) -> dict:
        """Plain values and tensors (what ``torch.load(weights_only=True)`` accepts); embeddings in float16."""
        return {
            "morphology": [[name, list(values), phrase] for name, values, phrase in self.morphology],
            "examples": torch.from_numpy(self.examples.astype(np.float16)),
            "example_sources": list(self.example_sources),
            "normals": torch.from_numpy(self.normals.astype(np.float16)),
            "scores": list(self.scores),
            "mean": self.mean.astype(np.float64).tolist(),
            "spread": self.spread.astype(np.float64).tolist(),
            "weights": self.weights.astype(np.float64).tolist(),
            "bias": float(self.bias),
            "threshold": float(self.threshold),
            "k_examples": int(self.k_examples),
            "k_normals": int(self.k_normals),
            "floor": float(self.floor),
            "fitted": dict(self.fitted),
            "call_rates": None if self.call_rates is None else self.call_rates.as_dict(),
        }

    @classmethod
    def from_dict(cls, values: dict) -> BlastScorer:
        return cls(
            morphology=tuple((name, tuple(blast), phrase) for name, blast, phrase in values["morphology"]),
            examples=_array(values["examples"]),
            example_sources=tuple(values["example_sources"]),
            normals=_array(values["normals"]),
            scores=tuple(values["scores"]),
            mean=np.asarray(values["mean"], np.float64),
            spread=np.asarray(values["spread"], np.float64),
            weights=np.asarray(values["weights"], np.float64),
            bias=float(values["bias"]),
            threshold=float(values["threshold"]),
            k_examples=int(values["k_examples"]),
            k_normals=int(values["k_normals"]),
            floor=float(values["floor"]),
            fitted=dict(values.get("fitted") or {}),
            # scorers fitted before the rates were measured have none: their blast % is not adjusted
            call_rates=BlastCallRates.from_dict(values["call_rates"]) if values.get("call_rates") else None,
        )


def _array(value) -> np.ndarray:
    return value.float().numpy() if isinstance(value, torch.Tensor) else np.asarray(value, np.float32)


def _required_atypicality(atypicality: np.ndarray | None) -> np.ndarray:
    if atypicality is None:
        raise ValueError("this blast scorer combines the atypicality score, but none was given")
    return np.asarray(atypicality)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (float32)."""
    vectors = np.asarray(vectors, np.float32)
    return vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-8)


# ------------------------------------------------------------------------------------------------------ fitting
@dataclass(frozen=True)
class CellScores:
    """The cell model's outputs for some cells, as the blast scorer reads them.

    Attributes:
        attribute_probabilities: attribute name -> ``[cells, values]``.
        embeddings: ``[cells, features]`` pooled backbone features.
        atypicality: ``[cells]`` atypicality scores, or None when the checkpoint has no atypicality scorer.
        sources: where each cell came from.
    """

    attribute_probabilities: dict[str, np.ndarray]
    embeddings: np.ndarray
    atypicality: np.ndarray | None
    sources: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.embeddings)


@dataclass(frozen=True)
class BlastFitConfig:
    """How the blast scorer is fitted (fixed before any test cell was scored: see benchmarks/blasts.py)."""

    k_examples: int = 3
    k_normals: int = 25
    floor: float = 0.02
    l2: float = 1.0  # penalty on the weights of the standardised scores, against a total sample weight of 2 x examples
    quantile: float = 0.95  # share of normal validation cells under the threshold
    use_atypicality: bool = True


def fit_blast_scorer(
    *,
    examples: CellScores,
    normals: CellScores,
    negatives: Sequence[CellScores],
    validation: CellScores,
    head_values: Mapping[str, Sequence[str]],
    config: BlastFitConfig | None = None,
) -> BlastScorer:
    """Fit the combination on the cell model's outputs.

    Args:
        examples: real blasts (their prototype score leaves each one out of the examples).
        normals: normal training cells: the normal side of the prototype margin.
        negatives: groups of normal cells the combination learns to keep below the blasts (e.g. training cells
            outside ``normals``, and normal cells from other microscopes); each group weighs the same in all.
        validation: normal validation cells: the threshold is ``config.quantile`` of their probabilities.
        head_values: attribute name -> the head's value names, in order.
        config: the fit's settings (default :class:`BlastFitConfig`).

    Raises:
        ValueError: no examples, no negatives, or the model lacks an attribute head the morphology needs.
    """
    config = config or BlastFitConfig()
    if len(examples) == 0:
        raise ValueError("no blast examples to fit on")
    negatives = [group for group in negatives if len(group)]
    if not negatives:
        raise ValueError("no normal cells to fit against")
    with_atypicality = config.use_atypicality and all(
        s.atypicality is not None for s in (examples, validation, *negatives)
    )
    scorer = BlastScorer(
        morphology=BLAST_MORPHOLOGY,
        examples=unit_rows(examples.embeddings),
        example_sources=tuple(examples.sources),
        normals=unit_rows(normals.embeddings),
        scores=SCORES if with_atypicality else SCORES[:2],
        mean=np.zeros(0),
        spread=np.ones(0),
        weights=np.zeros(0),
        bias=0.0,
        threshold=float("inf"),
        k_examples=config.k_examples,
        k_normals=config.k_normals,
        floor=config.floor,
    )

    def scores(cells: CellScores, leave_self_out: bool = False) -> np.ndarray:
        return scorer.component_scores(cells.attribute_probabilities, head_values, cells.embeddings, cells.atypicality,
                                       leave_self_out=leave_self_out)

    positive = scores(examples, leave_self_out=True)
    groups = [scores(group) for group in negatives]
    negative = np.concatenate(groups)
    mean, spread = negative.mean(axis=0), negative.std(axis=0) + 1e-6
    features = (np.concatenate([positive, negative]) - mean) / spread
    targets = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    # Class-balanced: the examples weigh as much as all negatives, each negative group an equal share of that.
    sample_weights = np.r_[np.ones(len(positive)), *[np.full(len(g), len(positive) / len(groups) / len(g))
                                                       for g in groups]]
    weights, bias = nonnegative_logistic(features, targets, sample_weights, l2=config.l2)
    scorer = dataclasses.replace(scorer, mean=mean, spread=spread, weights=weights, bias=bias)
    validation_probabilities = scorer.probability_from_scores(scores(validation))
    threshold = float(np.quantile(validation_probabilities, config.quantile))
    example_probabilities = scorer.probability_from_scores(positive)
    # The call's error rates on cells the scorer may see: each example left out of the prototypes it is scored
    # against (the combination's two or three weights are fitted on all of them, a small optimism), the validation
    # cells the threshold is set on (so about 1 - quantile by construction).
    call_rates = BlastCallRates(int(np.sum(example_probabilities > threshold)), len(positive),
                                int(np.sum(validation_probabilities > threshold)), len(validation_probabilities))
    fitted = {
        "examples": len(examples),
        "normals": len(normals),
        "negatives": [len(g) for g in groups],
        "validation": len(validation),
        "validation_called_blast": float(np.mean(validation_probabilities > threshold)),
        "examples_called_blast_left_out": float(np.mean(example_probabilities > threshold)),
        "negatives_called_blast": [float(np.mean(scorer.probability_from_scores(g) > threshold)) for g in groups],
    }
    return dataclasses.replace(scorer, threshold=threshold, fitted=fitted, call_rates=call_rates)


def nonnegative_logistic(
    features: np.ndarray, targets: np.ndarray, sample_weights: np.ndarray, *, l2: float, iterations: int = 50
) -> tuple[np.ndarray, float]:
    """Weighted logistic regression with an L2 penalty on the weights (not the intercept) and weights held at zero
    or above: Newton's method, and a weight that wants to go negative is fixed at zero and the rest refitted.

    Returns:
        The weights ``[features]`` and the intercept.
    """
    features = np.asarray(features, np.float64)
    active = np.ones(features.shape[1], bool)
    while True:
        weights, bias = _newton_logistic(features[:, active], targets, sample_weights, l2=l2, iterations=iterations)
        if (weights >= 0).all():
            full = np.zeros(features.shape[1])
            full[active] = weights
            return full, bias
        active[np.flatnonzero(active)[int(np.argmin(weights))]] = False


def _newton_logistic(features, targets, sample_weights, *, l2: float, iterations: int) -> tuple[np.ndarray, float]:
    design = np.c_[features, np.ones(len(features))]  # [cells, features + 1]: the last column is the intercept
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0
    theta = np.zeros(design.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        gradient = design.T @ (sample_weights * (p - targets)) + penalty * theta
        hessian = (design * (sample_weights * p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta[:-1], float(theta[-1])


# ------------------------------------------------------------------------------------------------------ examples
def example_images(folders: Sequence[str | Path], *, what: str = "blast examples") -> list[Path]:
    """The image files in folders of example cells (searched recursively), in a stable order.

    Raises:
        LeukolensError: a folder is missing, cannot be listed, or holds no image.
    """
    found: list[Path] = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise LeukolensError(f"{what} {folder}: no such folder")
        if not os.access(folder, os.R_OK | os.X_OK):
            raise LeukolensError(f"{what} {folder}: cannot read the folder (permission denied)")
        try:
            images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        except OSError as error:
            raise LeukolensError(f"{what} {folder}: cannot read the folder ({error.strerror or error})") from None
        if not images:
            raise LeukolensError(f"{what} {folder}: no images in it ({', '.join(IMAGE_SUFFIXES)})")
        found.extend(images)
    return found
