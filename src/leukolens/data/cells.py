"""Single cells as model inputs: samples from records, square crops with context, and an in-memory crop cache.

A cell's crop is a square window centred on its box, ``context`` times the box's longer side, so red cells around
it stay in view as the scale reference a hematologist uses (cell size is judged against red cells), whatever the
magnification. A cell whose box is the whole image (a single-cell crop data set) uses the whole image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from leukolens.errors import LeukolensError
from leukolens.records import AttributeSpec, Dataset

IGNORE = -100
"""Target of an attribute that is not applicable, unknown or not annotated: that head does not train on it."""


@dataclass(frozen=True)
class CropConfig:
    """How a cell becomes a model input; stored in checkpoints so prediction crops the same way.

    ``mode`` is ``image`` for models trained on single-cell images (the whole image is the input, as for a cell
    image file given to ``predict``), ``box`` for cells cut from fields. Either way, a cell with a box inside a
    larger field is cut with a window ``context`` times its box's longer side; for ``image`` models ``context`` is
    the median ratio of image side to box side in training, so that such a window shows the cell at the scale the
    model learnt.
    """

    input_size: int = 160
    context: float = 2.0
    cache_margin: float = 1.15  # cached crops are larger than the input, for random scale and crop
    mode: str = "box"

    @property
    def cache_size(self) -> int:
        return round(self.input_size * self.cache_margin)

    @property
    def cache_context(self) -> float:
        """Window of a cached crop: with a margin around a box; a whole image has nothing beyond it."""
        return self.context * self.cache_margin if self.mode == "box" else self.context

    @property
    def eval_margin(self) -> float:
        """What the evaluation transform centre-crops away from a cached crop."""
        return self.cache_margin if self.mode == "box" else 1.0


@dataclass(frozen=True)
class CellSample:
    """One cell to crop: its image, its box in pixels (x1, y1, x2, y2), class index, attribute codes."""

    image: Path
    box: tuple[float, float, float, float]
    image_size: tuple[int, int]
    label: int
    attributes: tuple[int, ...] = ()


def cell_samples(
    dataset: Dataset,
    *,
    classes: tuple[str, ...],
    attributes: tuple[AttributeSpec, ...] = (),
    split: str | None = None,
    exclude: tuple[str, ...] = (),
    whole_image: bool = False,
) -> list[CellSample]:
    """The cells of a data set as samples, with class and attribute targets.

    Args:
        classes: the model's class names; cells of other classes are left out.
        attributes: the model's attribute heads; values outside them (not applicable, unknown) become :data:`IGNORE`.
        split: only fields of this split (None: all).
        exclude: class names to leave out (e.g. to hold a class out of training).
        whole_image: use the whole image as the cell's window (single-cell image data sets).
    """
    samples = []
    for f in dataset.fields:
        if split is not None and f.split != split:
            continue
        for cell in f.cells:
            if cell.label not in classes or cell.label in exclude:
                continue
            codes = tuple(
                a.values.index(cell.attributes[a.name]) if cell.attributes.get(a.name) in a.values else IGNORE
                for a in attributes
            )
            box = (0.0, 0.0, float(f.width), float(f.height)) if whole_image else cell.box.pixels_xyxy(f.size)
            samples.append(CellSample(f.image, box, f.size, classes.index(cell.label), codes))
    return samples


def crop_window(box: tuple[float, float, float, float], image_size: tuple[int, int], context: float):
    """The square window (x1, y1, x2, y2) in pixels to cut around a box; the whole image for a whole-image box."""
    x1, y1, x2, y2 = box
    width, height = image_size
    if x1 <= 0.5 and y1 <= 0.5 and x2 >= width - 0.5 and y2 >= height - 0.5:
        return (0.0, 0.0, float(width), float(height))
    side = context * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def crop_cell(image: Image.Image, box: tuple[float, float, float, float], size: int, context: float) -> np.ndarray:
    """A ``size`` x ``size`` RGB crop around ``box``; parts of the window outside the image repeat its edge."""
    x1, y1, x2, y2 = crop_window(box, image.size, context)
    width, height = image.size
    inside = (
        max(0, int(np.floor(x1))),
        max(0, int(np.floor(y1))),
        min(width, int(np.ceil(x2))),
        min(height, int(np.ceil(y2))),
    )
    if inside[2] <= inside[0] or inside[3] <= inside[1]:
        raise LeukolensError(f"cell box {box} lies outside its {width}x{height} image")
    patch = np.asarray(image.crop(inside).convert("RGB"))
    pad = (
        (max(0, inside[1] - int(np.floor(y1))), max(0, int(np.ceil(y2)) - inside[3])),
        (max(0, inside[0] - int(np.floor(x1))), max(0, int(np.ceil(x2)) - inside[2])),
        (0, 0),
    )
    if any(p for pair in pad[:2] for p in pair):
        patch = np.pad(patch, pad, mode="edge")
    return np.asarray(Image.fromarray(patch).resize((size, size), Image.BILINEAR))


def load_image(path: Path, *, draft: tuple[int, int] | None = None) -> Image.Image:
    """An image as RGB; grayscale and palette images are converted, unreadable ones raise LeukolensError.

    Args:
        draft: for JPEG, let the decoder scale down by 1/2, 1/4 or 1/8 while staying at least this size: several
            times faster when the image is only going to be shrunk.
    """
    try:
        with Image.open(path) as image:
            if draft is not None and image.format == "JPEG":
                image.draft("RGB", draft)
            image.load()
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise LeukolensError(f"{path}: cannot read image ({error})") from None


def load_crops(
    samples: list[CellSample],
    *,
    size: int,
    context: float,
    stain: Callable[[np.ndarray], np.ndarray] | None = None,
    cache_dir: Path | None = None,
    progress: Callable | None = None,
) -> np.ndarray:
    """All crops as one ``uint8`` array ``[n, size, size, 3]``, cached on disk when ``cache_dir`` is given.

    Cells of the same image share one decode.
    """
    key = None
    if cache_dir is not None:
        digest = hashlib.sha1(
            repr((size, context, stain is not None, [(str(s.image), s.box) for s in samples])).encode()
        ).hexdigest()[:16]
        key = Path(cache_dir) / f"crops-{size}-{digest}.npy"
        if key.is_file() and stain is None:
            return np.load(key)
    crops = np.empty((len(samples), size, size, 3), np.uint8)
    order = sorted(range(len(samples)), key=lambda i: str(samples[i].image))
    current_path, current = None, None
    for i in progress(order) if progress else order:
        sample = samples[i]
        if sample.image != current_path:
            current_path, current = sample.image, load_image(sample.image)
        crop = crop_cell(current, sample.box, size, context)
        crops[i] = stain(crop) if stain is not None else crop
    if key is not None and stain is None:
        key.parent.mkdir(parents=True, exist_ok=True)
        tmp = key.with_suffix(".tmp.npy")
        np.save(tmp, crops)
        tmp.replace(key)
    return crops


def single_cell_images(dataset: Dataset) -> bool:
    """Whether every field holds exactly one cell: a data set of single-cell images (PBC, WBCAtt, Munich)."""
    return bool(dataset.fields) and all(len(f.cells) == 1 for f in dataset.fields)


def image_context(dataset: Dataset) -> float:
    """Median ratio of image side to cell box side: the window a whole-image model expects around a box."""
    ratios = []
    for f in dataset.fields:
        for cell in f.cells:
            x1, y1, x2, y2 = cell.box.pixels_xyxy(f.size)
            ratios.append(max(f.width, f.height) / max(x2 - x1, y2 - y1, 1e-6))
    return float(np.median(ratios)) if ratios else 2.0
