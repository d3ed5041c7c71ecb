"""Draw a field with its labels: boxes, class names, attributes and annotated regions, to a PNG."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from leukolens.io.common import atomic_write_bytes
from leukolens.records import NOT_APPLICABLE, UNKNOWN, Field, Vocabulary

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


def attribute_text(attributes: dict[str, str]) -> str:
    """A compact line of the known attribute values, e.g. 'large, open, irregular'."""
    return ", ".join(v for v in attributes.values() if v not in (NOT_APPLICABLE, UNKNOWN))


def draw_field(field: Field, classes: Vocabulary, *, attributes: bool = True, max_side: int = 1024) -> Image.Image:
    """The field's image with its annotation drawn on it.

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
    font = _font(max(11, round(image.width / 45)))
    for region in field.regions:
        draw.rectangle([v * scale for v in region.pixels_xyxy(field.size)], outline=REGION_COLOUR, width=line_width)
    for cell in field.cells:
        x1, y1, x2, y2 = (v * scale for v in cell.box.pixels_xyxy(field.size))
        colour = PALETTE[classes.index(cell.label) % len(PALETTE)] if cell.label in classes else (0, 0, 0)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line_width)
        text = cell.label
        if attributes and cell.attributes:
            extra = attribute_text(cell.attributes)
            text = f"{text}\n{extra}" if extra else text
        left, top, right, bottom = draw.multiline_textbbox((x1, y1), text, font=font)
        y_text = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1 + line_width
        box = draw.multiline_textbbox((x1 + line_width, y_text), text, font=font)
        draw.rectangle(box, fill=(255, 255, 255))
        draw.multiline_text((x1 + line_width, y_text), text, fill=colour, font=font)
    return image


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Save atomically as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
