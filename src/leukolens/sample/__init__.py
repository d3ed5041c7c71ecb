"""From the cells of one sample's fields to the sample: the differential count, the cells flagged for review, and
the interpretation (differential with confidence intervals, blast %, flags, a suggestion with its evidence)."""

from leukolens.sample.differential import (
    Differential,
    differential,
    format_summary,
    interpretation_json,
    summary_json,
)
from leukolens.sample.interpret import (
    CONFLICTS,
    DISCLAIMER,
    MEASURES,
    MIN_WHITE_CELLS,
    RULES,
    Interpretation,
    Rule,
    interpret,
    wilson_interval,
)

__all__ = [
    "CONFLICTS",
    "DISCLAIMER",
    "MEASURES",
    "MIN_WHITE_CELLS",
    "RULES",
    "Differential",
    "Interpretation",
    "Rule",
    "differential",
    "format_summary",
    "interpret",
    "interpretation_json",
    "summary_json",
    "wilson_interval",
]
