"""Making a data set imbalanced on purpose, and sampling against imbalance.

:func:`reduce_classes` keeps a small share of some classes' training cells (the rare-class protocol of
``leukolens balance``). The choice depends only on the samples, the classes and the seed, so a GAN trained on the
reduced set and the protocol that later trains cell models on it agree on exactly which cells were kept; its
:func:`selection_digest` lets the protocol check that.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from leukolens.data.cells import CellSample, cell_samples, image_context, single_cell_images
from leukolens.errors import LeukolensError
from leukolens.records import AttributeSpec, Dataset


def reduce_classes(
    samples: Sequence[CellSample], *, rare: Sequence[int], keep: float, seed: int = 0
) -> list[CellSample]:
    """The samples with only ``keep`` of each rare class left (at least one cell each), in their original order.

    Args:
        samples: the training cells.
        rare: class indices to reduce; other classes are kept whole.
        keep: share of each rare class to keep, in (0, 1].
        seed: which cells are kept.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be a share in (0, 1], got {keep}")
    rng = np.random.default_rng(seed)
    labels = np.array([s.label for s in samples])
    chosen = np.ones(len(samples), dtype=bool)
    for label in sorted(set(rare)):
        members = np.flatnonzero(labels == label)
        if len(members) == 0:
            continue
        count = max(1, math.ceil(keep * len(members) - 1e-9))
        kept = rng.choice(members, size=count, replace=False)
        chosen[members] = False
        chosen[kept] = True
    return [s for s, keep_it in zip(samples, chosen) if keep_it]


def selection_digest(samples: Sequence[CellSample]) -> str:
    """A short fingerprint of which cells a training set holds (image paths and boxes)."""
    text = "\n".join(sorted(f"{s.image.name}|{s.box}" for s in samples))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def class_sampling_weights(labels: np.ndarray, power: float) -> np.ndarray:
    """Per-sample probabilities so that a class of ``n`` cells is drawn in proportion to ``n ** (1 - power)``.

    ``power`` 0 draws cells uniformly (classes as often as they occur), 1 draws every class equally often
    (oversampling the rare ones), 0.5 is in between.
    """
    counts = np.bincount(labels)
    weights = counts[labels].astype(float) ** -power
    return weights / weights.sum()


@dataclass(frozen=True)
class CellSet:
    """The cells of one split, with the classes, attribute heads and crop window they are cut with."""

    samples: list[CellSample]
    classes: tuple[str, ...]
    attributes: tuple[AttributeSpec, ...]
    mode: str  # "image": whole single-cell images; "box": windows around boxes
    context: float  # the window side as a multiple of a box's longer side

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def attribute_codes(self) -> np.ndarray:
        """``[cells, attributes]`` value codes, IGNORE (-100) where not known."""
        return np.array([s.attributes for s in self.samples], dtype=np.int64).reshape(
            len(self.samples), len(self.attributes)
        )


def split_cells(
    dataset: Dataset,
    *,
    split: str | None,
    crop: str = "auto",
    context: float = 2.0,
    attributes: bool = True,
    rare: Sequence[str] = (),
    keep: float = 1.0,
    reduction_seed: int = 0,
) -> CellSet:
    """The cells of a split, every class of the data set, optionally with the rare classes reduced.

    Args:
        crop: ``image`` (whole single-cell images), ``box`` (windows around boxes) or ``auto`` (image when every
            field holds one cell).
        context: the window around a box, as a multiple of its longer side (box crops).
        attributes: give the data set's attributes as targets (when it has a schema).
        rare, keep, reduction_seed: see :func:`reduce_classes`.

    Raises:
        LeukolensError: a rare class the data set does not have, or no cells in the split.
    """
    classes = tuple(dataset.classes.names)
    unknown = set(rare) - set(classes)
    if unknown:
        raise LeukolensError(f"rare classes not in the data set: {sorted(unknown)} (classes: {', '.join(classes)})")
    specs = tuple(AttributeSpec(a.name, a.values) for a in dataset.schema) if attributes and dataset.schema else ()
    mode = crop if crop != "auto" else ("image" if single_cell_images(dataset) else "box")
    if mode not in ("image", "box"):
        raise LeukolensError(f"crop must be image, box or auto, got {crop!r}")
    window = round(image_context(dataset), 3) if mode == "image" else context
    samples = cell_samples(dataset, classes=classes, attributes=specs, split=split, whole_image=mode == "image")
    if not samples:
        raise LeukolensError(f"{dataset.name}: no cells in split {split!r} (see `leukolens data split`)")
    if rare:
        samples = reduce_classes(samples, rare=[classes.index(c) for c in rare], keep=keep, seed=reduction_seed)
    return CellSet(samples, classes, specs, mode, window)
