"""The differential count of a sample: how many white cells of each type, in percent, and which were flagged.

    >>> counted = differential(fields)                    # [(stem, AnalyzedField), ...] from analyze
    >>> counted.percent()["Neutrophil"]

:func:`summary_json` writes it with what was read and skipped as ``<out>/summary.json`` of ``analyze``
(docs/output-schema.md); :func:`format_summary` prints it as a hematologist reads it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from leukolens.predict.output import SCHEMA_VERSION
from leukolens.predict.results import TYPICAL_VERDICT, AnalyzedField


@dataclass(frozen=True)
class FlaggedCell:
    """A white cell the cell model found atypical: to be reviewed."""

    field: str
    cell: int
    type: str
    atypicality: float | None


@dataclass
class Differential:
    """The cells of a sample, counted.

    Attributes:
        cells_found: detector class -> cells, over all fields (first-seen order).
        types: white-cell type -> cells the cell model read (first-seen order).
        flagged: the cells whose verdict is not typical.
    """

    cells_found: Counter = field(default_factory=Counter)
    types: Counter = field(default_factory=Counter)
    flagged: list[FlaggedCell] = field(default_factory=list)

    @property
    def typed(self) -> int:
        return sum(self.types.values())

    def ranked(self) -> list[tuple[str, int]]:
        """Types by count, most first (ties in first-seen order)."""
        return sorted(self.types.items(), key=lambda item: -item[1])

    def percent(self) -> dict[str, float]:
        """Share of the typed white cells per type, in percent, most first."""
        return {name: 100 * n / self.typed for name, n in self.ranked()}


def differential(fields: Sequence[tuple[str, AnalyzedField]]) -> Differential:
    """Count the cells of the analysed fields, each named by its output stem."""
    counted = Differential()
    for stem, f in fields:
        for cell in f.cells:
            counted.cells_found[cell.detector_class] += 1
            p = cell.prediction
            if p is None:
                continue
            counted.types[p.label] += 1
            if p.verdict != TYPICAL_VERDICT:
                atypicality = None if p.atypicality is None else round(p.atypicality, 4)
                counted.flagged.append(FlaggedCell(stem, cell.number, p.label, atypicality))
    return counted


def summary_json(
    counted: Differential,
    *,
    fields_read: int,
    skipped: list[dict],
    notes: list[str],
    detector: dict,
    seconds: float,
) -> dict:
    """``<out>/summary.json`` of ``analyze``: the differential and what was read."""
    return {
        "schema_version": SCHEMA_VERSION,
        "fields_read": fields_read,
        "fields_skipped": skipped,
        "cells_found": dict(counted.cells_found),
        "wbc_typed": counted.typed,
        "differential": {
            name: {"count": n, "percent": round(share, 1)}
            for (name, n), share in zip(counted.ranked(), counted.percent().values())
        },
        "atypical_flagged": len(counted.flagged),
        "flagged_cells": [
            {"field": c.field, "cell": c.cell, "type": c.type, "atypicality": c.atypicality} for c in counted.flagged
        ],
        "notes": notes,
        "detector": detector,
        "seconds": round(seconds, 2),
        "fields_per_second": round(fields_read / seconds, 2) if seconds > 0 else None,
    }


def format_summary(summary: dict, out: str | Path) -> str:
    """The differential count as a hematologist reads it (from :func:`summary_json`)."""
    lines = [
        f"{summary['fields_read']} fields read, {len(summary['fields_skipped'])} skipped "
        f"({summary['fields_per_second'] or 0:.1f} fields/s); results in {out}",
        "cells found: " + (", ".join(f"{k} {v}" for k, v in summary["cells_found"].items()) or "none"),
    ]
    if summary["wbc_typed"]:
        lines.append(f"WBC differential ({summary['wbc_typed']} cells typed):")
        for name, v in summary["differential"].items():
            lines.append(f"  {name:<22} {v['count']:>5}  {v['percent']:5.1f}%")
        lines.append(f"atypical cells flagged for review: {summary['atypical_flagged']}")
    for note in summary["notes"]:
        lines.append(f"note: {note}")
    for s in summary["fields_skipped"]:
        lines.append(f"skipped: {s['reason']}")
    return "\n".join(lines)
