"""A sample's report as one self-contained HTML file, ``<out>/report.html``, written by ``analyze`` last.

    >>> write_report(Path("out/smear"), summary, [(stem, field_document), ...])   # -> out/smear/report.html

What a reviewer opens: the sample's summary and suggestion with its evidence (each rule with its numbers and links
to the cells behind it), the differential with counts, percents and 95% intervals (table and chart), blast % and
flags, contradictions, the disclaimer; each field with its overlay; a gallery of every white cell grouped by type,
suspected blasts and atypical cells first, each tile with its crop, sentence, attributes and probabilities.

The file carries everything inline (JPEG data URIs, styles; no script) and prints on A4 with a page per section
(:mod:`leukolens.report.page`). Every string from the data is escaped. The inputs are the written documents
(``summary.json`` and the per-field JSON of docs/output-schema.md), so a report can be made again from an output
folder. docs/report.md describes it.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from leukolens import __version__
from leukolens.errors import atomic_write_text
from leukolens.models.blast import BLAST_MORPHOLOGY, RESEMBLES_EXAMPLES
from leukolens.predict.describe import BLAST_NOUN, Description, blast_sentence
from leukolens.records import NOT_APPLICABLE, SCHEMAS, UNKNOWN, AttributeSchema
from leukolens.report.images import (
    CROP_QUALITY,
    CROP_SIDE,
    OVERLAY_QUALITY,
    OVERLAY_SIDE,
    cell_crop,
    field_picture,
    jpeg_data_uri,
    read_field_image,
)
from leukolens.report.page import ChartRow, differential_chart, esc, page
from leukolens.sample.interpret import DISCLAIMER, NOT_WHITE
from leukolens.text.sentences import CLASS_KEY, compose, content_of

REPORT_NAME = "report.html"
TYPICAL = "typical"
BLAST_GROUP = "Blast (suspected)"
ATYPICAL_GROUP = "Atypical, review"
NOT_TYPED_GROUP = "Not typed"
SENTENCE_SOURCE = (
    "Sentences are composed from the cell model's own type and attribute readings (the same words as "
    "<code>leukolens describe</code>, \"blast (suspected)\" for a suspected blast, followed by its blast-like "
    "features); the image-text model is not run for the report."
)
FieldDocuments = Sequence[tuple[str, dict]]
"""(output stem, the field's document as in ``<out>/<stem>.json``) per field, in analysis order."""


# ------------------------------------------------------------------------------------------------------ cells
def is_white(cell: dict) -> bool:
    """A white cell: read by the cell model, or found by the detector as anything but a red cell or a platelet."""
    return "type" in cell or cell.get("detector_class") not in NOT_WHITE


def schema_of(attributes: dict) -> AttributeSchema | None:
    """The attribute schema whose attributes these are (WBCAtt's, LLD's), or None when none has them all."""
    names = set(attributes)
    for schema in SCHEMAS.values():
        if names and names <= set(schema.names):
            return schema
    return None


def blast_features(cell: dict) -> tuple[str, ...]:
    """The features of a suspected blast that read blast-like (:data:`~leukolens.models.blast.BLAST_MORPHOLOGY`,
    probability of the blast-like values at least one half), as :meth:`BlastScorer.reasons` words them."""
    attributes = cell.get("attributes", {})
    found = tuple(
        phrase
        for name, values, phrase in BLAST_MORPHOLOGY
        if sum(attributes.get(name, {}).get("probabilities", {}).get(v, 0.0) for v in values) >= 0.5
    )
    return found or (RESEMBLES_EXAMPLES,)


def cell_sentence(cell: dict) -> str:
    """One sentence about a white cell from the cell model's type and attributes; a suspected blast is called
    "blast (suspected)" and its blast-like features follow. A cell the cell model did not read: its detector class."""
    label = cell.get("type")
    if label is None:
        return f"{cell.get('detector_class', 'Cell')} (not typed)."
    values = {name: a["value"] for name, a in cell.get("attributes", {}).items()}
    schema = schema_of(values)
    try:
        if cell.get("blast_suspected"):
            read = {name: (a["value"], a["probability"]) for name, a in cell.get("attributes", {}).items()}
            description = Description(BLAST_NOUN, 0.0, {}, read, "")
            return blast_sentence(description, values, blast_features(cell), schema=schema,
                                  morphology=[name for name, _, _ in BLAST_MORPHOLOGY])
        if schema is None:
            return compose(((CLASS_KEY, label),), schema=next(iter(SCHEMAS.values())))
        return compose(content_of(label, values, schema=schema), schema=schema)
    except (KeyError, ValueError):  # a type or value the phrase bank does not know: say the type alone
        return f"{label}."


def _attribute_title(name: str, schema: AttributeSchema | None) -> str:
    if schema is not None and name in schema.names and schema[name].title:
        return schema[name].title
    return name.replace("_", " ")


# ------------------------------------------------------------------------------------------------------ helpers
def _percent(value) -> str:
    return "&ndash;" if value is None else f"{value:.1f}%"


def _interval(low, high) -> str:
    return "&ndash;" if low is None or high is None else f"{low:.1f}&ndash;{high:.1f}%"


def _status(status: str) -> str:
    return f'<span class="status {esc(status.replace(" ", "-"))}">{esc(status)}</span>'


class Anchors:
    """Where each field and white cell is in the page: ids made from positions, never from file names."""

    def __init__(self, fields: FieldDocuments):
        self.fields = {stem: i for i, (stem, _) in enumerate(fields)}

    def field(self, stem: str) -> str:
        return f"field-{self.fields[stem]}"

    def cell(self, stem: str, number: int) -> str:
        return f"cell-{self.fields[stem]}-{int(number)}"

    def link(self, ref: dict) -> str:
        text = f"{esc(ref['field'])} #{esc(ref['cell'])}"
        if ref.get("field") not in self.fields:
            return text
        return f'<a href="#{self.cell(ref["field"], ref["cell"])}">{text}</a>'

    def links(self, refs: Sequence[dict]) -> str:
        return '<span class="cells">' + ", ".join(self.link(r) for r in refs) + "</span>" if refs else ""


def _findings_table(findings: Sequence[dict], anchors: Anchors) -> str:
    """The rules tested, one row each: their numbers, status and the cells behind them."""
    if not findings:
        return '<p class="muted">none</p>'
    rows = []
    for f in findings:
        count = "&ndash;" if f.get("count") is None else esc(f["count"])
        if f.get("total") is not None:
            count += f"/{esc(f['total'])}"
        rows.append(
            f"<tr><td>{esc(f['rule'])}</td><td>{esc(f['role'])}</td><td>{esc(f['measure'])}</td>"
            f"<td>{esc(f['test'])}</td><td>{_status(f['status'])}</td><td class=\"num\">{count}</td>"
            f"<td class=\"num\">{_percent(f.get('percent'))}</td><td class=\"num\">"
            f"{_interval(f.get('low'), f.get('high'))}</td><td class=\"num\">{_percent(f.get('expected_percent'))}"
            f"</td><td>{anchors.links(f.get('cells', []))}</td></tr>"
        )
    return (
        '<table class="findings"><thead><tr><th>rule</th><th>role</th><th>measure</th><th>test</th><th>status</th>'
        '<th class="num">count</th><th class="num">%</th><th class="num">95% interval</th>'
        '<th class="num">expected %</th><th>cells</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>"
    )


def _list(items: Sequence[str], css: str = "") -> str:
    if not items:
        return ""
    return f'<ul class="{css}">' + "".join(f"<li>{esc(item)}</li>" for item in items) + "</ul>"


# ------------------------------------------------------------------------------------------------------ sections
def _summary_section(out_dir: Path, summary: dict, anchors: Anchors, title: str) -> str:
    reading = summary.get("interpretation") or {}
    cells_found = ", ".join(f"{esc(k)} {esc(v)}" for k, v in summary.get("cells_found", {}).items()) or "none"
    written = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    facts = [
        ("sample", esc(title)),
        ("fields read", esc(summary.get("fields_read", 0))),
        ("fields skipped", esc(len(summary.get("fields_skipped", [])))),
        ("cells found", cells_found),
        ("white cells typed", esc(summary.get("wbc_typed", 0))),
        ("white cells counted", esc(reading.get("white_cells_counted", summary.get("wbc_typed", 0)))),
        ("atypical cells flagged", esc(summary.get("atypical_flagged", 0))),
        ("detector", esc(Path(str(summary.get("detector", {}).get("checkpoint", ""))).name)),
        ("written", f"{written} by leukolens {esc(__version__)}"),
    ]
    parts = [
        f"<header><h1>Blood smear report: {esc(title)}</h1></header>",
        f'<p class="disclaimer" id="disclaimer">{esc(reading.get("disclaimer", DISCLAIMER))}</p>',
        '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>",
    ]
    suggestion = reading.get("suggestion")
    if suggestion:
        parts += [
            "<h2>Suggestion</h2>",
            f'<p class="suggestion"><strong>{esc(suggestion["name"])}</strong> {_status(suggestion["status"])}</p>',
            "<h3>Evidence</h3>",
            _findings_table(suggestion.get("evidence", []), anchors),
            _list(suggestion.get("notes", [])),
        ]
        for other in reading.get("also_possible", []):
            parts += [
                f"<h3>Also {esc(other['status'])}: {esc(other['name'])}</h3>",
                _findings_table(other.get("evidence", []), anchors),
                _list(other.get("notes", [])),
            ]
    else:
        parts.append('<p class="muted">No interpretation in this summary (written before it existed).</p>')
    notes = list(summary.get("notes", [])) + list(reading.get("notes", []))
    if notes:
        parts += ["<h3>Notes</h3>", _list(notes)]
    skipped = summary.get("fields_skipped", [])
    if skipped:
        parts += ["<h3>Fields skipped</h3>", _list([f"{s['image']}: {s['reason']}" for s in skipped])]
    return '<section class="page" id="summary">' + "".join(parts) + "</section>"


def differential_rows(summary: dict) -> list[dict]:
    """The differential's rows as the report shows them: ``{type, count, percent, low, high, expected_percent}``,
    from the interpretation when there is one (with intervals), else from the plain count."""
    reading = summary.get("interpretation") or {}
    table = reading.get("differential") or summary.get("differential", {})
    return [{"type": name, "count": row["count"], "percent": row["percent"], "low": row.get("low"),
             "high": row.get("high"), "expected_percent": row.get("expected_percent")} for name, row in table.items()]


def _differential_section(summary: dict, anchors: Anchors) -> str:
    reading = summary.get("interpretation") or {}
    rows = differential_rows(summary)
    body = "".join(
        f'<tr data-type="{esc(r["type"])}"><td>{esc(r["type"])}</td><td class="num count">{esc(r["count"])}</td>'
        f'<td class="num percent">{r["percent"]:.1f}</td><td class="num interval">{_interval(r["low"], r["high"])}'
        f'</td><td class="num expected">{_percent(r["expected_percent"])}</td></tr>'
        for r in rows
    )
    total = reading.get("white_cells_counted", summary.get("wbc_typed", 0))
    parts = [
        "<h2>Differential</h2>",
        f"<p>{esc(total)} white cells counted. Intervals: 95% Wilson score intervals from the counts; expected %: "
        "each cell counted by its probabilities (the model's own uncertainty).</p>",
        '<table class="differential"><thead><tr><th>type</th><th class="num">count</th><th class="num">%</th>'
        '<th class="num">95% interval</th><th class="num">expected %</th></tr></thead><tbody>'
        f"{body}</tbody></table>",
    ]
    if rows:
        chart = [ChartRow(r["type"], r["count"], r["percent"], r["low"], r["high"]) for r in rows]
        parts.append(f"<figure>{differential_chart(chart)}<figcaption>Percent of white cells counted; whiskers: "
                     "95% intervals.</figcaption></figure>")
    not_counted = reading.get("not_counted")
    if not_counted:
        smudge, unidentified = not_counted.get("smudge", {}), not_counted.get("unidentified", {})
        smudge_text = (f"{esc(smudge.get('count', 0))} {anchors.links(smudge.get('cells', []))}"
                       if smudge.get("assessed") else "not assessed by this cell model")
        parts.append(
            f"<p>Kept out of the 100%: smudge cells {smudge_text}; unidentified white cells "
            f"{esc(unidentified.get('count', 0))} {anchors.links(unidentified.get('cells', []))}</p>"
        )
    return '<section class="page" id="differential">' + "".join(parts) + "</section>"


def _blasts_section(summary: dict, anchors: Anchors) -> str:
    reading = summary.get("interpretation") or {}
    blasts = reading.get("blasts")
    parts = ["<h2>Blasts and flags</h2>"]
    if not blasts:
        parts.append('<p class="muted">Blasts not assessed (no interpretation).</p>')
    elif not blasts.get("assessed"):
        parts.append("<p><strong>Blasts: not assessed</strong>: this cell model cannot call a blast; no count means "
                     "nothing here.</p>")
    else:
        parts.append(
            f'<p class="blasts"><strong>Blasts: {_percent(blasts["percent"])}</strong> (95% interval '
            f'{_interval(blasts["low"], blasts["high"])}; {esc(blasts["count"])}/{esc(blasts["total"])} white cells; '
            f'expected {_percent(blasts.get("expected_percent"))}) {anchors.links(blasts.get("cells", []))}</p>'
        )
        adjusted = blasts.get("adjusted")
        if adjusted:  # secondary: the rules test the count above
            parts.append(
                f'<p class="muted">Adjusted for the blast call\'s error rates, not used by the rules: '
                f'{_percent(adjusted["percent"])} (95% interval {_interval(adjusted["low"], adjusted["high"])}; '
                f'sensitivity {adjusted["true_positive_rate"]:.2f} from {esc(adjusted["blasts_called"])}/'
                f'{esc(adjusted["blasts"])} blast examples, false-positive rate {adjusted["false_positive_rate"]:.3f} '
                f'from {esc(adjusted["normals_called"])}/{esc(adjusted["normals"])} validation cells, '
                "measured on the scorer's examples and training microscope, not on this sample's cells).</p>"
            )
    parts += ["<h3>Flags</h3>", _findings_table(reading.get("flags", []), anchors)]
    flagged = summary.get("flagged_cells", [])
    parts.append(f"<h3>Atypical cells flagged for review ({len(flagged)})</h3>")
    parts.append(f"<p>{anchors.links(flagged)}</p>" if flagged else '<p class="muted">none</p>')
    return '<section id="blasts">' + "".join(parts) + "</section>"


def _contradictions_section(summary: dict, anchors: Anchors) -> str:
    contradictions = (summary.get("interpretation") or {}).get("contradictions", [])
    parts = ["<h2>Contradictions</h2>"]
    if not contradictions:
        parts.append('<p class="muted">none</p>')
    else:
        rows = []
        for c in contradictions:
            cell = anchors.link({"field": c["field"], "cell": c["cell"]}) if c.get("field") is not None else ""
            attributes = ", ".join(f"{esc(k)}: {esc(v)}" for k, v in (c.get("attributes") or {}).items())
            rows.append(f"<tr><td>{esc(c['kind'])}</td><td>{esc(c['reason'])}</td><td>{cell}</td>"
                        f"<td>{esc(c.get('type') or '')}</td><td>{attributes}</td></tr>")
        parts.append('<table class="contradictions"><thead><tr><th>kind</th><th>reason</th><th>cell</th>'
                     "<th>type</th><th>attributes</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    return '<section id="contradictions">' + "".join(parts) + "</section>"


def _field_section(out_dir: Path, fields: FieldDocuments, images: dict, anchors: Anchors) -> str:
    parts = ["<h2>Fields</h2>"]
    for stem, document in fields:
        image, problem = images[stem]
        picture = field_picture(out_dir, stem, document, image)
        counts = ", ".join(f"{esc(k)} {esc(v)}" for k, v in document.get("counts", {}).items()) or "no cells"
        types = ", ".join(f"{esc(k)} {esc(v)}" for k, v in document.get("wbc_types", {}).items())
        scale = document.get("scale") or {}
        um = scale.get("microns_per_pixel")
        caption = (f"{esc(document.get('image', stem))}: {esc(document.get('width'))} x {esc(document.get('height'))}"
                   f" px; {counts}" + (f"; white cells: {types}" if types else "")
                   + (f"; {um} µm/px ({esc(scale.get('method', ''))})" if um else ""))
        if document.get("slide"):  # a whole slide: its thumbnail, white cells ringed by type
            caption += f"; whole slide read in {esc(document['slide'].get('windows'))} windows, white cells marked"
        notes = list(document.get("notes", [])) + ([f"image not shown: {problem}"] if problem else [])
        img = (f'<img src="{jpeg_data_uri(picture, max_side=OVERLAY_SIDE, quality=OVERLAY_QUALITY)}" '
               f'alt="field {esc(stem)} with its cells">' if picture is not None else "")
        parts.append(f'<figure class="field" id="{anchors.field(stem)}"><h3>{esc(stem)}</h3>{img}'
                     f"<figcaption>{caption}</figcaption>{_list(notes)}</figure>")
    return '<section class="page" id="fields">' + "".join(parts) + "</section>"


def gallery_groups(summary: dict, fields: FieldDocuments) -> list[tuple[str, list[tuple[str, dict]]]]:
    """Every white cell once, in groups: suspected blasts (most blast-like first), then atypical cells (most
    atypical first), then the other cells by type (the differential's order), then cells not typed."""
    blasts, atypical, by_type, untyped = [], [], {}, []
    for stem, document in fields:
        for cell in document.get("cells", []):
            if not is_white(cell):
                continue
            if cell.get("blast_suspected") or cell.get("type") == "Blast":
                blasts.append((stem, cell))
            elif "type" not in cell:
                untyped.append((stem, cell))
            elif cell.get("verdict", TYPICAL) != TYPICAL:
                atypical.append((stem, cell))
            else:
                by_type.setdefault(cell["type"], []).append((stem, cell))
    blasts.sort(key=lambda item: -(item[1].get("blast_probability") or 0.0))
    atypical.sort(key=lambda item: -(item[1].get("atypicality") or 0.0))
    order = [row["type"] for row in differential_rows(summary)]
    types = sorted(by_type, key=lambda name: (order.index(name) if name in order else len(order), name))
    groups = [(BLAST_GROUP, blasts), (ATYPICAL_GROUP, atypical)] + [(name, by_type[name]) for name in types]
    return [(name, cells) for name, cells in groups + [(NOT_TYPED_GROUP, untyped)] if cells]


def _tile(stem: str, cell: dict, image: Image.Image | None, anchors: Anchors) -> str:
    blast = bool(cell.get("blast_suspected"))
    atypical = cell.get("verdict", TYPICAL) != TYPICAL and "verdict" in cell
    css = "tile" + (" blast" if blast else "") + (" atypical" if atypical and not blast else "")
    crop = ""
    if image is not None:
        uri = jpeg_data_uri(cell_crop(image, cell["box_xyxy"]), max_side=CROP_SIDE, quality=CROP_QUALITY)
        crop = f'<img src="{uri}" alt="cell {esc(stem)} #{esc(cell["id"])}">'
    label = cell.get("type", cell.get("detector_class", "cell"))
    probability = f" {cell['type_probability'] * 100:.0f}%" if cell.get("type_probability") is not None else ""
    badges = ""
    if blast:
        badges += f'<span class="badge blast">blast (suspected) {cell.get("blast_probability", 0):.2f}</span>'
    if atypical:
        badges += f'<span class="badge atypical">{esc(cell["verdict"])}</span>'
    numbers = [f"detector {esc(cell.get('detector_class', ''))} {cell.get('detector_score', 0):.2f}"]
    if cell.get("atypicality") is not None:
        numbers.append(f"atypicality {cell['atypicality']:.2f}")
    if cell.get("blast_probability") is not None:
        numbers.append(f"blast {cell['blast_probability']:.2f}")
    probabilities = sorted((cell.get("type_probabilities") or {}).items(), key=lambda item: -item[1])
    top_types = ", ".join(f"{esc(name)} {p * 100:.0f}%" for name, p in probabilities[:3] if p >= 0.01)
    attributes = cell.get("attributes", {})
    schema = schema_of({name: a["value"] for name, a in attributes.items()})
    shown = [(name, a) for name, a in attributes.items() if a["value"] not in (NOT_APPLICABLE, UNKNOWN, "nil")]
    attribute_items = "".join(
        f'<li>{esc(_attribute_title(name, schema))}: <span class="value">{esc(a["value"])}</span> '
        f'{a["probability"] * 100:.0f}%</li>' for name, a in shown
    )
    return (
        f'<div class="{css}" id="{anchors.cell(stem, cell["id"])}" data-field="{esc(stem)}" '
        f'data-cell="{esc(cell["id"])}">{crop}<div class="head">{esc(label)}{probability}</div>{badges}'
        f'<div class="where"><a href="#{anchors.field(stem)}">{esc(stem)}</a> #{esc(cell["id"])}</div>'
        f'<div class="where">{"; ".join(numbers)}</div>'
        f'<p class="sentence">{esc(cell_sentence(cell))}</p>'
        + (f'<div class="types">types: {top_types}</div>' if top_types else "")
        + (f'<ul class="attributes">{attribute_items}</ul>' if attribute_items else "")
        + "</div>"
    )


def _gallery_section(summary: dict, fields: FieldDocuments, images: dict, anchors: Anchors) -> str:
    groups = gallery_groups(summary, fields)
    total = sum(len(cells) for _, cells in groups)
    parts = ["<h2>White cells</h2>", f"<p>{total} white cells. {SENTENCE_SOURCE}</p>"]
    for name, cells in groups:
        tiles = "".join(_tile(stem, cell, images[stem][0], anchors) for stem, cell in cells)
        parts.append(f'<h3>{esc(name)} ({len(cells)})</h3><div class="gallery">{tiles}</div>')
    if not groups:
        parts.append('<p class="muted">No white cells found.</p>')
    return '<section class="page" id="gallery">' + "".join(parts) + "</section>"


# ------------------------------------------------------------------------------------------------------ the file
def report_html(out_dir: str | Path, summary: dict, fields: FieldDocuments, *, title: str | None = None) -> str:
    """The report as a string; overlays are read from ``out_dir`` and cells cut from the fields' images.

    Args:
        out_dir: the analysis folder (``<stem>.png`` overlays are taken from it when present).
        summary: the sample's summary, as in ``summary.json``.
        fields: (stem, field document) per field, as in ``<stem>.json``.
        title: the sample's name (default: the folder's name).
    """
    out_dir = Path(out_dir)
    title = title or out_dir.resolve().name
    anchors = Anchors(fields)
    images = {stem: read_field_image(document) for stem, document in fields}
    body = "\n".join([
        _summary_section(out_dir, summary, anchors, title),
        _differential_section(summary, anchors),
        _blasts_section(summary, anchors),
        _contradictions_section(summary, anchors),
        _field_section(out_dir, fields, images, anchors),
        _gallery_section(summary, fields, images, anchors),
        f'<footer class="muted"><p>{esc(DISCLAIMER)}</p><p>Rules and thresholds: '
        f'{esc((summary.get("interpretation") or {}).get("rules", "docs/interpretation.md"))} in leukolens.</p>'
        "</footer>",
    ])
    return page(f"Blood smear report: {title}", body)


def write_report(out_dir: str | Path, summary: dict, fields: FieldDocuments, *, title: str | None = None) -> Path:
    """Write :func:`report_html` to ``<out_dir>/report.html`` (atomically) and return its path."""
    path = Path(out_dir) / REPORT_NAME
    atomic_write_text(path, report_html(out_dir, summary, fields, title=title))
    return path
