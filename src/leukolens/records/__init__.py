"""Typed records for smear fields, the cells in them, and their morphology.

Everything in leukolens speaks these records: readers produce them, writers consume them, models train on them.

- :class:`Box` knows its own format (corners, corner + size, centre + size) and whether it is in pixels or
  normalised to the image size.
- :class:`Cell` is one annotated object: a box, a class name from the data set's :class:`Vocabulary`, and
  morphological attributes as named values. "Not applicable" and "unknown" are explicit values
  (:data:`NOT_APPLICABLE`, :data:`UNKNOWN`), never a magic code.
- :class:`Field` is one image: its size, where it came from (:class:`Domain`), its annotated regions (empty means
  the whole field is annotated) and its cells.
- :class:`Dataset` holds fields with their vocabulary, attribute schema and splits.

The class vocabularies, the two shipped attribute schemas (LLD's seven, WBCAtt's eleven) and the mappings between
them live in :mod:`leukolens.records.vocabularies`; import them from here.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from leukolens.records.vocabularies import (
    BLOOD_CELLS,
    LLD_CLASSES,
    LLD_NOT_APPLICABLE_CODE,
    LLD_SCHEMA,
    LLD_TO_WBCATT,
    NOT_APPLICABLE,
    PBC_CLASSES,
    SCHEMA_MAPPINGS,
    SCHEMAS,
    SPECIAL_VALUES,
    UNKNOWN,
    VOCABULARIES,
    WBCATT_CLASSES,
    WBCATT_SCHEMA,
    WBCATT_TO_LLD,
    Attribute,
    AttributeMapping,
    AttributeSchema,
    AttributeSpec,
    SchemaMapping,
    Vocabulary,
    known_vocabulary,
    schema_mapping,
)

SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------------------------------------- boxes
class BoxFormat(StrEnum):
    """How the four numbers of a box are laid out."""

    XYXY = "xyxy"  # x1, y1, x2, y2: corners (Pascal VOC, the annotated regions of LLD)
    XYWH = "xywh"  # x, y, width, height: top-left corner and size (COCO)
    CXCYWH = "cxcywh"  # centre x, centre y, width, height (YOLO, LLD)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box with an explicit format, in pixels or normalised to [0, 1] of the image size."""

    values: tuple[float, float, float, float]
    format: BoxFormat = BoxFormat.XYXY
    normalized: bool = False

    def __post_init__(self) -> None:
        if len(self.values) != 4:
            raise ValueError(f"a box has 4 numbers, got {len(self.values)}")
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        object.__setattr__(self, "format", BoxFormat(self.format))

    def xyxy(self) -> tuple[float, float, float, float]:
        """Corners in this box's own units (pixels or normalised)."""
        a, b, c, d = self.values
        if self.format is BoxFormat.XYXY:
            return a, b, c, d
        if self.format is BoxFormat.XYWH:
            return a, b, a + c, b + d
        return a - c / 2, b - d / 2, a + c / 2, b + d / 2

    def convert(self, format: BoxFormat | str, *, normalized: bool, image_size: tuple[int, int] | None = None) -> Box:
        """The same box in another format and unit.

        Args:
            format: the target layout.
            normalized: whether the target is normalised to the image size.
            image_size: (width, height); needed only when the unit changes.
        """
        format = BoxFormat(format)
        if format is self.format and normalized == self.normalized:
            return self
        x1, y1, x2, y2 = self.xyxy()
        if normalized != self.normalized:
            if image_size is None:
                raise ValueError("converting between pixels and normalised coordinates needs the image size")
            w, h = image_size
            sx, sy = (1 / w, 1 / h) if normalized else (w, h)
            x1, y1, x2, y2 = x1 * sx, y1 * sy, x2 * sx, y2 * sy
        if format is BoxFormat.XYXY:
            values = (x1, y1, x2, y2)
        elif format is BoxFormat.XYWH:
            values = (x1, y1, x2 - x1, y2 - y1)
        else:
            values = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
        return Box(values, format, normalized)

    def pixels_xyxy(self, image_size: tuple[int, int] | None = None) -> tuple[float, float, float, float]:
        """Corners in pixels."""
        return self.convert(BoxFormat.XYXY, normalized=False, image_size=image_size).values

    @property
    def width(self) -> float:
        x1, _, x2, _ = self.xyxy()
        return x2 - x1

    @property
    def height(self) -> float:
        _, y1, _, y2 = self.xyxy()
        return y2 - y1

    def contains_point(self, x: float, y: float) -> bool:
        x1, y1, x2, y2 = self.xyxy()
        return x1 <= x <= x2 and y1 <= y <= y2

    def close_to(self, other: Box, *, image_size: tuple[int, int] | None = None, tolerance: float = 1e-6) -> bool:
        """Whether two boxes describe the same pixels, whatever their formats (``tolerance`` in pixels)."""
        a = self.pixels_xyxy(image_size)
        b = other.pixels_xyxy(image_size)
        return all(math.isclose(u, v, rel_tol=tolerance, abs_tol=tolerance) for u, v in zip(a, b))


def whole_image_box(image_size: tuple[int, int]) -> Box:
    """The box of a single-cell crop: the whole image, in pixels."""
    return Box((0, 0, image_size[0], image_size[1]), BoxFormat.XYXY, normalized=False)


# --------------------------------------------------------------------------------------------------- cells, fields
@dataclass
class Cell:
    """One annotated cell in a field.

    Attributes:
        box: where the cell is.
        label: class name, from the data set's vocabulary.
        attributes: attribute name -> value name, :data:`NOT_APPLICABLE` or :data:`UNKNOWN`. An empty dict means the
            cell carries no attribute annotation at all.
    """

    box: Box
    label: str
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class Domain:
    """Where and how a field was captured; ``None`` where not known."""

    source: str | None = None  # the data set it came from, e.g. "BCCD", "Raabin"
    microscope: str | None = None
    camera: str | None = None
    magnification: str | None = None  # e.g. "100x"
    stain: str | None = None  # e.g. "Wright", "Giemsa", "May-Grunwald-Giemsa"
    sample_id: str | None = None  # patient or sample
    diagnosis: str | None = None  # of the sample: "normal", "ALL", "AML", "CLL", "CML"

    def as_dict(self) -> dict[str, str]:
        """The known values only."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, values: dict) -> Domain:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown domain keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: (None if v in (None, "") else str(v)) for k, v in values.items()})


@dataclass
class Field:
    """One image of a smear (a whole field, or a single-cell crop) and its annotation.

    Attributes:
        image: path of the image file.
        width, height: image size in pixels.
        cells: the annotated cells.
        regions: annotated regions, boxes in pixels. Empty means the whole field is annotated; otherwise cells exist
            outside the regions but are not labelled there.
        domain: capture metadata.
        split: "train", "val", "test" or None.
    """

    image: Path
    width: int
    height: int
    cells: list[Cell] = field(default_factory=list)
    regions: list[Box] = field(default_factory=list)
    domain: Domain = field(default_factory=Domain)
    split: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    @property
    def id(self) -> str:
        """The image file name without its extension: how label files and images find each other."""
        return Path(self.image).stem

    @property
    def fully_annotated(self) -> bool:
        return not self.regions

    def annotated_fraction(self) -> float:
        """Share of the field's area inside its annotated regions (regions assumed not to overlap)."""
        if not self.regions:
            return 1.0
        pixel_regions = [r.convert(BoxFormat.XYXY, normalized=False, image_size=self.size) for r in self.regions]
        area = sum(r.width * r.height for r in pixel_regions)
        return min(1.0, area / (self.width * self.height))


@dataclass
class Dataset:
    """Fields with their label vocabulary and attribute schema."""

    fields: list[Field]
    classes: Vocabulary
    schema: AttributeSchema | None = None
    name: str = ""
    extras: dict = field(default_factory=dict)
    """What a reader learnt beside the records, e.g. ``extras["wbcatt"]``: how WBCAtt rows joined the images."""

    def __len__(self) -> int:
        return len(self.fields)

    def cells(self):
        for f in self.fields:
            yield from f.cells

    @property
    def splits(self) -> dict[str, list[Field]]:
        """Fields grouped by split, in order of first appearance; fields without a split under ``None``."""
        groups: dict = {}
        for f in self.fields:
            groups.setdefault(f.split, []).append(f)
        return groups

    def class_counts(self) -> Counter:
        return Counter(c.label for c in self.cells())

    def subset(self, split: str) -> Dataset:
        return dataclasses.replace(self, fields=[f for f in self.fields if f.split == split])


def differences(a: Dataset, b: Dataset, *, tolerance: float = 1e-6, compare_paths: bool = False) -> list[str]:
    """What differs between two data sets' records, as readable lines (empty when they are equal).

    Fields are matched by image file name; boxes are compared in pixels whatever their format, within ``tolerance``
    pixels. Image paths themselves are compared only with ``compare_paths`` (a conversion moves images).
    """
    out: list[str] = []
    if a.classes.names != b.classes.names:
        out.append(f"classes differ: {a.classes.names} != {b.classes.names}")
    if (a.schema and a.schema.name) != (b.schema and b.schema.name):
        out.append(f"attribute schemas differ: {a.schema and a.schema.name} != {b.schema and b.schema.name}")
    fa = {Path(f.image).name: f for f in a.fields}
    fb = {Path(f.image).name: f for f in b.fields}
    for name in sorted(set(fa) ^ set(fb)):
        out.append(f"{name}: only in {'the first' if name in fa else 'the second'} data set")
    for name in sorted(set(fa) & set(fb)):
        x, y = fa[name], fb[name]
        if compare_paths and Path(x.image) != Path(y.image):
            out.append(f"{name}: image path {x.image} != {y.image}")
        if x.size != y.size:
            out.append(f"{name}: size {x.size} != {y.size}")
        if x.split != y.split:
            out.append(f"{name}: split {x.split} != {y.split}")
        if x.domain != y.domain:
            out.append(f"{name}: domain {x.domain} != {y.domain}")
        if len(x.regions) != len(y.regions) or not all(
            r.close_to(s, image_size=x.size, tolerance=tolerance) for r, s in zip(x.regions, y.regions)
        ):
            out.append(f"{name}: regions {x.regions} != {y.regions}")
        if len(x.cells) != len(y.cells):
            out.append(f"{name}: {len(x.cells)} cells != {len(y.cells)} cells")
            continue
        for i, (c, d) in enumerate(zip(x.cells, y.cells)):
            if c.label != d.label:
                out.append(f"{name} cell {i}: label {c.label!r} != {d.label!r}")
            if c.attributes != d.attributes:
                out.append(f"{name} cell {i}: attributes {c.attributes} != {d.attributes}")
            if not c.box.close_to(d.box, image_size=x.size, tolerance=tolerance):
                out.append(f"{name} cell {i}: box {c.box.pixels_xyxy(x.size)} != {d.box.pixels_xyxy(x.size)}")
    return out


__all__ = [
    "BLOOD_CELLS",
    "LLD_CLASSES",
    "LLD_NOT_APPLICABLE_CODE",
    "LLD_SCHEMA",
    "LLD_TO_WBCATT",
    "NOT_APPLICABLE",
    "PBC_CLASSES",
    "SCHEMAS",
    "SCHEMA_MAPPINGS",
    "SPECIAL_VALUES",
    "SPLITS",
    "UNKNOWN",
    "VOCABULARIES",
    "WBCATT_CLASSES",
    "WBCATT_SCHEMA",
    "WBCATT_TO_LLD",
    "Attribute",
    "AttributeMapping",
    "AttributeSchema",
    "AttributeSpec",
    "Box",
    "BoxFormat",
    "Cell",
    "Dataset",
    "Domain",
    "Field",
    "SchemaMapping",
    "Vocabulary",
    "differences",
    "known_vocabulary",
    "schema_mapping",
    "whole_image_box",
]
