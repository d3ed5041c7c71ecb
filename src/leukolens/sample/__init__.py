"""From the cells of one sample's fields to the sample: the differential count and the cells flagged for review."""

from leukolens.sample.differential import Differential, differential, format_summary, summary_json

__all__ = ["Differential", "differential", "format_summary", "summary_json"]
