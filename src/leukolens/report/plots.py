"""Small charts drawn with Pillow alone (no plotting library is a dependency)."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

COLOURS = ((214, 39, 40), (31, 119, 180), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75))


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    log_x: bool = False,
    y_range: tuple[float, float] = (0.0, 1.0),
    size: tuple[int, int] = (720, 460),
) -> Image.Image:
    """Lines with markers, one per series (points ``(x, y)``), a legend, axes with ticks at the data's x values.

    Raises:
        ValueError: no points at all, or a non-positive x on a logarithmic axis.
    """
    points = [p for values in series.values() for p in values]
    if not points:
        raise ValueError("nothing to draw: every series is empty")
    if log_x and any(x <= 0 for x, _ in points):
        raise ValueError("a logarithmic x axis needs positive x values")
    width, height = size
    left, right, top, bottom = 70, 190, 40, 60
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    xs = sorted({x for x, _ in points})
    scale = math.log10 if log_x else (lambda v: v)
    x0, x1 = scale(xs[0]), scale(xs[-1])
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = y_range

    def at(x: float, y: float) -> tuple[float, float]:
        px = left + (scale(x) - x0) / (x1 - x0) * (width - left - right)
        py = height - bottom - (min(max(y, y0), y1) - y0) / (y1 - y0) * (height - top - bottom)
        return px, py

    draw.rectangle([left, top, width - right, height - bottom], outline=(0, 0, 0))
    for k in range(6):
        y = y0 + (y1 - y0) * k / 5
        _, py = at(xs[0], y)
        draw.line([left - 4, py, left, py], fill=(0, 0, 0))
        draw.line([left, py, width - right, py], fill=(230, 230, 230))
        draw.text((left - 40, py - 6), f"{y:.2f}", fill=(0, 0, 0), font=font)
    for x in xs:
        px, _ = at(x, y0)
        draw.line([px, height - bottom, px, height - bottom + 4], fill=(0, 0, 0))
        draw.text((px - 10, height - bottom + 8), f"{x:g}", fill=(0, 0, 0), font=font)
    draw.text((left, 12), title, fill=(0, 0, 0), font=font)
    draw.text(((width - right + left) / 2 - 40, height - 24), x_label, fill=(0, 0, 0), font=font)
    draw.text((8, top - 24), y_label, fill=(0, 0, 0), font=font)
    for k, (name, values) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        line = [at(x, y) for x, y in sorted(values)]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        for px, py in line:
            draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colour)
        ly = top + 10 + 20 * k
        draw.line([width - right + 12, ly + 6, width - right + 36, ly + 6], fill=colour, width=2)
        draw.text((width - right + 42, ly), name, fill=(0, 0, 0), font=font)
    return image
