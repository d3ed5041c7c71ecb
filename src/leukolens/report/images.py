"""The report's pictures, inline: each field's overlay and each white cell's crop, as small JPEG data URIs.

JPEG and small sides keep a sample's report light (the six demo fields with their cells: a few hundred kB); the
overlay PNGs beside the report keep the full resolution.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from leukolens.errors import LeukolensError
from leukolens.io.slide import Slide, open_slide
from leukolens.predict.fields import load_field
from leukolens.report.overlay import PALETTE

OVERLAY_SIDE = 960
"""Longest side of a field's overlay in the report (px)."""
OVERLAY_QUALITY = 70
CROP_SIDE = 128
"""Longest side of a cell's crop in the report (px; shown at 112)."""
CROP_QUALITY = 82
CROP_MARGIN = 0.15
"""Context around a cell's box, as a share of the box's side on each edge."""


def jpeg_data_uri(image: Image.Image, *, max_side: int, quality: int) -> str:
    """``image`` shrunk to ``max_side`` (never enlarged) as a ``data:image/jpeg;base64,...`` URI."""
    image = image.convert("RGB")
    scale = max_side / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def cell_crop(image: Image.Image, box_xyxy: Sequence[float], *, margin: float = CROP_MARGIN) -> Image.Image:
    """The cell cut from its field: the box with ``margin`` of context on each side, clipped to the field."""
    x1, y1, x2, y2 = box_xyxy
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = max(0, int(x1 - dx)), max(0, int(y1 - dy))
    right, bottom = min(image.width, int(round(x2 + dx))), min(image.height, int(round(y2 + dy)))
    return image.crop((left, top, max(right, left + 1), max(bottom, top + 1)))


def read_field_image(document: dict) -> tuple[Image.Image | Slide | None, str | None]:
    """The field's image as analyze read it (RGB), or None and why it could not be read again. A whole slide (a
    document with a ``slide`` key) comes back open, never read whole: cells are cut from it region by region
    (:meth:`~leukolens.io.slide.Slide.crop`)."""
    if "slide" in document:
        try:
            return open_slide(Path(document["image"]), skip_damaged=True), None
        except LeukolensError as error:
            return None, str(error)
    try:
        image, _ = load_field(Path(document["image"]))
    except LeukolensError as error:
        return None, str(error)
    return image, None


def drawn_field(image: Image.Image, document: dict) -> Image.Image:
    """The field with its cells' boxes (for a sample analysed without overlays): one colour per detector class."""
    drawn = image.copy()
    draw = ImageDraw.Draw(drawn)
    classes = list(document.get("detector", {}).get("classes", []))
    width = max(2, round(image.width / 320))
    for cell in document.get("cells", []):
        name = cell.get("detector_class", "")
        colour = PALETTE[classes.index(name) % len(PALETTE)] if name in classes else (0, 0, 0)
        draw.rectangle(list(cell["box_xyxy"]), outline=colour, width=width)
    return drawn


def field_picture(out_dir: Path, stem: str, document: dict, image: Image.Image | Slide | None) -> Image.Image | None:
    """What the report shows of a field: its overlay ``<out>/<stem>.png`` when analyze drew one (a slide's thumbnail
    with its white cells marked), else the field with its boxes drawn here, else None (neither is readable)."""
    overlay = out_dir / f"{stem}.png"
    if overlay.is_file():
        try:
            with Image.open(overlay) as picture:
                return picture.convert("RGB")
        except OSError:
            pass  # drawn again from the field below
    return drawn_field(image, document) if isinstance(image, Image.Image) else None
