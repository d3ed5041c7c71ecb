"""A whole slide's picture: its thumbnail with every white cell marked, coloured by type, and a legend.

A slide's cells are too small to box at thumbnail size (a white cell of a 20,000 px slide is a few thumbnail pixels
across), so each white cell is a ring around its place, never smaller than :data:`MIN_RING` px; red cells and
platelets are not drawn. ``analyze`` writes it as ``<out>/<stem>.png``, where the report looks for a field's overlay.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from leukolens.records import Vocabulary
from leukolens.report.overlay import PALETTE, _font

MIN_RING = 5
"""Smallest ring radius (thumbnail px)."""


def draw_slide(
    thumbnail: np.ndarray, scale: float, cells: Sequence[tuple[tuple[float, float, float, float], str]],
    classes: Vocabulary,
) -> Image.Image:
    """The thumbnail ``uint8 [h, w, 3]`` (``scale`` thumbnail px per slide px) with a ring around each cell (box in
    slide pixels, label) and a legend with each label's count below."""
    image = Image.fromarray(thumbnail)
    draw = ImageDraw.Draw(image)
    width = max(1, round(max(image.size) / 800))
    for (x1, y1, x2, y2), label in cells:
        colour = PALETTE[classes.index(label) % len(PALETTE)] if label in classes else (0, 0, 0)
        cx, cy = (x1 + x2) / 2 * scale, (y1 + y2) / 2 * scale
        r = max(MIN_RING, max(x2 - x1, y2 - y1) * scale / 2 + 2)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=width)
    counts = Counter(label for _, label in cells)
    font = _font(max(12, round(max(image.size) / 90)))
    entries = [(f"{label} {n}", PALETTE[classes.index(label) % len(PALETTE)] if label in classes else (0, 0, 0))
               for label, n in counts.most_common()] or [("no white cells found", (0, 0, 0))]
    line = draw.textbbox((0, 0), "Ag", font=font)[3] + 6
    legend = Image.new("RGB", (image.width, line * ((len(entries) + 3) // 4) + 8), (255, 255, 255))
    legend_draw = ImageDraw.Draw(legend)
    column = image.width // 4
    for k, (text, colour) in enumerate(entries):
        x, y = 8 + (k % 4) * column, 4 + (k // 4) * line
        legend_draw.ellipse((x, y + line // 2 - 7, x + 12, y + line // 2 + 5), outline=colour, width=3)
        legend_draw.text((x + 18, y), text, fill=(0, 0, 0), font=font)
    page = Image.new("RGB", (image.width, image.height + legend.height), (255, 255, 255))
    page.paste(image, (0, 0))
    page.paste(legend, (0, image.height))
    return page


def slide_png(
    thumbnail: np.ndarray, scale: float, cells: Sequence[tuple[tuple[float, float, float, float], str]],
    classes: Vocabulary,
) -> bytes:
    """:func:`draw_slide` as PNG bytes."""
    buffer = io.BytesIO()
    draw_slide(thumbnail, scale, cells, classes).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
