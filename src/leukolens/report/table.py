"""Every cell of a sample as one CSV row, ``<out>/cells.csv``, for spreadsheets.

One row per cell of the per-field JSON files (white cells, red cells and platelets alike), in field and cell order.
Columns: :data:`COLUMNS`, then per attribute of the cell model its value and its probability (``cell_size``,
``cell_size_probability``, ...; empty for cells the cell model did not read). docs/report.md lists them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from leukolens.errors import atomic_write_text

CSV_NAME = "cells.csv"
COLUMNS = (
    "field", "image", "cell", "x1", "y1", "x2", "y2", "detector_class", "detector_score", "type", "type_probability",
    "blast_probability", "blast_suspected", "atypicality", "verdict", "diameter_um",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""A text cell starting with one of these is read as a formula by spreadsheets: such text is quoted with ``'``."""


def _text(value: object) -> object:
    """``value`` as a spreadsheet shows it: None empty, booleans as true/false, text never taken for a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def attribute_names(fields: Sequence[tuple[str, dict]]) -> list[str]:
    """Every attribute of the sample's cells, in first-seen order (the cell model's order)."""
    names: dict[str, None] = {}
    for _, document in fields:
        for cell in document.get("cells", []):
            names.update(dict.fromkeys(cell.get("attributes", {})))
    return list(names)


def cell_rows(fields: Sequence[tuple[str, dict]]) -> tuple[list[str], list[list]]:
    """The header and one row per cell (values as written to the CSV)."""
    attributes = attribute_names(fields)
    header = list(COLUMNS) + [column for name in attributes for column in (name, f"{name}_probability")]
    rows = []
    for stem, document in fields:
        for cell in document.get("cells", []):
            row = [stem, document.get("image"), cell["id"], *cell["box_xyxy"]]
            row += [cell.get(key) for key in COLUMNS[7:]]
            for name in attributes:
                attribute = cell.get("attributes", {}).get(name) or {}
                row += [attribute.get("value"), attribute.get("probability")]
            rows.append([_text(value) for value in row])
    return header, rows


def write_cells_csv(out_dir: str | Path, fields: Sequence[tuple[str, dict]]) -> Path:
    """Write ``<out_dir>/cells.csv`` (atomically) and return its path.

    Args:
        fields: (output stem, field document as in ``<stem>.json``) per field.
    """
    header, rows = cell_rows(fields)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path = Path(out_dir) / CSV_NAME
    atomic_write_text(path, buffer.getvalue())
    return path
