"""Simulated sparse annotation: turn fully labelled fields into fields labelled only inside one rectangle.

LLD-style data sets label only the cells inside an annotated region of each field; the rest of the field holds
cells nobody boxed. To measure what a training method gains from such labels (the annotation-cost curve), we take
fully labelled fields and hide most of their labels: per field, a random rectangle covering ``fraction`` of its
area (aspect ratio between 1:2 and 2:1, placed uniformly, seeded by the field's name so that every mode and every
run sees the same rectangle), and only the cells whose box centre lies inside it keep their labels.

Three ways to train on the result (``SPARSE_MODES``):

- ``naive``: the rectangle is forgotten: the field looks fully annotated, so every unlabelled cell outside it is
  taught as background (what a pipeline unaware of sparse labels does).
- ``masked``: the rectangle is recorded in ``Field.regions``; the loss ignores the heatmap outside it.
- ``pseudo``: as ``masked``, plus confident detections of a slowly updated teacher outside the rectangle become
  extra, down-weighted targets (``train/detector.py``).

A fraction of 1 returns the fields unchanged (fully annotated) in every mode.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from leukolens.io.common import LeukolensError
from leukolens.records import Box, BoxFormat, Field

SPARSE_MODES = ("naive", "masked", "pseudo")
ASPECT_RANGE = (0.5, 2.0)  # width / height of the annotated rectangle


def random_region(width: int, height: int, fraction: float, rng: np.random.Generator) -> Box:
    """A rectangle of ``fraction`` of a ``width`` x ``height`` field's area, in pixels, inside the field.

    The aspect ratio is drawn log-uniformly in :data:`ASPECT_RANGE` and narrowed when the field cannot hold it (a
    half-area rectangle of a 4:3 field cannot be 2:1 tall), so the area is exact up to the field's shape.
    """
    if not 0 < fraction <= 1:
        raise LeukolensError(f"annotated fraction must be in (0, 1], got {fraction!r}")
    area = fraction * width * height
    # Aspect a = w / h with w = sqrt(area * a) <= width and h = sqrt(area / a) <= height.
    # The feasible aspects [area / h^2, w^2 / area] always hold the field's own aspect w / h.
    feasible_low, feasible_high = area / height**2, width**2 / area
    low, high = max(ASPECT_RANGE[0], feasible_low), min(ASPECT_RANGE[1], feasible_high)
    if low > high:  # a very elongated field: the feasible aspect nearest to square
        low = high = min(max(1.0, feasible_low), feasible_high)
    aspect = float(np.exp(rng.uniform(math.log(low), math.log(high))))
    w = min(float(width), math.sqrt(area * aspect))
    h = min(float(height), area / w)
    x1 = float(rng.uniform(0, width - w))
    y1 = float(rng.uniform(0, height - h))
    return Box((x1, y1, x1 + w, y1 + h), BoxFormat.XYXY, normalized=False)


def _field_seed(seed: int, field: Field) -> list[int]:
    # The file name, not the whole path: the same data set copied elsewhere keeps its rectangles.
    return [seed, zlib.crc32(Path(field.image).name.encode())]


def sparsify_field(field: Field, fraction: float, *, mode: str = "masked", seed: int = 0) -> Field:
    """The field with labels only inside a random rectangle of ``fraction`` of its area (see the module notes).

    Raises:
        LeukolensError: an unknown mode or a fraction outside (0, 1].
    """
    if mode not in SPARSE_MODES:
        raise LeukolensError(f"unknown sparse mode {mode!r}: use one of {', '.join(SPARSE_MODES)}")
    if not 0 < fraction <= 1:
        raise LeukolensError(f"annotated fraction must be in (0, 1], got {fraction!r}")
    if fraction >= 1:
        return field
    region = random_region(field.width, field.height, fraction, np.random.default_rng(_field_seed(seed, field)))
    kept = []
    for cell in field.cells:
        x1, y1, x2, y2 = cell.box.pixels_xyxy(field.size)
        if region.contains_point((x1 + x2) / 2, (y1 + y2) / 2):
            kept.append(cell)
    regions = [] if mode == "naive" else [region]
    return Field(field.image, field.width, field.height, kept, regions, field.domain, field.split)


def sparsify(fields: Sequence[Field], fraction: float, *, mode: str = "masked", seed: int = 0) -> list[Field]:
    """:func:`sparsify_field` for every field; a field's rectangle depends only on ``seed`` and its image file name."""
    return [sparsify_field(f, fraction, mode=mode, seed=seed) for f in fields]
