"""What is in a data set, in numbers: the body of ``leukolens data info`` and ``validate``."""

from __future__ import annotations

import statistics
from collections import Counter

from leukolens.io.common import ProblemLog
from leukolens.records import SPLITS, Dataset, Domain

MAX_LISTED_PROBLEMS = 20


def summarize(dataset: Dataset, log: ProblemLog, *, format: str = "") -> dict:
    """Counts of fields, cells per class, attribute values, domains, splits, image sizes and problems.

    Cells skipped for a problem are counted per class too, so the totals of the label files stay visible beside
    what was kept.
    """
    kept = dataset.class_counts()
    skipped = Counter(p.label for p in log.problems if p.label is not None)
    per_field = [len(f.cells) for f in dataset.fields]
    attributes: dict[str, Counter] = {}
    for cell in dataset.cells():
        for name, value in cell.attributes.items():
            attributes.setdefault(name, Counter())[value] += 1
    domains = {
        key: dict(Counter(getattr(f.domain, key) for f in dataset.fields if getattr(f.domain, key) is not None))
        for key in Domain.__dataclass_fields__
    }
    with_regions = [f for f in dataset.fields if f.regions]
    summary = {
        "name": dataset.name,
        "format": format,
        "fields": len(dataset.fields),
        "cells": sum(kept.values()),
        "classes": {
            name: {"cells": kept.get(name, 0), "skipped": skipped.get(name, 0)} for name in dataset.classes.names
        },
        "vocabulary": dataset.classes.name,
        "attribute_schema": dataset.schema.name if dataset.schema else None,
        "attributes": {name: dict(sorted(values.items())) for name, values in attributes.items()},
        "splits": {str(split): len(fields) for split, fields in sorted(dataset.splits.items(), key=_split_order)},
        "image_sizes": {f"{w}x{h}": n for (w, h), n in Counter(f.size for f in dataset.fields).most_common()},
        "domains": {key: values for key, values in domains.items() if values},
        "cells_per_field": {
            "min": min(per_field, default=0),
            "median": statistics.median(per_field) if per_field else 0,
            "mean": round(statistics.fmean(per_field), 2) if per_field else 0,
            "max": max(per_field, default=0),
            "empty_fields": sum(n == 0 for n in per_field),
        },
        "annotated_regions": {
            "fields_with_regions": len(with_regions),
            "mean_annotated_fraction": round(statistics.fmean(f.annotated_fraction() for f in with_regions), 4)
            if with_regions
            else None,
        },
        "problems": dict(sorted(log.counts().items())),
        "problem_list": [{"path": p.path, "line": p.line, "kind": p.kind, "message": p.message} for p in log.problems],
    }
    join = dataset.extras.get("wbcatt")
    if join is not None:
        summary["wbcatt"] = {
            "rows": join.rows,
            "matched": join.matched,
            "unmatched": join.unmatched,
            "fields_without_row": join.fields_without_row,
            "label_mismatch": join.label_mismatch,
        }
    return summary


def _split_order(item: tuple) -> tuple[int, str]:
    split = item[0]
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), str(split))


def _n(value: int) -> str:
    return f"{value:,}"


def format_summary(summary: dict) -> str:
    """The summary as the text ``leukolens data info`` prints."""
    lines = [
        f"data set {summary['name']!r} ({summary['format']}): {_n(summary['fields'])} fields, "
        f"{_n(summary['cells'])} cells"
    ]
    if any(split != "None" for split in summary["splits"]):
        lines.append("splits: " + ", ".join(f"{s} {_n(n)}" for s, n in summary["splits"].items()))
    lines.append(f"classes ({summary['vocabulary']}):")
    width = max((len(name) for name in summary["classes"]), default=0)
    for name, counts in summary["classes"].items():
        line = f"  {name:<{width}}  {_n(counts['cells']):>7}"
        if counts["skipped"]:
            total = counts["cells"] + counts["skipped"]
            line += f"  ({_n(total)} in the label files; {_n(counts['skipped'])} skipped for problems)"
        lines.append(line)
    per_field = summary["cells_per_field"]
    lines.append(
        f"cells per field: min {per_field['min']}, median {per_field['median']}, mean {per_field['mean']}, "
        f"max {per_field['max']}; {_n(per_field['empty_fields'])} fields without cells"
    )
    lines.append("image sizes: " + ", ".join(f"{size} ({_n(n)})" for size, n in summary["image_sizes"].items()))
    for key, values in summary["domains"].items():
        lines.append(f"{key}: " + ", ".join(f"{v} ({_n(n)})" for v, n in sorted(values.items())))
    regions = summary["annotated_regions"]
    if regions["fields_with_regions"]:
        lines.append(
            f"annotated regions: {_n(regions['fields_with_regions'])} sparsely annotated fields, "
            f"mean annotated fraction {regions['mean_annotated_fraction']:.3f}"
        )
    if summary["attributes"]:
        lines.append(f"attributes ({summary['attribute_schema']}):")
        for name, values in summary["attributes"].items():
            lines.append(f"  {name}: " + ", ".join(f"{v} {_n(n)}" for v, n in values.items()))
    if "wbcatt" in summary:
        join = summary["wbcatt"]
        lines.append(
            f"WBCAtt: {_n(join['rows'])} CSV rows, {_n(join['matched'])} found their image, "
            f"{_n(join['unmatched'])} did not; {_n(join['fields_without_row'])} images have no row"
        )
    lines.extend(format_problems(summary))
    return "\n".join(lines)


def format_problems(summary: dict) -> list[str]:
    problems = summary["problems"]
    if not problems:
        return ["problems: none"]
    lines = [
        f"problems: {_n(sum(problems.values()))} (" + ", ".join(f"{kind} {_n(n)}" for kind, n in problems.items()) + ")"
    ]
    listed = summary["problem_list"][:MAX_LISTED_PROBLEMS]
    for p in listed:
        where = f"{p['path']}:{p['line']}" if p["line"] is not None else p["path"]
        lines.append(f"  {where}: {p['message']}")
    hidden = len(summary["problem_list"]) - len(listed)
    if hidden > 0:
        lines.append(f"  ... and {_n(hidden)} more (all of them with --json PATH)")
    return lines
