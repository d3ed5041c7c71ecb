"""Find and read the cells of a whole slide, window by window, with the field detector and the cell model.

    >>> with open_slide("slide.tif", skip_damaged=True) as slide:
    ...     scale, note = slide_scale(detector, slide)
    ...     walk = detect_slide(detector, slide, scale)          # boxes in slide pixels, a thumbnail
    ...     crops = slide_cell_crops(reader, slide, walk.detections, white_indices)

A slide is never held whole: it is read in windows (at most :attr:`SlideConfig.window` pixels a side once the
detector has brought them to the working scale, 4096 by default, 50 MB; the side that costs the fewest detector
inputs, :func:`window_overlap`) that overlap by :attr:`SlideConfig.overlap_cells` large white cells at the slide's
scale.

- **Scale, once per slide** (:func:`slide_scale`): a user's microns per pixel, else the file's own, else the red cells
  of a few windows cut from different places of the slide (:meth:`Detector.sample_scale`, pooled as for the first
  fields of a sample). With no red cells to go on the slide is read at its native pixels and the record says so.
- **Detection** (:func:`detect_slide`): each window goes through :meth:`Detector.detect` at the slide's scale (which
  resizes it to the working scale and cuts it into the detector's inputs itself); the next window is read while the
  detector runs. Boxes move to slide pixels.
- **Merge across windows, each cell once**: the windows' overlaps are split down the middle, so each window owns a
  core and the cores tile the slide. A window keeps the boxes whose centre lies in its core grown by
  :attr:`SlideConfig.margin_cells`. A box cut by a window's inner border has its centre within half a cell of that
  border, which is at least half the overlap from the core, so it is dropped; the neighbour that owns the centre
  sees the cell whole, as the overlap is wider than a large cell plus both margins. The few boxes whose centre lies
  near a core's edge (a cell two windows both keep, their centres a pixel apart) go through class-wise NMS
  (:func:`~leukolens.predict.scale.class_nms`) together; every other box can have no twin, so the merge costs
  nothing per box however large the slide. A cell is seen whole by the window that keeps it when it is at most the
  overlap less both margins across: 1.3 large white cells by default.
- **White cells** (:func:`slide_cell_crops`): each cell's crop is cut from a region read around its box, exactly as
  :meth:`CellReader.crop` cuts it from a field, in reading order so that neighbouring cells share decoded tiles.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from leukolens.data.cells import crop_window
from leukolens.io.slide import Slide
from leukolens.models.detector import Detections
from leukolens.predict.cells import CellReader
from leukolens.predict.fields import Detector
from leukolens.predict.results import FieldDetections
from leukolens.predict.scale import (
    FALLBACK,
    LARGE_WBC_TO_RBC,
    NATIVE_FALLBACK,
    FieldScale,
    axis_starts,
    class_nms,
    default_overlap,
    scale_from_microns_per_pixel,
)

THUMBNAIL_SIDE = 2048
"""Longest side of the thumbnail built while walking the slide (px)."""


@dataclass(frozen=True)
class SlideConfig:
    """How a slide is walked.

    Attributes:
        window: the largest side of a window at the working scale, where the detector resizes it to (the memory a
            window takes: 3 bytes a pixel, a few copies); in native pixels when the slide is read at or below its
            native size. The side used is the one under it that costs the fewest detector inputs
            (:func:`window_overlap`).
        overlap_cells: overlap of neighbouring windows in large white cells at the slide's scale (a large white cell:
            the 95th percentile of BCCD's, 2.4 red cells across).
        margin_cells: how far past its core a window keeps a box (large white cells); boxes this close to a core's
            edge are merged across windows by NMS.
        scale_windows: windows, from different places of the slide, the scale is estimated from.
        scale_window: side of those windows in native pixels (the estimate looks at up to 4x the detector's input
            at its smallest candidate factor).
        iou: NMS threshold across windows.
        batch_size: detector inputs run together. Small: ONNX Runtime keeps the memory its largest batch needed,
            and at 512 px a batch of 8 holds about 600 MB more than a batch of 1, for about a fifth less time; 2
            costs about 110 MB (measured on 2 cores).
        cell_batch_size: white cells the cell model reads together, small for the same reason (a batch of 64
            160 px crops held about 440 MB).
    """

    window: int = 4096
    overlap_cells: float = 1.5
    margin_cells: float = 0.1
    scale_windows: int = 5
    scale_window: int = 2048
    iou: float = 0.5
    batch_size: int = 2
    cell_batch_size: int = 16


@dataclass(frozen=True)
class Window:
    """A window of the slide (native pixels) and the core it owns: (x0, y0, x1, y1), the cores tile the slide."""

    x: int
    y: int
    width: int
    height: int
    core: tuple[int, int, int, int]


@dataclass
class SlideWalk:
    """What walking a slide found.

    Attributes:
        detections: every cell once, boxes in slide pixels (``canvas_size`` the slide's), with the scale and the
            detector inputs run in all.
        windows: the windows read.
        overlap: their overlap (native pixels).
        thumbnail: the slide shrunk by ``thumbnail_scale`` ``uint8 [h, w, 3]``.
        thumbnail_scale: thumbnail pixels per slide pixel.
        seconds: time spent walking.
    """

    detections: FieldDetections
    windows: list[Window]
    overlap: int
    thumbnail: np.ndarray
    thumbnail_scale: float
    seconds: float


# ------------------------------------------------------------------------------------------------------ windows
def large_cell(scale: FieldScale, detector: Detector) -> float:
    """A large white cell's diameter in the slide's native pixels."""
    return LARGE_WBC_TO_RBC * detector.scale_config.rbc_diameter / scale.factor


def window_overlap(
    scale: FieldScale, detector: Detector, config: SlideConfig, *, width: int, height: int
) -> tuple[int, int]:
    """(window side, overlap) in native pixels for a ``width`` x ``height`` slide.

    The overlap is ``overlap_cells`` large white cells. The side is chosen so that the slide costs the fewest
    detector inputs: a window at the working scale is cut into the detector's own overlapping inputs, so a window
    just over a whole number of them pays for a row and a column of inputs mostly wasted. Sides tried: those that
    fill ``k`` x ``k`` inputs exactly and stay within ``config.window`` once enlarged to the working scale (native
    pixels at a factor up to 1), and at least three overlaps wide (a core must stay); the fewest windows times
    inputs wins, the smaller window on a tie."""
    overlap = math.ceil(config.overlap_cells * large_cell(scale, detector))
    tile = detector.scale_config.input_size
    step = tile - min(default_overlap(detector.scale_config), tile // 2)  # as tiles_at_scale lays its inputs
    # The detector enlarges a window to the working scale before cutting it: at a 40x scan's factor of ~2.8 a
    # 4096 px native window would hold 11,000 px a side (360 MB) and its copies. Shrinking leaves native pixels.
    limit = math.floor(config.window / max(scale.factor, 1.0))
    best: tuple[int, int] | None = None
    for k in range(1, 1 + math.ceil(limit * scale.factor / step)):
        side = math.floor((k * step + tile - step) / scale.factor)
        if side > limit:
            break
        if side < 3 * overlap:
            continue
        cost = len(axis_starts(width, side, overlap)) * len(axis_starts(height, side, overlap)) * k * k
        if best is None or cost < best[0]:
            best = (cost, side)
    return (best[1] if best else max(limit, 3 * overlap)), overlap


def _cores(starts: list[int], window: int, length: int) -> list[tuple[int, int]]:
    """Each window's share of an axis: from the middle of its overlap with the previous to the middle of its overlap
    with the next."""
    bounds = [0] + [(starts[i + 1] + starts[i] + window) // 2 for i in range(len(starts) - 1)] + [length]
    return list(zip(bounds[:-1], bounds[1:]))


def window_layout(width: int, height: int, *, window: int, overlap: int) -> list[Window]:
    """The windows covering a ``width`` x ``height`` slide, row by row, evenly spread, neighbours overlapping by at
    least ``overlap`` (one window when the slide fits in one)."""
    xs, ys = axis_starts(width, window, overlap), axis_starts(height, window, overlap)
    x_cores, y_cores = _cores(xs, window, width), _cores(ys, window, height)
    return [
        Window(x, y, min(window, width - x), min(window, height - y), (cx[0], cy[0], cx[1], cy[1]))
        for y, cy in zip(ys, y_cores)
        for x, cx in zip(xs, x_cores)
    ]


# ------------------------------------------------------------------------------------------------------ scale
def scale_regions(width: int, height: int, *, count: int, side: int) -> list[tuple[int, int, int, int]]:
    """``count`` regions (x, y, w, h) of at most ``side`` px a side, from the centre outwards to the four quarters and
    then along the diagonals, so that a slide's scale rests on several places of the smear."""
    places = [(0.5, 0.5), (0.25, 0.25), (0.75, 0.75), (0.25, 0.75), (0.75, 0.25), (0.5, 0.25), (0.5, 0.75),
              (0.25, 0.5), (0.75, 0.5)]
    w, h = min(side, width), min(side, height)
    regions = []
    for fx, fy in places[:count]:
        x = min(max(round(fx * width - w / 2), 0), width - w)
        y = min(max(round(fy * height - h / 2), 0), height - h)
        if (x, y, w, h) not in regions:
            regions.append((x, y, w, h))
    return regions


def slide_scale(
    detector: Detector, slide: Slide, *, microns_per_pixel: float | None = None, config: SlideConfig | None = None
) -> tuple[FieldScale, str]:
    """The slide's scale and a note on where it came from: ``microns_per_pixel`` when given, else the file's own
    (:attr:`SlideInfo.microns_per_pixel`), else estimated from the red cells of :attr:`SlideConfig.scale_windows`
    windows; with no red cells the native pixels (:data:`~leukolens.predict.scale.NATIVE_FALLBACK`)."""
    config = config or SlideConfig()
    if microns_per_pixel is not None:
        return (scale_from_microns_per_pixel(microns_per_pixel, detector.scale_config),
                f"scale given: {microns_per_pixel:g} µm per pixel")
    if slide.info.microns_per_pixel is not None:
        mpp = slide.info.microns_per_pixel
        return (scale_from_microns_per_pixel(mpp, detector.scale_config),
                f"scale from the file: {mpp:g} µm per pixel")
    regions = scale_regions(slide.width, slide.height, count=config.scale_windows, side=config.scale_window)
    images = [Image.fromarray(slide.read_region(*region)) for region in regions]
    scale = detector.sample_scale(images, fields=len(images))
    if scale.method == FALLBACK:
        return (FieldScale(None, 1.0, 0, NATIVE_FALLBACK, fields=scale.fields),
                f"no red cells in {len(images)} windows to estimate the scale from: read at native pixels "
                "(give --microns-per-pixel)")
    return scale, (f"scale estimated from {scale.red_cells} red cells in {scale.fields} of {len(images)} windows: "
                   f"{scale.microns_per_pixel:.3g} µm per pixel")


# ------------------------------------------------------------------------------------------------------ detection
def _owned(boxes: np.ndarray, window: Window, margin: float, slide_size: tuple[int, int]):
    """Which boxes (slide pixels) a window keeps: centre in its core grown by ``margin`` on its inner sides; and
    which of those lie within ``2 * margin`` of an inner edge of the core (may have a twin in a neighbour)."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    x0, y0, x1, y1 = window.core
    width, height = slide_size
    # An outer side of a core is the slide's border: nothing lies beyond it, no margin and no twin there.
    left, top, right, bottom = x0 > 0, y0 > 0, x1 < width, y1 < height
    keep = (
        ((not left) | (cx >= x0 - margin)) & ((not top) | (cy >= y0 - margin))
        & ((not right) | (cx < x1 + margin)) & ((not bottom) | (cy < y1 + margin))
    )
    near = (
        (left & (cx < x0 + 2 * margin)) | (top & (cy < y0 + 2 * margin))
        | (right & (cx >= x1 - 2 * margin)) | (bottom & (cy >= y1 - 2 * margin))
    )
    return keep, keep & near


def detect_slide(
    detector: Detector,
    slide: Slide,
    scale: FieldScale,
    *,
    threshold: float | None = None,
    config: SlideConfig | None = None,
    progress: Callable | None = None,
) -> SlideWalk:
    """Every cell of the slide once, in slide pixels (see the module docstring), and a thumbnail made on the way.

    Args:
        scale: the slide's scale (:func:`slide_scale`).
        threshold: detector score threshold (default: the checkpoint's).
        progress: called with (windows done, windows) after each window.
    """
    config = config or SlideConfig()
    started = time.perf_counter()
    side, overlap = window_overlap(scale, detector, config, width=slide.width, height=slide.height)
    windows = window_layout(slide.width, slide.height, window=side, overlap=overlap)
    margin = config.margin_cells * large_cell(scale, detector)
    t = min(1.0, THUMBNAIL_SIDE / max(slide.width, slide.height))
    thumbnail = np.empty((max(1, round(slide.height * t)), max(1, round(slide.width * t)), 3), np.uint8)
    final, near, inputs = [], [], 0
    with ThreadPoolExecutor(max_workers=1) as reading:  # the next window is decoded while the detector runs
        pending = reading.submit(_read_window, slide, windows[0])
        for k, window in enumerate(windows):
            array = pending.result()
            if k + 1 < len(windows):
                pending = reading.submit(_read_window, slide, windows[k + 1])
            _paste(thumbnail, array, window, t)
            found = detector.detect([Image.fromarray(array)], threshold=threshold, batch_size=config.batch_size,
                                    field_scale=scale)[0]
            del array
            inputs += found.tiles
            boxes = found.boxes + np.array([window.x, window.y, window.x, window.y], np.float32)
            keep, twin = _owned(boxes, window, margin, (slide.width, slide.height))
            for part, chosen in ((final, keep & ~twin), (near, twin)):
                part.append(Detections(boxes[chosen], found.scores[chosen], found.labels[chosen]))
            if progress is not None:
                progress(k + 1, len(windows))
    merged = _concat(final)
    edge = _concat(near)
    if len(edge.scores):
        kept = class_nms(edge.boxes, edge.scores, edge.labels, iou=config.iou)
        merged = _concat([merged, Detections(edge.boxes[kept], edge.scores[kept], edge.labels[kept])])
    order = np.lexsort((merged.boxes[:, 0], merged.boxes[:, 1]))  # reading order: top to bottom, left to right
    detections = FieldDetections(
        merged.boxes[order], merged.scores[order], merged.labels[order], canvas_size=(slide.width, slide.height),
        classes=detector.classes, scale=scale, tiles=inputs,
    )
    return SlideWalk(detections, windows, overlap, thumbnail, t, time.perf_counter() - started)


def _read_window(slide: Slide, window: Window) -> np.ndarray:
    return slide.read_region(window.x, window.y, window.width, window.height)


def _paste(thumbnail: np.ndarray, array: np.ndarray, window: Window, t: float) -> None:
    """The window's core, shrunk by ``t``, into the thumbnail (the cores tile the slide: no seams, no overlap)."""
    x0, y0, x1, y1 = window.core
    tx0, ty0, tx1, ty1 = (round(v * t) for v in window.core)
    if tx1 <= tx0 or ty1 <= ty0:
        return
    core = array[y0 - window.y : y1 - window.y, x0 - window.x : x1 - window.x]
    shrunk = Image.fromarray(core).resize((tx1 - tx0, ty1 - ty0), Image.BILINEAR, reducing_gap=2.0)
    thumbnail[ty0:ty1, tx0:tx1] = np.asarray(shrunk)


def _concat(parts: Sequence[Detections]) -> Detections:
    if not parts:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    return Detections(
        np.concatenate([np.asarray(p.boxes, np.float32).reshape(-1, 4) for p in parts]),
        np.concatenate([np.asarray(p.scores, np.float32) for p in parts]),
        np.concatenate([np.asarray(p.labels, np.int64) for p in parts]),
    )


def merge_contained(
    detections: FieldDetections, classes: Sequence[str], *, covered: float = 0.6
) -> FieldDetections:
    """``detections`` less the boxes of ``classes`` that a larger box of their class, scoring at least half as high,
    covers for ``covered`` of their area: the same cell seen twice, one box of it partial (NMS at IoU 0.5 keeps a half
    box beside the whole one). Only for cells that lie apart in a smear, as white cells do: of BCCD's annotated white
    cells sharing a field, none covers more than 0.42 of another."""
    labels = [i for i, name in enumerate(detections.classes) if name in classes]
    chosen = np.flatnonzero(np.isin(detections.labels, labels))
    boxes, scores = detections.boxes[chosen], detections.scores[chosen]
    areas = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    drop = []
    for k in range(len(chosen)):
        larger = (areas > areas[k]) & (detections.labels[chosen] == detections.labels[chosen[k]])
        larger &= scores >= scores[k] / 2
        if not larger.any():
            continue
        w = np.minimum(boxes[larger, 2], boxes[k, 2]) - np.maximum(boxes[larger, 0], boxes[k, 0])
        h = np.minimum(boxes[larger, 3], boxes[k, 3]) - np.maximum(boxes[larger, 1], boxes[k, 1])
        if np.any(w.clip(0) * h.clip(0) >= covered * max(float(areas[k]), 1e-9)):
            drop.append(chosen[k])
    keep = np.setdiff1d(np.arange(len(detections)), drop)
    return replace(detections, boxes=detections.boxes[keep], scores=detections.scores[keep],
                   labels=detections.labels[keep])


# ------------------------------------------------------------------------------------------------------ cells
def slide_cell_crops(
    reader: CellReader, slide: Slide, detections: FieldDetections, indices: Sequence[int]
) -> Iterator[np.ndarray]:
    """The cell model's input crop of each detection in ``indices`` (in that order), each cut from a region read
    around its box: the same pixels :meth:`CellReader.crop` cuts from a field holding the cell."""
    size = (slide.width, slide.height)
    for i in indices:
        box = tuple(float(v) for v in detections.boxes[i])
        x1, y1, x2, y2 = crop_window(box, size, reader.checkpoint.crop.context)
        left, top = max(0, math.floor(x1) - 1), max(0, math.floor(y1) - 1)
        right, bottom = min(size[0], math.ceil(x2) + 1), min(size[1], math.ceil(y2) + 1)
        region = Image.fromarray(slide.read_region(left, top, right - left, bottom - top))
        yield reader.crop(region, (box[0] - left, box[1] - top, box[2] - left, box[3] - top))
