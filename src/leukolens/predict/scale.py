"""Bring a smear field to the scale the detector learnt, whatever the microscope, camera or magnification.

    >>> scale = estimate_scale(field, detect, classes=("WBC", "RBC", "Platelets"))
    >>> scale.microns_per_pixel, scale.factor, scale.red_cells, scale.method
    >>> found = detect_at_scale(field, detect, factor=scale.factor)   # boxes in the field's native pixels

A detector trained on one microscope learns its cells' size in pixels: the shipped one saw BCCD's 640x480 fields
letterboxed to 512 px, where a red cell is about 80 px across, and finds few cells at a third or three times that
size. Red cells are about 7.5 µm across and lie in every smear field, so the field itself says its scale:

- :func:`estimate_scale` runs the detector on a window of the field at a few candidate resize factors (0.25x to 3x
  of the native size, geometric), keeps the confident red cells wholly inside the window, and picks the factor at
  which their median diameter is closest to the learnt one, weighting by how many were found; then it refines from
  the median diameter at the chosen factor (twice: the size head pulls sizes towards what it learnt, so one step
  corrects only part of the way). ``microns_per_pixel`` is 7.5 / the median red-cell diameter in native pixels.
  A user-given microns per pixel overrides the estimate; with no red cells to go on, the field is letterboxed as
  in training and the record says so.
- :func:`detect_at_scale` resizes the field by the factor; a result larger than one input is cut into overlapping
  tiles (:func:`tile_layout`, overlap at least one large white cell), each tile is detected at its own pixels, and
  :func:`merge_tiles` maps the boxes back to native pixels, drops boxes cut by a tile's inner border where the same
  cell is seen whole in a neighbour, and runs class-wise NMS across tiles. A large field is never shrunk into one
  small input.
- :func:`estimate_sample_scale` does the same for a sample (one slide on one microscope: one scale) with the red
  cells of its first fields pooled, one more field only while there are fewer than ``enough_red_cells``: fields of
  a high magnification hold only a few whole red cells each. :func:`fitted_factor` brings a field that would be just
  over one input (at most ``fit_slack``, 1.2x) into one input instead of two or more tiles: the cells stay within
  the zoom the detector was trained with, at half the cost.

The detector comes in as a callable ``detect(image) -> (boxes, scores, labels)``: ``image`` ``uint8 [h, w, 3]``,
run as given (padded to the network's multiple, never resized), boxes xyxy ``float32 [n, 4]`` in that image's
pixels, scores ``[n]``, class indices ``[n]``. This module calls it only on images no larger than ``tile_size``
(default the detector's input size) on either side.

Measured (``benchmarks/scale_sweep.py``, shipped detector, 640x480 fields simulating other magnifications:
mosaics of shrunk BCCD test fields below 1x, enlarged centre crops above; one estimate per 3 fields): WBC AP50
0.97-1.00 from 0.33x to 3x with the estimate and tiles, where the letterbox gives 0.85 at 0.33x and 0.06 at 3x;
the estimate's factor is within 6-13% (median) from 0.33x to 2x, and poor at 3x (80%: few whole red cells in a
field that shows a ninth of BCCD's, though the white cells are still found). BCCD fields upsampled to 2592x1944:
factor within 1%, one input. The detector-free alternative (granulometry of the red-cell mask: green below Otsu,
holes filled, median inscribed diameter of the components) was measured in an earlier version of the sweep and kept
out: 35-50% median error even after calibrating it on unresized fields, because touching and overlapping red cells
merge into larger components. On Chula's pale low-cost-camera fields the shipped detector's red cells give a scale
(no fallback per slide) but its white cells are not found at any scale (WBC AP50 0.01 letterbox, 0.07 auto):
a colour and domain gap, not a scale one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from PIL import Image

from leukolens.data.fields import PAD_COLOUR  # the colour fields are padded with, in training and here
from leukolens.models.detector import Detections

RBC_MICRONS = 7.5  # a normal red cell's diameter (normocyte, 6.2-8.2 µm)
# Median sqrt(width * height) of the shipped detector's red cells (score >= 0.45, wholly inside the input) on 103
# BCCD training fields (every other one) letterboxed to 512 px (640x480 -> 512x384). The annotated boxes of the
# same fields give 82.9 px; the detector's own figure is used because the estimate compares it with detections.
LEARNT_RBC_DIAMETER = 80.6
LEARNT_INPUT_SIZE = 512  # the input size at which LEARNT_RBC_DIAMETER was measured
# 95th percentile of BCCD training white cells (annotated, wholly inside the field: 189.8 px at 512) over the
# learnt red cell: a tile overlap of this many red cells sees every ordinary white cell whole in some tile.
LARGE_WBC_TO_RBC = 2.4
RED_CELLS = "red cells"
OVERRIDE = "override"
FALLBACK = "fallback: no red cells found, letterbox"
LETTERBOX = "letterbox (asked)"
# A whole slide cannot be letterboxed into one input: with no red cells to go on it is read at its own pixels.
NATIVE_FALLBACK = "fallback: no red cells found, native pixels"
METHODS = (RED_CELLS, OVERRIDE, FALLBACK, LETTERBOX, NATIVE_FALLBACK)

DetectFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def learnt_rbc_diameter(*, input_size: int, metrics: Mapping | None = None) -> float:
    """The red-cell diameter a detector learnt, in its input pixels: ``metrics["rbc_diameter"]`` when the
    checkpoint stores it, else :data:`LEARNT_RBC_DIAMETER` (the shipped detector, BCCD) scaled to ``input_size``."""
    stored = (metrics or {}).get("rbc_diameter")
    return float(stored) if stored else LEARNT_RBC_DIAMETER * input_size / LEARNT_INPUT_SIZE


@dataclass(frozen=True)
class ScaleConfig:
    """How a field's scale is estimated.

    Attributes:
        rbc_diameter: the red-cell diameter the detector learnt, in its input pixels (:func:`learnt_rbc_diameter`).
        input_size: the detector's input size; also the side of the window the estimate looks at.
        candidates: resize factors tried (native -> detector pixels).
        rbc_score: red cells at or above this score count.
        min_red_cells: fewer red cells than this at every candidate: no estimate (fallback).
        refine_steps: corrections from the median diameter after the best candidate.
        tolerance: how far (a factor) the median diameter may be from the learnt one before a candidate's weight
            halves, about; the detector itself was trained with zoom 0.75-1.3.
        max_weight_cells: red cells beyond this many add no weight (a window at a too small factor holds more).
        enough_red_cells: a sample's estimate looks at one more of its fields only while the best candidate rests
            on fewer red cells than this (each field costs 6-8 forward passes).
        fit_slack: a field that would be at most this much larger than one input at the working scale is brought
            into one input instead of two or more tiles (its cells then at least 1 / fit_slack of the working size,
            within the zoom the detector was trained with, 0.75-1.3).
    """

    rbc_diameter: float = LEARNT_RBC_DIAMETER
    input_size: int = LEARNT_INPUT_SIZE
    candidates: tuple[float, ...] = tuple(float(f) for f in np.geomspace(0.25, 3.0, 6).round(3))
    rbc_score: float = 0.2
    min_red_cells: int = 3
    refine_steps: int = 2
    tolerance: float = 1.25
    max_weight_cells: int = 20
    enough_red_cells: int = 15
    fit_slack: float = 1.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(float(f) for f in self.candidates))
        if self.rbc_diameter <= 0 or not self.candidates or min(self.candidates) <= 0:
            raise ValueError(f"need a positive red-cell diameter and factors: {self.rbc_diameter}, {self.candidates}")


@dataclass(frozen=True)
class FieldScale:
    """A field's scale and how it was found.

    Attributes:
        microns_per_pixel: µm per native pixel; None when it could not be told (fallback).
        factor: resize factor from native pixels to the working scale (the scale the detector learnt).
        red_cells: how many red cells the estimate rests on (0 for an override or the fallback).
        method: ``"red cells"``, ``"override"``, ``"fallback: no red cells found, letterbox"``,
            ``"letterbox (asked)"`` (the letterbox was asked for: no estimate made) or ``"fallback: no red cells
            found, native pixels"`` (a whole slide, :mod:`leukolens.predict.slide`).
        fields: how many fields the estimate looked at (a sample's scale is the median over its first few fields;
            0 for an override or an asked letterbox).
    """

    microns_per_pixel: float | None
    factor: float
    red_cells: int
    method: str
    fields: int = 1

    def as_dict(self) -> dict:
        return asdict(self)


def scale_from_microns_per_pixel(microns_per_pixel: float, config: ScaleConfig) -> FieldScale:
    """A user-given scale: the factor that makes a 7.5 µm red cell ``config.rbc_diameter`` pixels across."""
    if not microns_per_pixel > 0:
        raise ValueError(f"microns per pixel must be positive, got {microns_per_pixel}")
    native_diameter = RBC_MICRONS / microns_per_pixel
    return FieldScale(float(microns_per_pixel), config.rbc_diameter / native_diameter, 0, OVERRIDE, fields=0)


def letterbox_factor(width: int, height: int, input_size: int) -> float:
    """The factor training used: the longer side to ``input_size``."""
    return input_size / max(width, height)


def fitted_factor(factor: float, width: int, height: int, config: ScaleConfig) -> float:
    """``factor``, or the letterbox factor when the field at ``factor`` is larger than one input by at most
    ``config.fit_slack`` (one input instead of two or more tiles, the cells still at a size the detector learnt)."""
    fit = letterbox_factor(width, height, config.input_size)
    return fit if fit < factor <= fit * config.fit_slack else factor


# ------------------------------------------------------------------------------------------------------ estimate
def resize(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` scaled by ``factor`` (bilinear, as the letterbox does), at least one pixel a side."""
    if factor == 1:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR, reducing_gap=2.0))


def centre_window(image: np.ndarray, factor: float, side: int) -> np.ndarray:
    """The centre of ``image`` that is at most ``side`` pixels a side once scaled by ``factor``, scaled."""
    height, width = image.shape[:2]
    crop_w, crop_h = min(width, math.floor(side / factor)), min(height, math.floor(side / factor))
    x0, y0 = (width - crop_w) // 2, (height - crop_h) // 2
    return resize(image[y0 : y0 + crop_h, x0 : x0 + crop_w], factor)


def whole_boxes(boxes: np.ndarray, width: int, height: int, *, margin: float = 2.0) -> np.ndarray:
    """Which boxes ``[n, 4]`` lie wholly inside a ``width`` x ``height`` image (not cut by its border)."""
    return (
        (boxes[:, 0] > margin)
        & (boxes[:, 1] > margin)
        & (boxes[:, 2] < width - margin)
        & (boxes[:, 3] < height - margin)
    )


def diameters(boxes: np.ndarray) -> np.ndarray:
    """A cell's diameter as the geometric mean of its box's sides ``[n]``."""
    return np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))


def red_cell_diameters(image: np.ndarray, detect: DetectFn, rbc: int, factor: float, config: ScaleConfig) -> np.ndarray:
    """Diameters (in pixels at ``factor``) of the confident red cells wholly inside the centre window at ``factor``."""
    window = centre_window(image, factor, config.input_size)
    boxes, scores, labels = detect(window)
    keep = (labels == rbc) & (scores >= config.rbc_score) & whole_boxes(boxes, window.shape[1], window.shape[0])
    return diameters(np.asarray(boxes, np.float32).reshape(-1, 4)[keep])


def candidate_weight(diameters_found: np.ndarray, config: ScaleConfig) -> float:
    """How much a candidate factor is trusted: red cells found (up to ``max_weight_cells``) times how close their
    median diameter is to the learnt one (a Gaussian in log size, width ``log(tolerance)``)."""
    if len(diameters_found) < config.min_red_cells:
        return 0.0
    off = math.log(float(np.median(diameters_found)) / config.rbc_diameter) / math.log(config.tolerance)
    return min(len(diameters_found), config.max_weight_cells) * math.exp(-0.5 * off * off)


def estimate_scale(image: np.ndarray, detect: DetectFn, **options) -> FieldScale:
    """A field's scale, from its own red cells as the detector sees them (or ``microns_per_pixel`` when given):
    :func:`estimate_sample_scale` of the one field.

    Args:
        image: the field ``uint8 [h, w, 3]`` in native pixels.
        detect: the detector at the image's own pixels (see the module docstring).
        options: the keyword arguments of :func:`estimate_sample_scale` (``classes`` required).
    """
    return estimate_sample_scale([image], detect, **options)


def estimate_sample_scale(
    images: Sequence[np.ndarray],
    detect: DetectFn,
    *,
    classes: Sequence[str],
    config: ScaleConfig | None = None,
    microns_per_pixel: float | None = None,
    red_cell_class: str = "RBC",
) -> FieldScale:
    """The scale of several fields of one sample (one slide on one microscope: one scale), from their red cells
    pooled: at each candidate factor the red cells of the fields looked at count together, so that fields holding
    only a few whole red cells each (a high magnification) still give a scale together, and a field without any
    adds nothing. Fields are taken in order while the best candidate rests on fewer than
    ``config.enough_red_cells`` red cells (``fields`` in the result says how many). One field:
    :func:`estimate_scale`. The fallback's factor is the first field's letterbox.

    Args:
        images: the fields ``uint8 [h, w, 3]`` in native pixels.
        detect: the detector at the image's own pixels (see the module docstring).
        classes: the detector's class names, by index.
        microns_per_pixel: a user-given scale: no estimate is made.
        red_cell_class: the class name of red cells among ``classes``.

    Raises:
        ValueError: no field.
    """
    config = config or ScaleConfig()
    if microns_per_pixel is not None:
        return scale_from_microns_per_pixel(microns_per_pixel, config)
    if not images:
        raise ValueError("a scale estimate needs at least one field")
    height, width = images[0].shape[:2]
    fallback = FieldScale(None, letterbox_factor(width, height, config.input_size), 0, FALLBACK, fields=len(images))
    if red_cell_class not in classes:
        return fallback
    rbc = list(classes).index(red_cell_class)
    found: dict[float, list[np.ndarray]] = {f: [] for f in config.candidates}
    for used, image in enumerate(images, start=1):  # one more field while the red cells are too few
        for f in config.candidates:
            found[f].append(red_cell_diameters(image, detect, rbc, f, config))
        pooled_config = replace(config, max_weight_cells=config.max_weight_cells * used)
        weights = {f: candidate_weight(np.concatenate(d), pooled_config) for f, d in found.items()}
        factor = max(weights, key=weights.get)
        if weights[factor] > 0 and sum(map(len, found[factor])) >= config.enough_red_cells:
            break
    if weights[factor] == 0:
        return fallback
    images = images[:used]

    def pooled(factor: float) -> np.ndarray:
        return np.concatenate([red_cell_diameters(image, detect, rbc, factor, config) for image in images])

    measured = np.concatenate(found[factor])
    for _ in range(config.refine_steps):
        refined = factor * config.rbc_diameter / float(np.median(measured))
        again = pooled(refined)
        if len(again) < config.min_red_cells:
            break
        factor, measured = refined, again
    native_diameter = float(np.median(measured)) / factor
    return FieldScale(
        RBC_MICRONS / native_diameter, config.rbc_diameter / native_diameter, int(len(measured)), RED_CELLS,
        fields=len(images),
    )


# ------------------------------------------------------------------------------------------------------ tiles
@dataclass(frozen=True)
class Tile:
    """A window of the field at the working scale: top-left corner and size in working pixels, and which of its
    sides are inside the field (a box touching one of those may be a cell cut in two)."""

    x: int
    y: int
    width: int
    height: int
    inner_sides: tuple[bool, bool, bool, bool] = field(default=(False, False, False, False))  # left, top, right, bottom


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start positions of windows ``tile`` long covering ``0..length``, evenly spread, neighbours overlapping by at
    least ``overlap``; one window at 0 when ``length <= tile``."""
    if length <= tile:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap {overlap} must be at least 0 and less than the tile {tile}")
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_layout(width: int, height: int, *, tile_size: int, overlap: int) -> list[Tile]:
    """The tiles covering a ``width`` x ``height`` field (working pixels), row by row."""
    xs, ys = axis_starts(width, tile_size, overlap), axis_starts(height, tile_size, overlap)
    tiles = []
    for y in ys:
        for x in xs:
            w, h = min(tile_size, width - x), min(tile_size, height - y)
            tiles.append(Tile(x, y, w, h, (x > 0, y > 0, x + w < width, y + h < height)))
    return tiles


def default_overlap(config: ScaleConfig) -> int:
    """One large white cell at the working scale, in working pixels."""
    return math.ceil(LARGE_WBC_TO_RBC * config.rbc_diameter)


def pad_to_multiple(image: np.ndarray, multiple: int = 32) -> np.ndarray:
    """``image`` padded right and bottom with :data:`PAD_COLOUR` to a multiple of ``multiple`` a side (as the
    letterbox pads in training); the image itself when it already is."""
    height, width = image.shape[:2]
    padded_h, padded_w = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    if (padded_h, padded_w) == (height, width):
        return image
    canvas = np.empty((padded_h, padded_w, 3), np.uint8)
    canvas[:] = PAD_COLOUR
    canvas[:height, :width] = image
    return canvas


def tile_field(
    image: np.ndarray, *, factor: float, tile_size: int, overlap: int
) -> tuple[list[Tile], list[np.ndarray]]:
    """The field at the working scale (``factor``), cut into overlapping tiles of at most ``tile_size`` a side (one
    tile, the whole resized field, when it fits)."""
    working = resize(image, factor)
    tiles = tile_layout(working.shape[1], working.shape[0], tile_size=tile_size, overlap=overlap)
    return tiles, [working[t.y : t.y + t.height, t.x : t.x + t.width] for t in tiles]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``[n, 4]`` with boxes ``[m, 4]`` -> ``[n, m]``."""
    inter = _intersection(a, b)
    area_a, area_b = _area(a), _area(b)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)  # [n, m]


def class_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, *, iou: float) -> np.ndarray:
    """Indices kept by greedy NMS within each class, best score first."""
    order = np.argsort(-scores, kind="stable")
    overlaps = box_iou(boxes[order], boxes[order])  # [n, n]
    same = labels[order][:, None] == labels[order][None, :]
    suppressed = np.zeros(len(order), bool)
    for i in range(len(order)):
        if not suppressed[i]:
            suppressed[i + 1 :] |= (overlaps[i, i + 1 :] > iou) & same[i, i + 1 :]
    return order[~suppressed]


def _spans_cut(
    box: np.ndarray, others: np.ndarray, side: int, line: float, *, covered: float, edge: float
) -> np.ndarray:
    """Which of ``others`` see the cell ``box`` is a cut part of: ``box`` is cut at ``line`` on ``side`` (0 left,
    1 top, 2 right, 3 bottom: the cell goes on past it); such a box reaches ``edge`` past the line, ``edge`` into
    ``box`` from its cut side (a cell that merely ends at the line, beside a cell that begins there, does not), and
    spans ``covered`` of the box's extent along the line."""
    axis = side % 2  # the coordinate the line is at: x for a left or right side, y for a top or bottom one
    along = 1 - axis
    if side < 2:  # the cell goes on towards lower coordinates
        reaches = (others[:, axis] <= line - edge) & (others[:, axis + 2] >= box[axis] + edge)
    else:
        reaches = (others[:, axis + 2] >= line + edge) & (others[:, axis] <= box[axis + 2] - edge)
    span = np.minimum(others[:, along + 2], box[along + 2]) - np.maximum(others[:, along], box[along])
    return reaches & (span.clip(0) >= covered * max(float(box[along + 2] - box[along]), 1e-9))


def merge_tiles(
    found: Sequence[Detections],
    tiles: Sequence[Tile],
    *,
    factor: float,
    iou: float = 0.5,
    edge: float = 16.0,
    covered: float = 0.6,
) -> Detections:
    """One set of detections in native pixels from per-tile detections (each in its tile's pixels).

    A box within ``edge`` pixels of a tile's inner side is a cell cut by the tile; it is dropped when a box of the
    same class not cut by any tile, or larger than it, scoring at least half as high, sees the same cell (the cell
    seen whole, or more of it, in a neighbour): it covers ``covered`` of the cut box's area, or it reaches across
    the cut line into the cut box and spans ``covered`` of the cut box's extent along that line. The second test is
    for the cut box the detector stretched away from the cut (past the cell, into what lies beyond it): its area then
    lies partly outside the whole box, but at the line, where the cell is known to go on, the two boxes hold the same
    pixels, which two white cells lying apart cannot. The rest go through class-wise NMS at ``iou``; coordinates are
    divided by ``factor``.
    ``edge`` is 16 working pixels, not 2: the detector's box for a cell cut by the tile often stops a few pixels
    short of the cut (6 px measured), and such a half box has an IoU just under 0.5 with the whole one, so NMS kept
    both (2 of 12 white cells twice on a slide mosaic, ``tests/test_analyze_slide.py``). A whole cell that close to
    the side is in the neighbour too: whole there, or flagged in both tiles, when both boxes stay for NMS.
    """
    boxes, scores, labels, sides, lines = [], [], [], [], []
    for tile, d in zip(tiles, found):
        b = np.asarray(d.boxes, np.float32).reshape(-1, 4)
        left, top, right, bottom = tile.inner_sides
        sides.append(np.stack([
            left & (b[:, 0] <= edge), top & (b[:, 1] <= edge),
            right & (b[:, 2] >= tile.width - edge), bottom & (b[:, 3] >= tile.height - edge),
        ], axis=1))
        # The tile's sides in field pixels: where a box cut on that side is cut.
        lines.append(np.tile(np.array([tile.x, tile.y, tile.x + tile.width, tile.y + tile.height], np.float32),
                             (len(b), 1)))
        boxes.append(b + np.array([tile.x, tile.y, tile.x, tile.y], np.float32))
        scores.append(np.asarray(d.scores, np.float32))
        labels.append(np.asarray(d.labels, np.int64))
    if not boxes or sum(len(s) for s in scores) == 0:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    boxes, scores, labels, sides, lines = (np.concatenate(v) for v in (boxes, scores, labels, sides, lines))
    cut = sides.any(axis=1)
    keep = np.ones(len(scores), bool)
    areas = _area(boxes)
    # Largest cut boxes first, each yielding only to a box still kept: a box that yielded (to another cell, say)
    # cannot take a smaller cut box of its own cell down with it.
    for i in sorted(np.flatnonzero(cut), key=lambda k: -areas[k]):
        # A cut box yields to a box of its class that sees more of the cell: one no tile cuts, or a larger one (a
        # cell wider than the tiles' overlap is near a tile side in every tile that holds it).
        others = np.flatnonzero((~cut | (areas > areas[i])) & (labels == labels[i]) & keep)
        others = others[(others != i) & (scores[others] >= scores[i] / 2)]
        if len(others):
            share = _intersection(boxes[i : i + 1], boxes[others])[0] / max(float(areas[i]), 1e-9)
            same = share >= covered
            for side in np.flatnonzero(sides[i]):
                same |= _spans_cut(boxes[i], boxes[others], side, float(lines[i, side]), covered=covered, edge=edge)
            keep[i] = not np.any(same)
    index = np.flatnonzero(keep)
    index = index[class_nms(boxes[index], scores[index], labels[index], iou=iou)]
    return Detections((boxes[index] / factor).astype(np.float32), scores[index], labels[index])


def detect_at_scale(
    image: np.ndarray,
    detect: DetectFn,
    *,
    factor: float,
    config: ScaleConfig | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    iou: float = 0.5,
) -> Detections:
    """Detections in native pixels of a field brought to the working scale by ``factor``, cut into tiles of
    ``tile_size`` (default ``config.input_size``) when larger, overlapping by ``overlap`` working pixels (default
    :func:`default_overlap`, at most half a tile)."""
    tiles, images = tiles_at_scale(image, factor=factor, config=config, tile_size=tile_size, overlap=overlap)
    found = [Detections(*(np.asarray(v) for v in detect(im))) for im in images]
    return merge_tiles(found, tiles, factor=factor, iou=iou)


def tiles_at_scale(
    image: np.ndarray,
    *,
    factor: float,
    config: ScaleConfig | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
) -> tuple[list[Tile], list[np.ndarray]]:
    """The tiles :func:`detect_at_scale` detects, for a caller that runs them itself (in batches, with the tiles of
    other fields) and merges them with :func:`merge_tiles`."""
    config = config or ScaleConfig()
    tile_size = tile_size or config.input_size
    overlap = min(default_overlap(config) if overlap is None else overlap, tile_size // 2)
    return tile_field(image, factor=factor, tile_size=tile_size, overlap=overlap)
