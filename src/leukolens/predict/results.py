"""Typed prediction results: what the detector found in a field, what the cell model says about a cell, and a
field read by ``analyze`` as :mod:`leukolens.records` records.

- :class:`FieldDetections` holds the boxes found in one image, with their format (corners, ``xyxy``), their unit
  (pixels) and the canvas they live on (the image's width and height), like torchvision's
  ``tv_tensors.BoundingBoxes``.
- :class:`CellPrediction` is the cell model's reading of one cell: type with probabilities, each attribute with its
  probabilities, atypicality and the verdict.
- :class:`PredictedCell` is a :class:`~leukolens.records.Cell` (box, label, attribute values) that also carries
  what the detector said and the cell model's :class:`CellPrediction`; :class:`AnalyzedField` is a
  :class:`~leukolens.records.Field` of them, with notes on how the image was read.

These records stay typed (float boxes, float probabilities) until :mod:`leukolens.predict.output` writes them as
JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from leukolens.records import Box, BoxFormat, Cell, Field

if TYPE_CHECKING:
    from leukolens.predict.scale import FieldScale

ATYPICAL_VERDICT = "atypical, review"
TYPICAL_VERDICT = "typical"


# ------------------------------------------------------------------------------------------------------ detections
@dataclass(frozen=True)
class FieldDetections:
    """The cells found in one image.

    Attributes:
        boxes: ``[n, 4]`` corners (x1, y1, x2, y2) in the pixels of the image, as floats (never rounded here).
        scores: ``[n]`` detector scores.
        labels: ``[n]`` indices into ``classes``.
        canvas_size: (width, height) of the image the boxes are in.
        classes: the detector's class names.
        scale: the scale the field was detected at and how it was found (None when not recorded).
        tiles: how many inputs the field was cut into at that scale (1: the whole field in one input).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    canvas_size: tuple[int, int]
    classes: tuple[str, ...]
    format: BoxFormat = BoxFormat.XYXY
    normalized: bool = False
    scale: FieldScale | None = None
    tiles: int = 1

    def __post_init__(self) -> None:
        if self.format is not BoxFormat.XYXY or self.normalized:
            raise ValueError("detections hold xyxy boxes in pixels")
        if self.boxes.shape != (len(self.scores), 4) or len(self.labels) != len(self.scores):
            raise ValueError(f"boxes {self.boxes.shape}, scores {self.scores.shape}, labels {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.scores)

    def box(self, i: int) -> Box:
        """The ``i``-th box as a :class:`~leukolens.records.Box` (xyxy, pixels)."""
        return Box(tuple(self.boxes[i]), BoxFormat.XYXY, normalized=False)

    def class_name(self, i: int) -> str:
        return self.classes[int(self.labels[i])]


# ------------------------------------------------------------------------------------------------------ cells
@dataclass
class AttributePrediction:
    value: str
    probability: float
    probabilities: dict[str, float]


@dataclass
class CellPrediction:
    """What the cell model says about one cell."""

    label: str
    probability: float
    probabilities: dict[str, float]
    attributes: dict[str, AttributePrediction] = field(default_factory=dict)
    atypicality: float | None = None
    atypical: bool = False
    source: str = ""
    # How blast-like the cell is, 0-1 (None without a blast scorer), and whether that passes the scorer's threshold.
    blast_probability: float | None = None
    blast_suspected: bool = False
    # The cell model's pooled embedding ``[features]`` (what "cells like this one" compares); not written to JSON.
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    # The cell's diameter (its box's longer side) in µm when its field's scale is known, else None; when known and
    # the checkpoint holds a size prior, it was weighed into the type (models/size.py).
    diameter_um: float | None = None

    @property
    def is_blast(self) -> bool:
        """A blast: typed ``Blast`` (a model calibrated with a lab's blasts) or suspected by the blast scorer."""
        return self.label == "Blast" or self.blast_suspected

    @property
    def verdict(self) -> str:
        return ATYPICAL_VERDICT if self.atypical else TYPICAL_VERDICT

    def as_dict(self) -> dict:
        """The prediction as ``leukolens predict cells --json`` writes it (see docs/output-schema.md)."""
        from leukolens.predict.output import prediction_json

        return prediction_json(self)


@dataclass
class PredictedCell(Cell):
    """A cell found and read in a field.

    ``label`` is the cell model's type for a white cell it read, else the detector's class; ``attributes`` holds the
    predicted value of each attribute (empty when the cell model did not run on this cell).

    Attributes:
        number: the cell's number in its field, from 1 in detector order.
        detector_class: the detector's class name.
        detector_score: the detector's score.
        prediction: the cell model's reading (``None`` for red cells, platelets, or without a cell model).
    """

    number: int = 0
    detector_class: str = ""
    detector_score: float = 0.0
    prediction: CellPrediction | None = None

    @classmethod
    def detected(cls, detections: FieldDetections, i: int, prediction: CellPrediction | None = None) -> PredictedCell:
        """The ``i``-th detection, read by the cell model when ``prediction`` is given."""
        detector_class = detections.class_name(i)
        return cls(
            box=detections.box(i),
            label=prediction.label if prediction else detector_class,
            attributes={n: a.value for n, a in prediction.attributes.items()} if prediction else {},
            number=i + 1,
            detector_class=detector_class,
            detector_score=float(detections.scores[i]),
            prediction=prediction,
        )


@dataclass
class AnalyzedField(Field):
    """A field read by ``analyze``: its :class:`PredictedCell` cells, notes on how the image was read (e.g.
    converted to RGB, or no cell model to type the white cells), the scale it was detected at and into how many
    tiles it was cut there (see :class:`FieldDetections`)."""

    notes: list[str] = field(default_factory=list)
    scale: FieldScale | None = None
    tiles: int = 1
