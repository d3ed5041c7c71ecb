"""Typed white cells from several microscopes as one training set.

Each data set names its classes its own way (PBC ``Neutrophil``, BCCD's side file ``NEUTROPHIL``, Chula
``Neutrophil``); here they meet in one vocabulary. Each data set keeps its own split where it has one; a data set
with slides but no split (Chula) is split by slide, never by field, because neighbouring fields of one slide look
alike and would leak. Every cell remembers its domain (the data set it came from), so that a benchmark can leave
one microscope out and test on it.

BCCD boxes its white cells as ``WBC`` and types them per image in ``wbc_types.csv`` (``Image`` i is
``BloodImage_{i:05d}``): fields whose row names exactly one type and that hold exactly one WBC box are typed; the
others are left out, since which box is which type is unknown.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from leukolens.data.cells import IGNORE, CellSample
from leukolens.io import ProblemLog, read_dataset
from leukolens.records import Dataset

WBC_CLASSES = (
    "Basophil",
    "Eosinophil",
    "Erythroblast",
    "Immature granulocyte",
    "Lymphocyte",
    "Monocyte",
    "Neutrophil",
)
"""The cell model's vocabulary when it learns from several data sets: PBC's seven classes."""

_ALIASES = {
    "basophil": "Basophil",
    "eosinophil": "Eosinophil",
    "erythroblast": "Erythroblast",
    "immature granulocyte": "Immature granulocyte",
    "ig": "Immature granulocyte",
    "lymphocyte": "Lymphocyte",
    "monocyte": "Monocyte",
    "neutrophil": "Neutrophil",
}

VAL_SHARE = 0.2
"""Share of a slide-split data set's cells kept for validation, in whole slides."""


@dataclass(frozen=True)
class DomainCell:
    """One typed white cell to crop, with where it came from."""

    sample: CellSample
    domain: str  # the data set's source name, e.g. "PBC", "BCCD", "Chula-WBC"
    split: str  # train, val or test
    slide: str | None = None


def canonical_class(name: str) -> str | None:
    """A class name in :data:`WBC_CLASSES`, or None for a name that is not a white-cell type we know."""
    return _ALIASES.get(name.strip().lower())


def _bccd_types(root: Path) -> dict[str, str]:
    """Field id -> type for BCCD fields whose ``wbc_types.csv`` row names exactly one known type."""
    path = next(iter(sorted(root.rglob("wbc_types.csv"))), None)
    if path is None:
        return {}
    types = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            names = [t.strip() for t in (row.get("Category") or "").split(",") if t.strip()]
            label = canonical_class(names[0]) if len(names) == 1 else None
            if label and (row.get("Image") or "").strip().isdigit():
                types[f"BloodImage_{int(row['Image']):05d}"] = label
    return types


def slide_splits(slides: list[str | None], labels: list[str]) -> dict[str, str]:
    """Slide -> ``train`` or ``val`` for a data set split by slide, from each cell's slide and class.

    Slides are taken in an order fixed by a hash of their names; a slide goes to validation while validation holds
    under :data:`VAL_SHARE` of the cells and training keeps at least half of every class's cells (class and slide
    are often confounded: one slide may hold most of a class).
    """
    per_slide: dict[str, Counter] = {}
    for slide, label in zip(slides, labels):
        if slide:
            per_slide.setdefault(slide, Counter())[label] += 1
    totals = sum(per_slide.values(), Counter())
    kept = Counter(totals)
    val_cells, splits = 0, {}
    order = sorted(per_slide, key=lambda name: hashlib.sha1(name.encode()).hexdigest())
    for slide in order:
        counts = per_slide[slide]
        fits = val_cells + sum(counts.values()) <= VAL_SHARE * sum(totals.values())
        if fits and all(kept[c] - n >= totals[c] / 2 for c, n in counts.items()):
            splits[slide] = "val"
            val_cells += sum(counts.values())
            kept.subtract(counts)
        else:
            splits[slide] = "train"
    return splits


def domain_name(dataset: Dataset, path: Path) -> str:
    sources = {f.domain.source for f in dataset.fields if f.domain.source}
    return sources.pop() if len(sources) == 1 else path.name


def typed_cells(path: str | Path, *, attributes=(), log: ProblemLog | None = None) -> list[DomainCell]:
    """The typed white cells of one data set, with class names in :data:`WBC_CLASSES`.

    Args:
        attributes: the model's attribute heads (``records.Attribute``-like: ``name``, ``values``); a cell without
            a value for one gets :data:`IGNORE` for that head.
    """
    path = Path(path)
    dataset = read_dataset(path, log=log or ProblemLog())
    bccd = _bccd_types(path)
    has_splits = len({f.split for f in dataset.fields}) > 1
    domain = domain_name(dataset, path)
    labelled_fields = []
    for field in dataset.fields:
        wbcs = [c for c in field.cells if canonical_class(c.label) or c.label == "WBC"]
        if bccd:
            if field.id not in bccd or len(wbcs) != 1:
                continue
            labelled_fields.append((field, [(wbcs[0], bccd[field.id])]))
        else:
            labelled_fields.append((field, [(c, canonical_class(c.label)) for c in wbcs if canonical_class(c.label)]))
    by_slide = {}
    if not has_splits:
        pairs = [(f.domain.sample_id, label) for f, cells in labelled_fields for _, label in cells]
        by_slide = slide_splits([s for s, _ in pairs], [lab for _, lab in pairs])
    cells = []
    for field, labelled in labelled_fields:
        slide = field.domain.sample_id
        split = by_slide.get(slide, field.split) if slide else field.split
        for cell, label in labelled:
            codes = tuple(
                a.values.index(cell.attributes[a.name]) if cell.attributes.get(a.name) in a.values else IGNORE
                for a in attributes
            )
            sample = CellSample(
                field.image, cell.box.pixels_xyxy(field.size), field.size, WBC_CLASSES.index(label), codes
            )
            cells.append(DomainCell(sample, domain, split or "train", slide))
    return cells


def white_cells(path: str | Path, *, sources: tuple[str, ...] = (), log: ProblemLog | None = None) -> list[CellSample]:
    """Every white cell a data set boxes, of every split, its type unknown (label :data:`IGNORE`): crops of other
    microscopes to adapt to without labels (``train cells --unlabelled-data``).

    A box is a white cell when it is labelled ``WBC`` or with a white-cell type. ``sources`` keeps only the fields of
    these sources (a field's ``domain.source``, e.g. TXL-PBC's ``Raabin-WBC``); empty keeps all.
    """
    dataset = read_dataset(path, log=log or ProblemLog())
    cells = []
    for field in dataset.fields:
        if sources and field.domain.source not in sources:
            continue
        for cell in field.cells:
            if cell.label == "WBC" or canonical_class(cell.label) is not None:
                cells.append(CellSample(field.image, cell.box.pixels_xyxy(field.size), field.size, IGNORE))
    return cells
