"""Draw a field with its labels: boxes, class names, attributes and annotated regions, to a PNG."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from leukolens.io.common import atomic_write_bytes
from leukolens.records import NOT_APPLICABLE, UNKNOWN, AttributeSchema, Field, Vocabulary

# Distinct colours that stay readable on pink-violet smears.
PALETTE = (
    (0, 114, 178),
    (213, 94, 0),
    (0, 158, 115),
    (204, 121, 167),
    (230, 159, 0),
    (86, 180, 233),
    (120, 60, 200),
    (0, 0, 0),
    (170, 30, 30),
    (40, 110, 40),
    (110, 70, 20),
    (60, 60, 160),
    (200, 40, 120),
    (20, 140, 140),
)
REGION_COLOUR = (255, 215, 0)
UNANNOTATED_DIM = 0.45  # how much of the image shows through outside the annotated regions


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without scalable default font
        return ImageFont.load_default()


def attribute_lines(attributes: dict[str, str], schema: AttributeSchema | None = None) -> list[str]:
    """One line per known attribute, e.g. 'nuclear chromatin: open' (not applicable and unknown left out)."""
    lines = []
    for name, value in attributes.items():
        if value in (NOT_APPLICABLE, UNKNOWN):
            continue
        title = name.replace("_", " ")
        if schema is not None and name in schema.names:
            title = schema[name].title or title
        lines.append(f"{title}: {value}")
    return lines


def _attribute_panel(image: Image.Image, entries: list[tuple[str, list[str]]], font, colours) -> Image.Image:
    """The image with a white panel on its right listing each numbered cell's attributes."""
    probe = ImageDraw.Draw(image)
    line_height = probe.textbbox((0, 0), "Ag", font=font)[3] + 3
    width = max(probe.textlength(line, font=font) for _, lines in entries for line in lines) + 24
    panel = Image.new("RGB", (image.width + int(width), image.height), (255, 255, 255))
    panel.paste(image, (0, 0))
    draw = ImageDraw.Draw(panel)
    y = 6
    for (heading, lines), colour in zip(entries, colours):
        for i, line in enumerate([heading, *lines]):
            if y + line_height > image.height:
                draw.text((image.width + 8, y - line_height), "...", fill=(0, 0, 0), font=font)
                return panel
            draw.text((image.width + (8 if i == 0 else 16), y), line, fill=colour if i == 0 else (0, 0, 0), font=font)
            y += line_height
        y += line_height // 2
    return panel


def draw_field(
    field: Field,
    classes: Vocabulary,
    *,
    schema: AttributeSchema | None = None,
    attributes: bool = True,
    max_side: int = 1024,
) -> Image.Image:
    """The field's image with its annotation drawn on it.

    Boxes carry a number and the class; cells with attributes are listed by number in a panel on the right.
    Outside the annotated regions of a sparsely annotated field the image is dimmed: cells there are not labelled.
    """
    image = Image.open(field.image).convert("RGB")
    scale = min(1.0, max_side / max(image.size))
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    if field.regions:
        dimmed = Image.blend(Image.new("RGB", image.size, (255, 255, 255)), image, UNANNOTATED_DIM)
        mask = Image.new("L", image.size, 0)
        mask_draw = ImageDraw.Draw(mask)
        for region in field.regions:
            mask_draw.rectangle([v * scale for v in region.pixels_xyxy(field.size)], fill=255)
        image = Image.composite(image, dimmed, mask)
    draw = ImageDraw.Draw(image)
    line_width = max(2, round(image.width / 320))
    font = _font(max(11, round(max(image.size) / 45)))
    for region in field.regions:
        draw.rectangle([v * scale for v in region.pixels_xyxy(field.size)], outline=REGION_COLOUR, width=line_width)
    entries, colours = [], []
    for number, cell in enumerate(field.cells, start=1):
        x1, y1, x2, y2 = (v * scale for v in cell.box.pixels_xyxy(field.size))
        colour = PALETTE[classes.index(cell.label) % len(PALETTE)] if cell.label in classes else (0, 0, 0)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line_width)
        lines = attribute_lines(cell.attributes, schema) if attributes else []
        text = f"#{number} {cell.label}" if lines else cell.label
        if lines:
            entries.append((text, lines))
            colours.append(colour)
        _, top, _, bottom = draw.textbbox((x1, y1), text, font=font)
        y_text = y1 - (bottom - top) - 4 if y1 - (bottom - top) - 4 >= 0 else y1 + line_width
        draw.rectangle(draw.textbbox((x1 + line_width, y_text), text, font=font), fill=(255, 255, 255))
        draw.text((x1 + line_width, y_text), text, fill=colour, font=font)
    return _attribute_panel(image, entries, font, colours) if entries else image


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Save atomically as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def draw_analyzed_field(field: Field, classes: Vocabulary) -> Image.Image:
    """A field read by ``analyze``: each cell under its type (or detector class), its predicted attributes in the
    panel, led by the verdict of an atypical cell."""
    cells = []
    for cell in field.cells:
        prediction = getattr(cell, "prediction", None)
        if prediction is not None and prediction.atypical:
            cell = dataclasses.replace(cell, attributes={"verdict": prediction.verdict, **cell.attributes})
        cells.append(cell)
    return draw_field(dataclasses.replace(field, cells=cells), classes)


def overlay_png(field: Field, classes: Vocabulary) -> bytes:
    """:func:`draw_analyzed_field` as PNG bytes (fast compression: the overlay is for eyes, not archives)."""
    buffer = io.BytesIO()
    draw_analyzed_field(field, classes).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
