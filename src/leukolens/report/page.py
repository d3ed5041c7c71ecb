"""The frame of the HTML report: its styles (screen and print), the page around the sections, and the differential
chart as inline SVG. Everything here is text; nothing is fetched when the page opens (no script, no font, no
stylesheet from anywhere: the page's own Content-Security-Policy forbids it)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""Only inline styles and ``data:`` images: a report opened from a USB stick on a machine without network (or
with one) loads nothing else."""

STYLE = """
:root { --ink: #1d1d1f; --muted: #5f6368; --line: #d7d7db; --blast: #b3261e; --atypical: #b06000; --bar: #3a6ea5; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1100px; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; border-bottom: 2px solid var(--ink); padding-bottom: 2px; margin: 28px 0 10px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.muted { color: var(--muted); }
.disclaimer { border: 3px solid var(--blast); background: #fdecea; padding: 10px 14px; font-weight: 600;
              margin: 12px 0; }
.suggestion { font-size: 18px; margin: 6px 0; }
.status { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
          border: 1px solid var(--line); background: #f3f3f5; white-space: nowrap; }
.status.met, .status.supported { background: #e6f4ea; border-color: #8cc79b; }
.status.borderline, .status.possible { background: #fff4e0; border-color: #e0b060; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f5; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 6px 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
.cells a { white-space: nowrap; }
figure { margin: 8px 0 16px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 10px; }
.tile { border: 1px solid var(--line); border-radius: 6px; padding: 8px; font-size: 12px; background: #fff; }
.tile.blast { border: 2px solid var(--blast); }
.tile.atypical { border: 2px solid var(--atypical); }
.tile:target { outline: 3px solid var(--bar); }
.tile img { display: block; width: 112px; height: 112px; object-fit: contain; background: #eee; float: left;
            margin: 0 8px 4px 0; }
.tile .head { font-weight: 600; font-size: 13px; }
.tile .badge { display: inline-block; color: #fff; border-radius: 3px; padding: 0 5px; margin: 1px 2px 1px 0;
               font-size: 11px; }
.badge.blast { background: var(--blast); }
.badge.atypical { background: var(--atypical); }
.tile .sentence { clear: both; margin: 4px 0; font-style: italic; }
.tile ul { margin: 2px 0; padding-left: 16px; }
.tile .where { color: var(--muted); }
svg text { font: 12px system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; fill: var(--ink); }
@page { size: A4; margin: 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  section.page { break-before: page; }
  section.page:first-of-type { break-before: auto; }
  h2, h3 { break-after: avoid; }
  table, tr, figure, .tile, svg { break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
  /* inline blocks, three a row: a tile is never cut by a page break, whatever the browser does with grids */
  .gallery { display: block; }
  .tile { display: inline-block; width: 32.5%; margin: 0 0.5% 6px 0; vertical-align: top; }
}
"""


def esc(value: object) -> str:
    """Text from data, safe in HTML text and in quoted attribute values."""
    return escape(str(value), quote=True)


def page(title: str, body: str) -> str:
    """The whole document: ``title`` (escaped here) around ``body`` (HTML already escaped)."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


@dataclass(frozen=True)
class ChartRow:
    """One bar of the differential chart: a percent and its 95% interval (None when not computed)."""

    name: str
    count: int
    percent: float
    low: float | None = None
    high: float | None = None


def differential_chart(rows: Sequence[ChartRow], *, width: int = 640, row_height: int = 24) -> str:
    """Horizontal bars (percent) with interval whiskers (low-high), one row per type, as an inline SVG element."""
    label_width, value_width, top, bottom = 150, 120, 8, 28
    plot = width - label_width - value_width
    highest = max([r.high if r.high is not None else r.percent for r in rows] + [10.0])
    step = 10 if highest <= 50 else 20
    axis_max = min(100.0, math.ceil(highest / step) * step)
    height = top + bottom + row_height * len(rows)

    def x(percent: float) -> float:
        return label_width + plot * min(max(percent, 0.0), axis_max) / axis_max

    parts = [
        f'<svg class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="differential: percent of white cells with 95% '
        'intervals">'
    ]
    base = top + row_height * len(rows)
    for k in range(0, int(axis_max) + 1, step):
        parts.append(f'<line x1="{x(k):.1f}" y1="{top}" x2="{x(k):.1f}" y2="{base}" stroke="#e3e3e6"/>')
        parts.append(f'<text x="{x(k):.1f}" y="{base + 16}" text-anchor="middle">{k}%</text>')
    for i, row in enumerate(rows):
        y = top + i * row_height
        middle = y + row_height / 2
        parts.append(f'<text x="{label_width - 8}" y="{middle + 4:.1f}" text-anchor="end">{esc(row.name)}</text>')
        parts.append(
            f'<rect x="{label_width}" y="{y + 5}" width="{x(row.percent) - label_width:.1f}" '
            f'height="{row_height - 10}" fill="#3a6ea5"><title>{esc(row.name)}: {row.percent:.1f}%</title></rect>'
        )
        if row.low is not None and row.high is not None:
            left, right = x(row.low), x(row.high)
            parts.append(
                f'<line x1="{left:.1f}" y1="{middle:.1f}" x2="{right:.1f}" y2="{middle:.1f}" stroke="#1d1d1f" '
                'stroke-width="1.5"/>'
            )
            for end in (left, right):
                parts.append(
                    f'<line x1="{end:.1f}" y1="{y + 7}" x2="{end:.1f}" y2="{y + row_height - 7}" stroke="#1d1d1f" '
                    'stroke-width="1.5"/>'
                )
        parts.append(
            f'<text x="{width - value_width + 8}" y="{middle + 4:.1f}">{row.count} ({row.percent:.1f}%)</text>'
        )
    parts.append(f'<line x1="{label_width}" y1="{top}" x2="{label_width}" y2="{base}" stroke="#1d1d1f"/>')
    parts.append("</svg>")
    return "".join(parts)
