"""The differential count of a sample: how many white cells of each type, in percent, and which were flagged.

    >>> counted = differential(fields)                    # [(stem, AnalyzedField), ...] from analyze
    >>> counted.percent()["Neutrophil"]

:func:`summary_json` writes it with what was read and skipped as ``<out>/summary.json`` of ``analyze``
(docs/output-schema.md), with the sample's interpretation (:mod:`leukolens.sample.interpret`) as
:func:`interpretation_json` writes it; :func:`format_summary` prints it as a hematologist reads it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from leukolens.predict.output import SCHEMA_VERSION
from leukolens.predict.results import TYPICAL_VERDICT, AnalyzedField
from leukolens.sample.interpret import (
    NOT_ASSESSED,
    AdjustedShare,
    CellRef,
    Finding,
    Interpretation,
    Suggestion,
)

CELLS_SHOWN = 5
"""Cells named per line of the printed summary (summary.json names them all)."""


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
    interpretation: Interpretation | None = None,
    resumed: int = 0,
) -> dict:
    """``<out>/summary.json`` of ``analyze``: the differential and what was read, and the sample's interpretation
    when given. ``resumed`` of the ``fields_read`` were read back from an earlier run's files (``--resume``):
    ``fields_per_second`` counts only the fields analysed in ``seconds``."""
    analysed = fields_read - resumed
    summary = {
        "schema_version": SCHEMA_VERSION,
        "fields_read": fields_read,
        "fields_resumed": resumed,
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
        "fields_per_second": round(analysed / seconds, 2) if seconds > 0 else None,
    }
    if interpretation is not None:
        summary["interpretation"] = interpretation_json(interpretation)
    return summary


# ------------------------------------------------------------------------------------------------------ interpretation
def _percent(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _cells(refs: tuple[CellRef, ...]) -> list[dict]:
    return [{"field": r.field, "cell": r.cell} for r in refs]


RATES_FROM = ("the blast scorer's fit: sensitivity on its blast examples, each left out of the prototypes; "
              "false-positive rate on the normal validation cells its threshold was set on")
"""Where the rates of an adjusted blast % were measured, written beside them in summary.json."""


def adjusted_json(adjusted: AdjustedShare | None) -> dict | None:
    """The secondary blast estimate, adjusted for the blast call's error rates: the share and its 95% interval
    (percents to 0.1), the rates with the counts behind them, and where they were measured."""
    if adjusted is None:
        return None
    rates = adjusted.rates
    return {"percent": _percent(100 * adjusted.share), "low": _percent(100 * adjusted.low),
            "high": _percent(100 * adjusted.high), "true_positive_rate": round(rates.true_positive_rate, 4),
            "blasts_called": rates.blasts_called, "blasts": rates.blasts,
            "false_positive_rate": round(rates.false_positive_rate, 4), "normals_called": rates.normals_called,
            "normals": rates.normals, "rates_from": RATES_FROM}


def finding_json(f: Finding) -> dict:
    """One rule tested on the sample: the test, its status, the numbers (percents to 0.1) and the cells behind it."""
    m = f.measured
    low, high = m.interval or (None, None)
    return {
        "rule": f.rule.conclusion, "role": f.rule.role, "measure": f.rule.measure, "test": f.rule.test,
        "status": f.status, "count": m.count, "total": m.total, "percent": _percent(m.percent),
        "low": _percent(low), "high": _percent(high), "expected_percent": _percent(m.expected_percent),
        "cells": _cells(m.cells),
    }


def _suggestion_json(s: Suggestion) -> dict:
    return {"name": s.name, "status": s.status, "evidence": [finding_json(f) for f in s.findings],
            "notes": list(s.notes)}


def interpretation_json(reading: Interpretation) -> dict:
    """The ``interpretation`` of ``summary.json`` (docs/output-schema.md; what it means: docs/interpretation.md)."""
    differential = {}
    for name, m in reading.rows.items():
        low, high = m.interval
        differential[name] = {"count": m.count, "percent": _percent(m.percent), "low": _percent(low),
                              "high": _percent(high), "expected_percent": _percent(m.expected_percent)}
    blasts = finding_json(reading.blasts)
    smudge = reading.smudge
    return {
        "white_cells_counted": reading.white_cells,
        "minimum_white_cells": reading.minimum_cells,
        "differential": differential,
        "blasts": {"assessed": reading.blasts.status != NOT_ASSESSED,
                   **{k: blasts[k] for k in ("count", "total", "percent", "low", "high", "expected_percent", "cells")},
                   "adjusted": adjusted_json(reading.adjusted_blasts)},
        "not_counted": {
            "smudge": {"assessed": smudge.status != NOT_ASSESSED, "count": smudge.measured.count,
                       "cells": _cells(smudge.measured.cells)},
            "unidentified": {"count": len(reading.unidentified), "cells": _cells(reading.unidentified)},
        },
        "flags": [finding_json(f) for f in reading.flags],
        "suggestion": _suggestion_json(reading.suggestion),
        "also_possible": [_suggestion_json(s) for s in reading.also_possible],
        "contradictions": [
            {"kind": c.kind, "reason": c.reason, "field": c.cell.field if c.cell else None,
             "cell": c.cell.cell if c.cell else None, "type": c.type, "attributes": dict(c.attributes)}
            for c in reading.contradictions
        ],
        "notes": list(reading.notes),
        "rules": "docs/interpretation.md",
        "disclaimer": reading.disclaimer,
    }


# ------------------------------------------------------------------------------------------------------ printing
def format_summary(summary: dict, out: str | Path) -> str:
    """The differential count as a hematologist reads it (from :func:`summary_json`): with the interpretation,
    each type with its 95% interval, the blast percentage, flags, the suggestion with its evidence, contradictions
    and the disclaimer."""
    reading = summary.get("interpretation")
    lines = [
        f"{summary['fields_read']} fields read{_resumed_text(summary)}, {len(summary['fields_skipped'])} skipped "
        f"({summary['fields_per_second'] or 0:.1f} fields/s); results in {out}",
        "cells found: " + (", ".join(f"{k} {v}" for k, v in summary["cells_found"].items()) or "none"),
    ]
    if summary["wbc_typed"]:
        lines.append(f"WBC differential ({summary['wbc_typed']} cells typed):")
        if reading is None:
            for name, v in summary["differential"].items():
                lines.append(f"  {name:<22} {v['count']:>5}  {v['percent']:5.1f}%")
        else:
            lines += _differential_lines(reading)
        lines.append(f"atypical cells flagged for review: {summary['atypical_flagged']}")
    if reading is not None:
        lines += _interpretation_lines(reading)
    for note in summary["notes"]:
        lines.append(f"note: {note}")
    for s in summary["fields_skipped"]:
        lines.append(f"skipped: {s['reason']}")
    if reading is not None:
        lines.append(reading["disclaimer"])
    return "\n".join(lines)


def _resumed_text(summary: dict) -> str:
    resumed = summary.get("fields_resumed", 0)
    return f" ({resumed} resumed from an earlier run, {summary['fields_read'] - resumed} analysed)" if resumed else ""


def _cells_text(cells: list[dict]) -> str:
    shown = ", ".join(f"{c['field']} #{c['cell']}" for c in cells[:CELLS_SHOWN])
    return shown + (f" and {len(cells) - CELLS_SHOWN} more" if len(cells) > CELLS_SHOWN else "")


def _numbers(f: dict) -> str:
    if f.get("status") == NOT_ASSESSED:
        return "(not assessed)"
    if f["percent"] is None:
        return f"{f['count']} cells"
    return f"{f['percent']:.1f}% (95% CI {f['low']:.1f}-{f['high']:.1f}, {f['count']}/{f['total']})"


def _differential_lines(reading: dict) -> list[str]:
    lines = [f"  {'type':<22} {'count':>5} {'%':>6}   95% CI        expected %"]
    for name, v in reading["differential"].items():
        expected = "" if v["expected_percent"] is None else f"{v['expected_percent']:5.1f}"
        interval = f"{v['low']:5.1f}-{v['high']:<5.1f}"
        lines.append(f"  {name:<22} {v['count']:>5} {v['percent']:6.1f}   {interval}   {expected}".rstrip())
    smudge, unidentified = reading["not_counted"]["smudge"], reading["not_counted"]["unidentified"]
    lines.append(f"  {reading['white_cells_counted']} white cells counted; kept out of the 100%: smudge "
                 f"{smudge['count'] if smudge['assessed'] else 'not assessed'}, unidentified {unidentified['count']}")
    return lines


def _interpretation_lines(reading: dict) -> list[str]:
    """The blast percentage, flags, suggestion with its evidence, and contradictions, from the JSON."""
    blasts = reading["blasts"]
    lines = [f"blasts: {_numbers(blasts)}" if blasts["assessed"] else "blasts: not assessed by this cell model"]
    adjusted = blasts.get("adjusted")
    if adjusted:  # secondary: the rules below test the count above
        lines.append(
            f"  adjusted for the blast call's error rates (not used by the rules): {adjusted['percent']:.1f}% "
            f"(95% CI {adjusted['low']:.1f}-{adjusted['high']:.1f}; sensitivity {adjusted['true_positive_rate']:.2f} "
            f"from {adjusted['blasts_called']}/{adjusted['blasts']} blast examples, false-positive rate "
            f"{adjusted['false_positive_rate']:.3f} from {adjusted['normals_called']}/{adjusted['normals']} "
            "validation cells)")
    for f in reading["flags"]:
        cells = f"; cells {_cells_text(f['cells'])}" if f["cells"] else ""
        lines.append(f"flag: {f['rule']}: {f['measure']} {_numbers(f)} {f['test']} [{f['status']}]{cells}")
    suggestion = reading["suggestion"]
    lines.append(f"suggestion: {suggestion['name']} ({suggestion['status']})")
    for f in suggestion["evidence"]:
        status = "" if f["status"] == NOT_ASSESSED else f", {f['status']}"
        lines.append(f"  {f['role']}: {f['measure']} {_numbers(f)}{status} for {f['test']}")
    lines += [f"  note: {note}" for note in suggestion["notes"]]
    lines += [f"  also {other['status']}: {other['name']}" for other in reading["also_possible"]]
    contradictions = reading["contradictions"]
    if contradictions:
        lines.append(f"contradictions ({len(contradictions)}):")
        for c in contradictions[:CELLS_SHOWN]:
            lines.append(f"  {c['field']} #{c['cell']}: {c['reason']}" if c["kind"] == "cell" else f"  {c['reason']}")
        if len(contradictions) > CELLS_SHOWN:
            lines.append(f"  and {len(contradictions) - CELLS_SHOWN} more (summary.json)")
    lines += [f"note: {note}" for note in reading["notes"]]
    return lines
