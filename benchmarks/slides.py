"""Whole slides: a 20,000 x 20,000 px slide analysed window by window; time, peak memory, white cells found once.

Protocol (fixed before any number was looked at):

- The slide: a tiled BigTIFF (512 px tiles, zlib), written tile by tile from a mosaic of real annotated fields, so
  neither the writer nor the reader ever holds it whole, and where every white cell is known. The fields are BCCD's
  640x480 fields (``../shared/data/bccd``, all 364, each used several times, flipped at random; the bundled six when
  the data set is absent) laid edge to edge on a grid; the white cells are their VOC boxes moved to slide pixels.
- Cells on window borders, on purpose: the analysis' window borders are computed beforehand. The layout depends on
  the slide's scale, so the scale is estimated first (as the analysis estimates it, on a mosaic of the same fields)
  and written into the file's resolution tags, as a scanner writes its own; the analysis reads it back and lays the
  same windows (checked). Every grid slot a window's inner border crosses gets a field (and flip) whose white cell
  straddles that border, whole in its field, so those cells are cut in one window and whole in its neighbour.
- The analysis: ``leukolens analyze slide.tif`` in a fresh process (shipped detector and cell model, default
  options; the scale from the file), its peak resident memory measured by the kernel
  (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``), its wall time.
- Counting: a known white cell (annotated box wholly inside its field, 2 px from the field's edges) is found when a
  white-cell detection's centre lies in its box; found more than once: duplicated. Known cells cut by a field's
  edge (the mosaic cuts them too) count neither way, and detections on them are not extras. Extras: white-cell
  detections whose centre lies in no annotated white cell. Reported for all cells and for those on window borders,
  with the same counts from each field analysed alone (``analyze`` on the fields, at the same scale) as the
  reference the slide's walk should match.

Targets (issue 17): peak memory under 2 GB; every white cell found once: no duplicate on window borders, and no
white cell the fields alone find but the slide misses.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_BCCD = REPO.parent / "shared" / "data" / "bccd"
BUNDLED_BCCD = REPO / "src" / "leukolens" / "samples" / "bccd"
SIDE = 20_000
TILE = 512
FIELD_EDGE = 2.0
"""A white cell whose box comes within this many pixels of its field's edge is cut by the field: not counted."""


@dataclass(frozen=True)
class SourceField:
    """An annotated field: its image and its white cells' boxes (xyxy, field pixels)."""

    image: Path
    width: int
    height: int
    white_cells: tuple[tuple[float, float, float, float], ...]

    def whole(self, box) -> bool:
        x1, y1, x2, y2 = box
        return x1 > FIELD_EDGE and y1 > FIELD_EDGE and x2 < self.width - FIELD_EDGE and y2 < self.height - FIELD_EDGE


@dataclass(frozen=True)
class Placed:
    """A field laid on the slide at (x, y), flipped left-right and/or top-bottom."""

    field: SourceField
    x: int
    y: int
    flip_x: bool = False
    flip_y: bool = False

    def boxes(self) -> list[tuple[tuple[float, float, float, float], bool]]:
        """The field's white cells in slide pixels, each with whether it is whole in its field."""
        out = []
        for box in self.field.white_cells:
            x1, y1, x2, y2 = box
            if self.flip_x:
                x1, x2 = self.field.width - x2, self.field.width - x1
            if self.flip_y:
                y1, y2 = self.field.height - y2, self.field.height - y1
            out.append(((x1 + self.x, y1 + self.y, x2 + self.x, y2 + self.y), self.field.whole(box)))
        return out


def read_fields(root: Path) -> list[SourceField]:
    """The annotated fields of a VOC data set (BCCD) with their white cells."""
    from leukolens.io import read_dataset

    dataset = read_dataset(root, format="voc")
    return [
        SourceField(f.image, f.width, f.height,
                    tuple(tuple(float(v) for v in c.box.pixels_xyxy((f.width, f.height)))
                          for c in f.cells if c.label == "WBC"))
        for f in dataset.fields
    ]


def _straddles(placed_boxes, line: float, axis: int, margin: float) -> bool:
    """Whether a whole white cell crosses ``line`` (slide pixels) along ``axis`` (0: a vertical line, x) with at
    least ``margin`` px on each side."""
    return any(whole and box[axis] + margin < line < box[axis + 2] - margin for box, whole in placed_boxes)


def mosaic(
    fields: Sequence[SourceField], width: int, height: int, *, seed: int = 0,
    border_lines: tuple[Sequence[int], Sequence[int]] = ((), ()), margin: float = 20.0,
) -> list[Placed]:
    """Fields on a grid covering ``width`` x ``height``, in random order and flips; each slot crossed by one of
    ``border_lines`` (x lines, y lines) gets a field whose white cell straddles it (both lines when one can)."""
    rng = random.Random(seed)
    field_w, field_h = fields[0].width, fields[0].height
    pool = [f for f in fields if (f.width, f.height) == (field_w, field_h)]
    x_lines, y_lines = border_lines
    placed = []
    for y in range(0, height, field_h):
        for x in range(0, width, field_w):
            crossing = ([(line, 0) for line in x_lines if x < line < x + field_w]
                        + [(line, 1) for line in y_lines if y < line < y + field_h])
            candidates = [Placed(f, x, y, fx, fy) for f in rng.sample(pool, len(pool))
                          for fx in (False, True) for fy in (False, True)]
            choice = candidates[0]
            if crossing:
                def fits(p: Placed, lines) -> bool:
                    return all(_straddles(p.boxes(), line, axis, margin) for line, axis in lines)

                choice = next((p for p in candidates if fits(p, crossing)),
                              next((p for p in candidates if any(fits(p, [c]) for c in crossing)), choice))
            placed.append(choice)
    return placed


class MosaicRenderer:
    """Any region of the mosaic, rendered from its fields (a few dozen decoded fields cached)."""

    def __init__(self, placed: Sequence[Placed], width: int, height: int, *, cache: int = 96):
        self.placed, self.width, self.height = list(placed), width, height
        self.field_w, self.field_h = placed[0].field.width, placed[0].field.height
        self.columns = -(-width // self.field_w)
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._limit = cache

    def _pixels(self, p: Placed) -> np.ndarray:
        key = (p.field.image, p.flip_x, p.flip_y)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        with Image.open(p.field.image) as image:
            pixels = np.asarray(image.convert("RGB"))
        pixels = pixels[:, ::-1] if p.flip_x else pixels
        pixels = pixels[::-1] if p.flip_y else pixels
        self._cache[key] = np.ascontiguousarray(pixels)
        if len(self._cache) > self._limit:
            self._cache.popitem(last=False)
        return self._cache[key]

    def region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.full((h, w, 3), 255, np.uint8)
        for row in range(max(0, y // self.field_h), min(-(-(y + h) // self.field_h), -(-self.height // self.field_h))):
            for column in range(max(0, x // self.field_w), min(-(-(x + w) // self.field_w), self.columns)):
                p = self.placed[row * self.columns + column]
                pixels = self._pixels(p)
                x0, y0 = max(x, p.x), max(y, p.y)
                x1 = min(x + w, p.x + pixels.shape[1], self.width)
                y1 = min(y + h, p.y + pixels.shape[0], self.height)
                if x1 > x0 and y1 > y0:
                    out[y0 - y : y1 - y, x0 - x : x1 - x] = pixels[y0 - p.y : y1 - p.y, x0 - p.x : x1 - p.x]
        return out

    def tiles(self, tile: int, *, level: int = 0) -> Iterator[np.ndarray]:
        """The tiles of ``level`` (each level halves the last), row by row, as tifffile writes them."""
        step = 2**level
        level_w, level_h = -(-self.width // step), -(-self.height // step)
        for ty in range(0, level_h, tile):
            for tx in range(0, level_w, tile):
                block = self.region(tx * step, ty * step, tile * step, tile * step)
                if step > 1:
                    block = np.asarray(Image.fromarray(block).resize((tile, tile), Image.BILINEAR))
                yield block


def write_slide(
    path: Path, renderer: MosaicRenderer, *, tile: int = TILE, levels: int = 1, compression: str | None = "zlib",
    microns_per_pixel: float | None = None,
) -> Path:
    """The mosaic as a tiled BigTIFF written tile by tile (``levels`` > 1: a pyramid in SubIFDs, each level half the
    last), never whole in memory."""
    import tifffile

    extra = {}
    if microns_per_pixel:
        extra = {"resolution": (1e4 / microns_per_pixel, 1e4 / microns_per_pixel), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level in range(levels):
            step = 2**level
            shape = (-(-renderer.height // step), -(-renderer.width // step), 3)
            options = {"subifds": levels - 1, **extra} if level == 0 else {"subfiletype": 1}
            tif.write(renderer.tiles(tile, level=level), shape=shape, dtype=np.uint8, tile=(tile, tile),
                      compression=compression, photometric="rgb", **options)
    return path


# ------------------------------------------------------------------------------------------------------ counting
def count_white_cells(
    placed: Sequence[Placed], found_boxes: np.ndarray, *, size: tuple[int, int], lines=((), ())
) -> dict:
    """Known white cells found, missed and duplicated by white-cell detections ``[n, 4]`` (slide pixels); extras;
    the same for the cells that straddle one of ``lines`` (x lines, y lines). A cell cut by its field's edge or by
    the slide's is not counted."""
    width, height = size
    known = [(box, whole and box[2] < width - FIELD_EDGE and box[3] < height - FIELD_EDGE)
             for p in placed for box, whole in p.boxes()]
    centres = (found_boxes[:, :2] + found_boxes[:, 2:]) / 2 if len(found_boxes) else np.zeros((0, 2))
    claimed = np.zeros(len(centres), bool)
    tally = {"known": 0, "found": 0, "missed": 0, "duplicated": 0, "border_known": 0, "border_found": 0,
             "border_missed": 0, "border_duplicated": 0}
    for box, whole in known:
        x1, y1, x2, y2 = box
        inside = (centres[:, 0] >= x1) & (centres[:, 0] <= x2) & (centres[:, 1] >= y1) & (centres[:, 1] <= y2)
        claimed |= inside
        if not whole:
            continue
        hits = int(inside.sum())
        on_border = any(x1 < line < x2 for line in lines[0]) or any(y1 < line < y2 for line in lines[1])
        for prefix in ("", "border_") if on_border else ("",):
            tally[prefix + "known"] += 1
            tally[prefix + ("found" if hits else "missed")] += 1
            tally[prefix + "duplicated"] += hits > 1
    tally["extra"] = int((~claimed).sum())
    return tally


def window_lines(width: int, height: int, *, window: int, overlap: int) -> tuple[list[int], list[int]]:
    """Where the windows' inner borders lie (x lines, y lines): a cell crossing one is cut in one window."""
    from leukolens.predict.slide import window_layout

    windows = window_layout(width, height, window=window, overlap=overlap)
    xs = sorted({w.x for w in windows if w.x > 0} | {w.x + w.width for w in windows if w.x + w.width < width})
    ys = sorted({w.y for w in windows if w.y > 0} | {w.y + w.height for w in windows if w.y + w.height < height})
    return xs, ys


def planned_slide(
    path: Path, fields: Sequence[SourceField], width: int, height: int, *, seed: int = 0, levels: int = 1,
    config=None, microns_per_pixel: float | None = None,
) -> tuple[list[Placed], tuple[list[int], list[int]], float]:
    """A mosaic slide written to ``path`` with white cells on the borders of the windows its analysis will use:
    (the fields placed, the border lines, the microns per pixel written in the file).

    The layout depends on the scale, so the scale is fixed first: estimated as :func:`~leukolens.predict.slide.
    slide_scale` estimates it, on a mosaic of the same fields without the border cells, and written into the file's
    resolution tags (as a scanner writes its own), so the analysis reads the same scale back and lays the same
    windows. ``microns_per_pixel``: that scale, not estimated."""
    from leukolens.predict.fields import Detector
    from leukolens.predict.scale import scale_from_microns_per_pixel
    from leukolens.predict.slide import SlideConfig, scale_regions, window_overlap

    config = config or SlideConfig()
    detector = Detector.from_checkpoint()
    mpp = microns_per_pixel
    if mpp is None:
        draft = MosaicRenderer(mosaic(fields, width, height, seed=seed), width, height)
        regions = scale_regions(width, height, count=config.scale_windows, side=config.scale_window)
        scale = detector.sample_scale([Image.fromarray(draft.region(*r)) for r in regions], fields=len(regions))
        if scale.microns_per_pixel is None:
            raise RuntimeError("no red cells found in the mosaic's fields to estimate its scale from")
        mpp = round(scale.microns_per_pixel, 4)
    window, overlap = window_overlap(scale_from_microns_per_pixel(mpp, detector.scale_config), detector, config,
                                     width=width, height=height)
    lines = window_lines(width, height, window=window, overlap=overlap)
    placed = mosaic(fields, width, height, seed=seed, border_lines=lines)
    write_slide(path, MosaicRenderer(placed, width, height), levels=levels, microns_per_pixel=mpp)
    return placed, lines, mpp


# ------------------------------------------------------------------------------------------------------ run
def analyse_in_child(slide: Path, out: Path) -> tuple[dict, float, int]:
    """``leukolens analyze`` on the slide in a fresh process: (its field document, wall seconds, peak RSS bytes)."""
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, "-m", "leukolens", "analyze", str(slide), "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux
    if peak <= before * 1024:
        raise RuntimeError("the child's peak memory was not measured (a larger child ran before it)")
    return json.loads((out / f"{slide.stem}.json").read_text()), seconds, peak


def white_boxes(document: dict) -> np.ndarray:
    boxes = [c["box_xyxy"] for c in document["cells"] if c["detector_class"] not in ("RBC", "Platelets")]
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def fields_alone(placed: Sequence[Placed], scale: dict) -> np.ndarray:
    """White cells the detector finds in each distinct (field, flip) analysed alone at the slide's scale, moved to
    every place that field lies on the slide: the reference for what the walk should find."""
    from leukolens.predict.fields import Detector
    from leukolens.predict.scale import FieldScale

    detector = Detector.from_checkpoint()
    field_scale = FieldScale(scale["microns_per_pixel"], scale["factor"], scale["red_cells"], scale["method"])
    white = [i for i, name in enumerate(detector.classes) if name not in ("RBC", "Platelets")]
    found: dict[tuple, np.ndarray] = {}
    boxes = []
    for p in placed:
        key = (p.field.image, p.flip_x, p.flip_y)
        if key not in found:
            with Image.open(p.field.image) as image:
                pixels = np.asarray(image.convert("RGB"))
            pixels = pixels[:, ::-1] if p.flip_x else pixels
            pixels = pixels[::-1] if p.flip_y else pixels
            d = detector.detect([Image.fromarray(np.ascontiguousarray(pixels))], field_scale=field_scale)[0]
            found[key] = d.boxes[np.isin(d.labels, white)]
        boxes.append(found[key] + np.array([p.x, p.y, p.x, p.y], np.float32))
    return np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)


def run(side: int = SIDE) -> str:
    root = SHARED_BCCD if SHARED_BCCD.is_dir() else BUNDLED_BCCD
    fields = read_fields(root)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        slide = Path(tmp) / "mosaic.tif"
        started = time.perf_counter()
        placed, lines, mpp = planned_slide(slide, fields, side, side, seed=17)
        written = time.perf_counter() - started
        size = slide.stat().st_size
        document, seconds, peak = analyse_in_child(slide, Path(tmp) / "out")
    info = document["slide"]
    source = "all 364 of the data set" if root == SHARED_BCCD else "the six bundled ones"
    used = (info["window"], info["overlap"])
    tally = count_white_cells(placed, white_boxes(document), size=(side, side), lines=lines)
    reference = count_white_cells(placed, fields_alone(placed, document["scale"]), size=(side, side),
                                  lines=lines)
    scale = document["scale"]
    rows = [
        ("white cells known (whole in their field)", tally["known"], reference["known"]),
        ("found", tally["found"], reference["found"]),
        ("missed", tally["missed"], reference["missed"]),
        ("found more than once", tally["duplicated"], reference["duplicated"]),
        ("extra white-cell detections", tally["extra"], reference["extra"]),
        ("on a window border: known", tally["border_known"], reference["border_known"]),
        ("on a window border: found", tally["border_found"], reference["border_found"]),
        ("on a window border: missed", tally["border_missed"], reference["border_missed"]),
        ("on a window border: found more than once", tally["border_duplicated"], reference["border_duplicated"]),
    ]
    table = "\n".join(f"| {name} | {a} | {b} |" for name, a, b in rows)
    planned = window_lines(side, side, window=used[0], overlap=used[1]) == lines
    layout_note = "the borders as planned" if planned else "NOT the planned borders: cells were placed on other lines"
    return f"""## Whole slides

A {side:,} x {side:,} px tiled BigTIFF ({size / 2**20:.0f} MiB, zlib, {TILE} px tiles; written tile by tile in
{written:.0f} s, with the scale estimate) of {len(placed)} BCCD fields ({source}), analysed by
`leukolens analyze mosaic.tif` in a fresh process (shipped detector and cell model). Load average before the run:
{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} (1, 5, 15 min). Protocol: `benchmarks/slides.py`.

- Wall time: {seconds:.0f} s ({side * side / 1e6 / seconds:.1f} megapixels/s), of which walking the windows
  {info['seconds']:.0f} s; {info['windows']} windows of {info['window']} px overlapping by {info['overlap']} px
  ({layout_note}), {scale['tiles']} detector inputs.
- Peak memory (max RSS of the analysing process): **{peak / 2**30:.2f} GiB** (target under 2 GB).
- Scale: {scale['method']} (the file's tag: {mpp} µm/px, estimated from the fields' red cells beforehand),
  factor {scale['factor']}.

| white cells | slide, walked in windows | each field alone, same scale |
|---|---|---|
{table}
"""


if __name__ == "__main__":
    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else SIDE))
