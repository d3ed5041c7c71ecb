"""Whole smear fields as detector inputs: letterbox a field and its boxes together, augment them together.

Boxes here are numpy arrays ``[cells, 4]`` of pixel corners (x1, y1, x2, y2) with class indices ``[cells]`` beside
them. Every transform takes an image and its boxes and returns both, so they cannot drift apart. A field with no
boxes is an ordinary input (arrays of shape ``[0, 4]`` and ``[0]``).

- :func:`letterbox`: scale so the longer side is ``size``, image at the top-left corner, padded right and bottom to
  a multiple of the network stride; :class:`Letterbox` maps predicted boxes back to the original pixels.
- :func:`random_window`: a random window of a field at a random scale (the pad colour fills what lies outside),
  the training crop.
- :func:`hflip`, :func:`vflip`, :func:`rot90`: a smear has no up or down.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from leukolens.records import Field, Vocabulary

PAD_COLOUR = (124, 116, 104)
"""ImageNet's mean colour: after normalisation the padding is zero."""
REGION = -1
"""Label of an annotated region carried through the transforms beside the boxes (clipped, never dropped while any
of it is in view)."""


def boxes_of(field: Field, classes: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """A field's cells as pixel corners ``[cells, 4]`` and class indices ``[cells]``; unknown classes left out."""
    kept = [c for c in field.cells if c.label in classes]
    boxes = np.array([c.box.pixels_xyxy(field.size) for c in kept], dtype=np.float32).reshape(-1, 4)
    labels = np.array([classes.index(c.label) for c in kept], dtype=np.int64)
    return boxes, labels


# ------------------------------------------------------------------------------------------------------ letterbox
@dataclass(frozen=True)
class Letterbox:
    """Where a field sits in the network input: scaled by ``scale_x``, ``scale_y`` (equal up to rounding the size
    to whole pixels), at the top-left corner of the canvas."""

    scale_x: float
    scale_y: float
    width: int  # original image size
    height: int
    canvas_width: int
    canvas_height: int

    @property
    def scale(self) -> float:
        return (self.scale_x + self.scale_y) / 2

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes ``[n, 4]`` in input pixels back to original pixels, clipped to the image."""
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y], dtype=np.float32)
        out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / scale
        out[:, 0::2] = out[:, 0::2].clip(0, self.width)
        out[:, 1::2] = out[:, 1::2].clip(0, self.height)
        return out


def letterbox_shape(width: int, height: int, size: int, multiple: int = 32) -> tuple[float, int, int, int, int]:
    """(scale, scaled width, scaled height, canvas width, canvas height) for an image of this size."""
    scale = size / max(width, height)
    scaled_w, scaled_h = max(1, round(width * scale)), max(1, round(height * scale))
    canvas_w = -(-scaled_w // multiple) * multiple
    canvas_h = -(-scaled_h // multiple) * multiple
    return scale, scaled_w, scaled_h, canvas_w, canvas_h


def letterbox(
    image: Image.Image,
    boxes: np.ndarray | None = None,
    *,
    size: int,
    multiple: int = 32,
    fill: tuple[int, int, int] = PAD_COLOUR,
) -> tuple[np.ndarray, np.ndarray, Letterbox]:
    """Resize so the longer side is ``size`` (keeping the aspect), pad right and bottom to a multiple of ``multiple``.

    Returns:
        the canvas ``uint8 [canvas_h, canvas_w, 3]``, the boxes in canvas pixels ``[n, 4]``, and the mapping back.
    """
    image = image.convert("RGB")
    scale, scaled_w, scaled_h, canvas_w, canvas_h = letterbox_shape(image.width, image.height, size, multiple)
    resized = image.resize((scaled_w, scaled_h), Image.BILINEAR, reducing_gap=2.0) if scale != 1 else image
    if (canvas_w, canvas_h) == (scaled_w, scaled_h):  # nothing to pad (a 640 x 480 field at 512)
        canvas = np.array(resized)  # writable, like the padded canvas
    else:
        canvas = np.empty((canvas_h, canvas_w, 3), dtype=np.uint8)
        canvas[:] = fill
        canvas[:scaled_h, :scaled_w] = np.asarray(resized)
    boxes = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    # The mapping uses the exact per-axis scale of the resized image so that boxes land on the pixels drawn.
    sx, sy = scaled_w / image.width, scaled_h / image.height
    moved = boxes * np.array([sx, sy, sx, sy], dtype=np.float32)
    return canvas, moved, Letterbox(sx, sy, image.width, image.height, canvas_w, canvas_h)


# ------------------------------------------------------------------------------------------------------ geometry
def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: x becomes width - x."""
    width = image.shape[1]
    out = boxes.copy()
    out[:, 0], out[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return image[:, ::-1], out


def vflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror top-bottom: y becomes height - y."""
    height = image.shape[0]
    out = boxes.copy()
    out[:, 1], out[:, 3] = height - boxes[:, 3], height - boxes[:, 1]
    return image[::-1], out


def rot90(image: np.ndarray, boxes: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by ``k`` quarter turns counter-clockwise (as ``np.rot90``)."""
    for _ in range(k % 4):
        width = image.shape[1]
        # np.rot90 sends pixel (x, y) to (y, width - 1 - x); for box edges (continuous coordinates): (y, width - x).
        boxes = np.stack([boxes[:, 1], width - boxes[:, 2], boxes[:, 3], width - boxes[:, 0]], axis=1)
        image = np.rot90(image)
    return image, boxes.astype(np.float32).reshape(-1, 4)


def random_window(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    *,
    out_size: int,
    scale: float,
    rng: np.random.Generator,
    min_visible: float = 0.4,
    fill: tuple[int, int, int] = PAD_COLOUR,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A square window of ``out_size / scale`` image pixels, resized to ``out_size``.

    The window's corner is drawn so that it stays within the image where it can (it may reach past the image when
    the image is smaller than the window; the outside is ``fill``). Boxes are clipped to the window; a box keeping
    less than ``min_visible`` of its area is dropped.
    """
    height, width = image.shape[:2]
    side = out_size / scale
    x0 = rng.uniform(min(0.0, width - side), max(0.0, width - side))
    y0 = rng.uniform(min(0.0, height - side), max(0.0, height - side))
    window = Image.fromarray(image).transform(
        (out_size, out_size), Image.EXTENT, (x0, y0, x0 + side, y0 + side), Image.BILINEAR, fillcolor=fill
    )
    moved = (boxes - np.array([x0, y0, x0, y0], dtype=np.float32)) * scale
    clipped = moved.clip(0, out_size)
    area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (visible >= min_visible * np.maximum(area, 1e-6)) & (clipped[:, 2] - clipped[:, 0] >= 2) & (
        clipped[:, 3] - clipped[:, 1] >= 2
    )
    # An annotated region is kept for whatever part of it the window shows.
    keep |= (labels == REGION) & (visible > 0)
    return np.asarray(window), clipped[keep].astype(np.float32), labels[keep]


@dataclass(frozen=True)
class FieldAugmentConfig:
    """Training augmentation of whole fields."""

    window: int = 320  # side of the training window, input pixels
    scale: tuple[float, float] = (0.75, 1.3)  # zoom of the window relative to the letterboxed field
    flips: bool = True
    rotations: bool = True
    stain_sigma: float = 0.05
    brightness: float = 0.15
    contrast: float = 0.15
    saturation: float = 0.2
    blur: float = 0.0  # half the windows blurred by a Gaussian of sigma up to this (input pixels): focus, optics
    noise: float = 0.0  # half the windows get Gaussian sensor noise of standard deviation up to this (of 1.0)
    hue: float = 0.0  # half the windows' hue turned by up to +- this many turns: stains that come out bluer or pinker
    grayscale: float = 0.0  # probability of a grey window: monochrome cameras, faded stains


FIELD_AUGMENT_PRESETS = {
    # Geometry only: windows, zoom, flips, turns; no colour or optics.
    "plain": FieldAugmentConfig(stain_sigma=0.0, brightness=0.0, contrast=0.0, saturation=0.0),
    # What the shipped detector trains with.
    "default": FieldAugmentConfig(),
    # For unseen labs, microscopes and cameras: stronger stain and colour jitter, blur, noise, wider zoom.
    "robust": FieldAugmentConfig(
        scale=(0.6, 1.6), stain_sigma=0.15, brightness=0.25, contrast=0.25, saturation=0.3, blur=1.5, noise=0.03,
        hue=0.1, grayscale=0.1,
    ),
}
"""Augmentation presets by name (``leukolens train detector --augment``)."""


def gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Blur each image ``[batch, 3, h, w]`` by its own Gaussian ``sigmas[b]`` (pixels; 0 leaves it unchanged)."""
    out = images.clone()
    for b, sigma in enumerate(sigmas.tolist()):
        if sigma <= 0.05:
            continue
        radius = max(1, int(math.ceil(3 * sigma)))
        x = torch.arange(-radius, radius + 1, dtype=images.dtype)
        kernel = torch.exp(-(x**2) / (2 * sigma**2))
        kernel = kernel / kernel.sum()
        image = images[b : b + 1]  # [1, 3, h, w]; separable: rows then columns, edges replicated
        image = F.pad(image, (radius, radius, 0, 0), mode="replicate")
        image = F.conv2d(image, kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1).contiguous(), groups=3)
        image = F.pad(image, (0, 0, radius, radius), mode="replicate")
        out[b : b + 1] = F.conv2d(image, kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1).contiguous(), groups=3)
    return out


def degrade(images: torch.Tensor, config: FieldAugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Camera, optics and sensor: hue, grey, blur and noise on images in [0, 1] ``[batch, 3, h, w]``, each but grey
    on a random half."""
    from leukolens.data.augment import hue_rotate  # the cell model's; augment imports this module's blur

    batch = images.shape[0]
    if config.hue:
        chosen = torch.rand(batch, generator=generator) < 0.5
        turns = (torch.rand(batch, generator=generator) * 2 - 1) * config.hue * chosen
        images = hue_rotate(images, turns).clamp(0, 1)
    if config.grayscale:
        grey = (torch.rand(batch, generator=generator) < config.grayscale).view(-1, 1, 1, 1)
        images = torch.where(grey, images.mean(dim=1, keepdim=True).expand_as(images), images)
    if config.blur:
        chosen = torch.rand(batch, generator=generator) < 0.5
        images = gaussian_blur(images, torch.rand(batch, generator=generator) * config.blur * chosen)
    if config.noise:
        chosen = (torch.rand(batch, 1, 1, 1, generator=generator) < 0.5).to(images.dtype)
        level = torch.rand(batch, 1, 1, 1, generator=generator) * config.noise * chosen
        images = images + torch.randn(images.shape, generator=generator) * level
    return images.clamp(0, 1)


@dataclass
class FieldArrays:
    """One field letterboxed once for training: ``uint8`` image, boxes in its pixels, class indices, and which
    classes it teaches (``None``: all; otherwise a boolean ``[classes]``, False for a class whose labels this field's
    data set follows another convention for, so that neither its boxes nor its absence train that class)."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    name: str = ""
    taught: np.ndarray | None = None
    regions: np.ndarray | None = None  # [regions, 4] annotated regions in its pixels; None: all of it is annotated


def load_field_arrays(
    fields: list[Field],
    classes: Vocabulary,
    *,
    size: int,
    taught: tuple[str, ...] = (),
    stain: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: Callable | None = None,
    scales: Mapping[str, float] | None = None,
) -> list[FieldArrays]:
    """Decode and letterbox (no padding) every field once.

    Args:
        scales: field id -> factor on ``size`` (see :func:`working_scales`): the field is letterboxed to
            ``size * factor``, so that its cells have the size the detector learns from the primary data set.
        taught: only these classes train on these fields (empty: all classes); boxes of the others are left out.
        stain: a stain normaliser applied to each decoded ``uint8`` image (see :mod:`leukolens.data.stain`).
    """
    from leukolens.data.cells import load_image

    mask = np.array([name in taught for name in classes.names]) if taught else None
    out = []
    for f in progress(fields) if progress else fields:
        image = load_image(f.image)
        if stain is not None:
            image = Image.fromarray(stain(np.asarray(image.convert("RGB"))))
        boxes, labels = boxes_of(f, classes)
        if mask is not None:
            boxes, labels = boxes[mask[labels]], labels[mask[labels]]
        field_size = round(size * scales.get(f.id, 1.0)) if scales else size
        canvas, moved, box = letterbox(image, boxes, size=field_size, multiple=1)
        regions = None
        if f.regions:
            scale = np.array([box.scale_x, box.scale_y, box.scale_x, box.scale_y], np.float32)
            regions = np.array([r.pixels_xyxy(f.size) for r in f.regions], np.float32) * scale
        out.append(FieldArrays(canvas, moved, labels, f.id, mask, regions))
    return out


def working_scales(
    reference: list[Field], groups: list[list[Field]], *, size: int, cell: str = "WBC", limits=(0.4, 3.0)
) -> dict[str, float]:
    """Field id -> factor that brings each group's cells to the reference fields' cell size once letterboxed to
    ``size``: the scale ``detect`` brings every field to at inference (from its red cells; here from the labelled
    white cells, the class every training set boxes). Within a group, fields are told apart by source and image
    size (TXL-PBC mixes four microscopes). Groups without a labelled ``cell`` keep factor 1.
    """

    def side(f: Field) -> list[float]:
        scale = size / max(f.width, f.height)
        return [max(b[2] - b[0], b[3] - b[1]) * scale for b in (c.box.pixels_xyxy(f.size) for c in f.cells
                                                                 if c.label == cell)]

    target = float(np.median([s for f in reference for s in side(f)]))
    factors: dict[str, float] = {}
    for fields in groups:
        by_kind: dict[tuple, list[Field]] = {}
        for f in fields:
            by_kind.setdefault((f.domain.source, f.size), []).append(f)
        for members in by_kind.values():
            sides = [s for f in members for s in side(f)]
            factor = float(np.clip(target / np.median(sides), *limits)) if sides else 1.0
            factors.update({f.id: factor for f in members})
    return factors


def augment_field(
    field: FieldArrays, config: FieldAugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """A random window of the field, flipped and turned; colour is changed later on the batch.

    Returns:
        the window, its boxes ``[n, 4]``, their labels ``[n]``, and its annotated regions ``[r, 4]`` (None when the
        field is fully annotated; an empty array when the window shows no annotated region).
    """
    low, high = config.scale
    scale = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    boxes, labels = field.boxes, field.labels
    if field.regions is not None:
        boxes = np.concatenate([boxes, field.regions]).astype(np.float32)
        labels = np.concatenate([labels, np.full(len(field.regions), REGION, dtype=labels.dtype)])
    image, boxes, labels = random_window(field.image, boxes, labels, out_size=config.window, scale=scale, rng=rng)
    if config.flips and rng.random() < 0.5:
        image, boxes = hflip(image, boxes)
    if config.rotations:
        image, boxes = rot90(image, boxes, int(rng.integers(0, 4)))
    cells = labels != REGION
    regions = boxes[~cells] if field.regions is not None else None
    return np.ascontiguousarray(image), boxes[cells], labels[cells], regions
