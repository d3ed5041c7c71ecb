"""One patient's slide and its fields rendered under a domain: tiles of cells, red-cell shapes, the annotated
region, and single cells drawn in the middle of a small field (the cell sets).

A :class:`Slide` is one patient's smear, laid out on an endless grid of square tiles (one 100x field each), every
tile drawn from its own seed. A field is a window on the slide around a fixed centre; rendering it under a domain
photographs that window at the domain's magnification. So the same field under two domains shows the same cells
(LLD transferred its 100x labels to the other captures in the same way), and at 40x or 10x the window is wider and
shows the neighbouring tiles too. The annotated region is a rectangle on the slide, chosen once per field on its
100x window, and maps into every capture.
"""

from __future__ import annotations

import functools
import io
import math
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from leukolens.records import LLD_SCHEMA, Box, BoxFormat, Cell, Domain
from leukolens.synth.cells import (
    HAEMOGLOBIN,
    PLASMA,
    SMUDGE,
    Sprite,
    WhiteCell,
    draw_sizes,
    make_white_cell,
    render_platelet,
    render_red_cell,
    render_white_cell,
)
from leukolens.synth.domains import (
    MAGNIFICATIONS,
    DomainSpec,
    add_dust,
    capture,
    stain_absorbance,
    stain_name,
)
from leukolens.synth.patients import Patient
from leukolens.synth.scene import smooth_noise, stamp

SOURCE = "leukolens-synth"
REFERENCE_PX_PER_UM = MAGNIFICATIONS["100x"]
TILE_UM = 640 / REFERENCE_PX_PER_UM
"""Side of a tile: what a 640-pixel 100x field shows (49 um). Cell counts per field are per tile."""
FIELD_SPACING = 32
"""Tiles between the centres of a slide's fields, so that even 10x windows of different fields do not overlap."""
RED_CELL_SPRITES = 32
"""Red cells are drawn from a bank of this many shapes per slide and scale: a red cell is a red cell, and the bank
is most of what makes rendering fast."""
VISIBLE_SHARE = 0.4
"""A white cell cut by the image border is labelled when at least this share of its box is inside the image."""
_SEED_OFFSET = 1 << 20  # tile indices can be negative; seeds cannot


def _key(text: str) -> int:
    """A stable integer for a name (Python's hash() changes between runs)."""
    return zlib.crc32(text.encode())


# ------------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class TileWhites:
    """The white cells drawn for one tile: classes, sizes, centres [n, 2] and radii [n] in micrometres, and how
    many were drawn before those that found no room were dropped."""

    labels: list[str]
    sizes: list[str]
    xy: np.ndarray
    radius: np.ndarray
    drawn: int


@dataclass(frozen=True)
class PlacedWhite:
    x_um: float
    y_um: float
    cell: WhiteCell

    @property
    def radius_um(self) -> float:
        return self.cell.diameter_um / 2


class Slide:
    """One patient's smear, drawn tile by tile on demand (tiles are cached: rendering a field under several domains
    draws its tiles once).

    Args:
        patient: whose blood it is.
        size: the field size in pixels the slide is rendered at; fields are centred on a tile whose central
            area is sure to hold a white cell inside the 100x view.
        label_noise: probability of misread attributes on labels.
    """

    def __init__(self, patient: Patient, *, size: int = 640, label_noise: float = 0.0):
        self.patient = patient
        self.size = size
        self.label_noise = label_noise
        self._whites: dict[tuple[int, int], TileWhites] = {}
        self._resolved: dict[tuple[int, int], list[PlacedWhite]] = {}
        self._reds: dict[tuple[int, int], tuple[np.ndarray, list[tuple[float, float, int]]]] = {}
        self._sprites: dict[tuple[int, float], Sprite] = {}  # white cells drawn for the field being rendered
        self._sprites_field: int | None = None
        self._banks: dict[tuple[float, str], list[tuple[np.ndarray, tuple[float, float, float, float]]]] = {}

    # Layout ---------------------------------------------------------------------------------------------------
    def field_centre(self, field_index: int) -> tuple[float, float]:
        return ((field_index * FIELD_SPACING + 0.5) * TILE_UM, 0.5 * TILE_UM)

    def _density(self, ix: int) -> tuple[float, float]:
        """White- and red-cell density factors of the field a tile belongs to: thin and thick parts of a smear."""
        rng = np.random.default_rng([self.patient.seed, 13, round(ix / FIELD_SPACING) + _SEED_OFFSET])
        return float(rng.uniform(0.6, 1.4)), float(rng.uniform(0.75, 1.2))

    def _raw_whites(self, ix: int, iy: int) -> TileWhites:
        """Where the white (and smudge) cells of a tile are, before overlaps with neighbouring tiles are removed.

        Only classes, sizes and positions: enough to settle overlaps, which needs the tiles around every tile shown.
        The cells' other attributes are drawn later, from another stream, for the tiles actually shown.
        """
        if (ix, iy) in self._whites:
            return self._whites[(ix, iy)]
        p = self.patient
        rng = np.random.default_rng([p.seed, 11, ix + _SEED_OFFSET, iy + _SEED_OFFSET])
        x0, y0 = ix * TILE_UM, iy * TILE_UM
        density = self._density(ix)[0]
        centre_tile = iy == 0 and ix % FIELD_SPACING == 0
        count = int(rng.poisson(p.white_cells * density))
        if centre_tile:
            count = max(count, 1)
        labels = p.draw_labels(rng, count) + [SMUDGE] * int(rng.poisson(p.white_cells * density * p.smudge_cells))
        sizes, diameters = draw_sizes(labels, rng)
        tries = rng.uniform(0, TILE_UM, size=(len(labels), 12, 2)) + (x0, y0)  # [cells, attempts, xy]
        if centre_tile:
            # The field's first white cell sits where every capture of the field will see it.
            reach = 0.3 * min(TILE_UM, self.size / REFERENCE_PX_PER_UM)
            tries[0] = (x0 + TILE_UM / 2, y0 + TILE_UM / 2) + rng.uniform(-reach, reach, size=(12, 2))
        kept: list[int] = []
        xy = np.zeros((len(labels), 2))
        for i in range(len(labels)):
            if kept:
                gaps = np.hypot(*(tries[i][:, None, :] - xy[kept][None, :, :]).transpose(2, 0, 1))  # [attempts, kept]
                free = np.all(gaps > diameters[kept] / 2 + diameters[i] / 2 + 0.5, axis=1)
                if not free.any():
                    continue
                xy[i] = tries[i][int(np.argmax(free))]
            else:
                xy[i] = tries[i][0]
            kept.append(i)
        whites = TileWhites(
            [labels[i] for i in kept], [sizes[i] for i in kept], xy[kept], diameters[kept] / 2, len(labels)
        )
        self._whites[(ix, iy)] = whites
        return whites

    def _raw_reds(self, ix: int, iy: int) -> tuple[np.ndarray, list[tuple[float, float, int]]]:
        """A tile's red cells [n, 5] (x_um, y_um, bank shape, orientation 0..7, dye amount) and platelets
        (x_um, y_um, seed), drawn from their own stream so that tiles only needed for their white cells cost little."""
        if (ix, iy) in self._reds:
            return self._reds[(ix, iy)]
        p = self.patient
        rng = np.random.default_rng([p.seed, 12, ix + _SEED_OFFSET, iy + _SEED_OFFSET])
        x0, y0 = ix * TILE_UM, iy * TILE_UM
        wanted = int(rng.poisson(p.red_cells * self._density(ix)[1]))
        candidates = rng.uniform(0, TILE_UM, size=(3 * wanted, 2)) + (x0, y0)
        # Red cells may overlap, but do not pile up: centres stay over half a diameter apart. Greedy, in order.
        gaps = np.hypot(*(candidates[:, None, :] - candidates[None, :, :]).transpose(2, 0, 1))  # [m, m]
        earlier, later = np.nonzero(np.triu(gaps <= 4.2, k=1))
        too_close: dict[int, list[int]] = {}
        for i, j in zip(later.tolist(), earlier.tolist()):
            too_close.setdefault(i, []).append(j)
        accepted: list[int] = []
        taken: set[int] = set()
        for i in range(len(candidates)):
            if len(accepted) == wanted:
                break
            if not any(j in taken for j in too_close.get(i, ())):
                accepted.append(i)
                taken.add(i)
        xy = candidates[accepted]
        n = len(xy)
        reds = np.concatenate(
            [
                xy,
                np.stack([rng.integers(RED_CELL_SPRITES, size=n), rng.integers(8, size=n)], axis=1),
                rng.uniform(0.85, 1.1, (n, 1)),
            ],
            axis=1,
        ).astype(np.float32)
        platelets = [
            (x0 + rng.uniform(0, TILE_UM), y0 + rng.uniform(0, TILE_UM), int(rng.integers(2**62)))
            for _ in range(int(rng.poisson(p.platelets)))
        ]
        self._reds[(ix, iy)] = (reds, platelets)
        return reds, platelets

    def _priority(self, ix: int, iy: int) -> tuple[int, int, int]:
        return (0 if iy == 0 and ix % FIELD_SPACING == 0 else 1, iy, ix)

    def white_cells(self, ix: int, iy: int) -> list[PlacedWhite]:
        """A tile's white cells, less those overlapping a white cell of a neighbouring tile that comes first (field
        centre tiles first): the same rule whichever window asks, so every capture agrees."""
        if (ix, iy) in self._resolved:
            return self._resolved[(ix, iy)]
        mine = self._priority(ix, iy)
        raw = self._raw_whites(ix, iy)
        others = [
            self._raw_whites(ix + dx, iy + dy)
            for dx in (-1, 0, 1)
            for dy in (-1, 0, 1)
            if (dx or dy) and self._priority(ix + dx, iy + dy) < mine
        ]
        keep = np.ones(len(raw.labels), bool)
        for other in others:
            if len(other.labels) and len(raw.labels):
                gaps = np.hypot(*(raw.xy[:, None, :] - other.xy[None, :, :]).transpose(2, 0, 1))  # [mine, theirs]
                keep &= np.all(gaps > raw.radius[:, None] + other.radius[None, :] + 0.5, axis=1)
        # The remaining attributes, drawn for every raw cell in order (so the stream does not depend on overlaps).
        rng = np.random.default_rng([self.patient.seed, 14, ix + _SEED_OFFSET, iy + _SEED_OFFSET])
        kept = []
        for i, (label, size) in enumerate(zip(raw.labels, raw.sizes)):
            cell = make_white_cell(
                label,
                rng,
                label_noise=self.label_noise,
                attributes={"cell_size": size},
                diameter_um=float(2 * raw.radius[i]),
            )
            if keep[i]:
                kept.append(PlacedWhite(float(raw.xy[i, 0]), float(raw.xy[i, 1]), cell))
        self._resolved[(ix, iy)] = kept
        return kept

    def whites_in(self, x0: float, y0: float, x1: float, y1: float) -> list[PlacedWhite]:
        """White cells of the tiles touching a window (micrometres)."""
        return [
            w
            for ix in range(math.floor(x0 / TILE_UM), math.floor(x1 / TILE_UM) + 1)
            for iy in range(math.floor(y0 / TILE_UM), math.floor(y1 / TILE_UM) + 1)
            for w in self.white_cells(ix, iy)
        ]

    def contents(self, x0: float, y0: float, x1: float, y1: float):
        """White cells, red cells [n, 5] and platelets of the tiles touching a window (micrometres); red cells and
        platelets under a white cell are left out, as a white cell pushes them aside on a real smear."""
        ix0, ix1 = math.floor(x0 / TILE_UM), math.floor(x1 / TILE_UM)
        iy0, iy1 = math.floor(y0 / TILE_UM), math.floor(y1 / TILE_UM)
        whites, reds, platelets = [], [], []
        for ix in range(ix0, ix1 + 1):
            for iy in range(iy0, iy1 + 1):
                whites.extend(self.white_cells(ix, iy))
                # White cells of this tile and its neighbours push red cells and platelets out from under them.
                nearby = [self._raw_whites(ix + dx, iy + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
                centres = np.concatenate([n.xy for n in nearby])  # [whites, 2]
                radii = np.concatenate([n.radius for n in nearby])
                tile_reds, tile_platelets = self._raw_reds(ix, iy)
                gaps = np.hypot(*(tile_reds[:, None, :2] - centres[None, :, :]).transpose(2, 0, 1))  # [reds, whites]
                reds.append(tile_reds[np.all(gaps > radii + 1.5, axis=1)])
                platelets.extend(
                    p
                    for p in tile_platelets
                    if np.all(np.hypot(p[0] - centres[:, 0], p[1] - centres[:, 1]) > radii + 1)
                )
        return whites, np.concatenate(reds) if reds else np.zeros((0, 5), np.float32), platelets

    def annotated_region_um(self, field_index: int, fraction: float) -> tuple[float, float, float, float]:
        """The field's annotated region (x1, y1, x2, y2 in micrometres): ``fraction`` of the 100x view's area,
        placed over one of the white cells that view shows (a region with no cell cannot be written in LLD's
        format, whose region rides on the cell lines)."""
        rng = np.random.default_rng([self.patient.seed, 17, field_index])
        cx, cy = self.field_centre(field_index)
        view = self.size / REFERENCE_PX_PER_UM
        left, top, right, bottom = cx - view / 2, cy - view / 2, cx + view / 2, cy + view / 2
        aspect = math.exp(rng.uniform(-0.4, 0.4))
        width = min(view, math.sqrt(fraction * view * view * aspect))
        height = min(view, fraction * view * view / width)
        whites = self.whites_in(left, top, right, bottom)

        def within(w: PlacedWhite, margin: float) -> bool:
            return left + margin <= w.x_um <= right - margin and top + margin <= w.y_um <= bottom - margin

        # Prefer a cell the 100x view shows whole; in a small view, one whose centre is well inside it.
        inside = [w for w in whites if within(w, w.radius_um)] or [w for w in whites if within(w, 0.2 * view)]
        if inside:
            # The cell's centre stays well inside (15% of the region from its edges), so that it is inside in every
            # capture, after the region and the box are rounded to that capture's pixels.
            target = inside[int(rng.integers(len(inside)))]
            x_low, y_low = max(left, target.x_um - 0.85 * width), max(top, target.y_um - 0.85 * height)
            x1 = rng.uniform(x_low, max(x_low, min(right - width, target.x_um - 0.15 * width)))
            y1 = rng.uniform(y_low, max(y_low, min(bottom - height, target.y_um - 0.15 * height)))
        else:
            x1, y1 = rng.uniform(left, right - width), rng.uniform(top, bottom - height)
        return (x1, y1, x1 + width, y1 + height)

    # Drawing ----------------------------------------------------------------------------------------------------
    def white_sprite(self, cell: WhiteCell, px_per_um: float, field_index: int) -> Sprite:
        """A white cell drawn at a scale, kept while its field is rendered: the same field under several domains at
        one magnification draws each cell once. Only the current field's cells are kept."""
        if field_index != self._sprites_field:
            self._sprites, self._sprites_field = {}, field_index
        key = (cell.seed, px_per_um)
        if key not in self._sprites:
            self._sprites[key] = render_white_cell(cell, px_per_um)
        return self._sprites[key]

    def red_cell_bank(self, px_per_um: float, red_absorbance: np.ndarray, stain: str):
        """The slide's red-cell shapes at a scale, as [h, w, 3] absorbance, each with its disc's box relative to its
        centre. Shape i is drawn from the same seed at every scale, so a red cell keeps its shape across
        magnifications; the bank is cached per scale and stain."""
        key = (px_per_um, stain)
        if key not in self._banks:
            shapes = _red_cell_shapes(self.patient.seed, self.patient.anisocytosis, px_per_um)
            self._banks[key] = [(_colour(sprite, red_absorbance), box) for sprite, box in shapes]
        return self._banks[key]


@functools.lru_cache(maxsize=16)
def _red_cell_shapes(seed: int, anisocytosis: float, px_per_um: float) -> list[tuple[np.ndarray, tuple]]:
    """A slide's red-cell shapes at a scale ([2, h, w] amounts) with each disc's box relative to its centre; cached
    in the process, as each job of :func:`generate_dataset` builds its own :class:`Slide`."""
    shapes = []
    for i in range(RED_CELL_SPRITES):
        rng = np.random.default_rng([seed, 23, i])
        diameter = float(np.clip(rng.normal(7.5, anisocytosis), 5.5, 10.0))
        sprite = render_red_cell(rng, px_per_um, diameter)
        half = sprite.shape[1] / 2
        disc = sprite[0] > 0.2
        rows, cols = np.flatnonzero(disc.any(axis=1)), np.flatnonzero(disc.any(axis=0))
        shapes.append((sprite, (cols[0] - half, rows[0] - half, cols[-1] + 1 - half, rows[-1] + 1 - half)))
    return shapes


# ------------------------------------------------------------------------------------------------------ rendering
@dataclass
class RenderedField:
    """One captured field: the JPEG, the image, and everything on it in pixels.

    Attributes:
        cells: labelled white cells (and smudge cells, class ``None``), all of them, boxes in pixels.
        red_cells, platelets: their boxes in pixels (not part of LLD's labels; kept for measuring realism and for
            detectors of all three blood-cell types).
        region: the annotated region in pixels.
    """

    name: str
    jpeg: bytes
    cells: list[Cell]
    red_cells: list[Box]
    platelets: list[Box]
    region: Box
    domain: Domain
    field_index: int = 0
    extras: dict = field(default_factory=dict)

    @property
    def image(self) -> Image.Image:
        """The image as a reader of the JPEG file sees it."""
        return Image.open(io.BytesIO(self.jpeg)).convert("RGB")


def render_field(slide: Slide, field_index: int, spec: DomainSpec, *, annotated_fraction: float = 0.1) -> RenderedField:
    """Photograph field ``field_index`` of a slide under one domain."""
    p = slide.patient
    stain = spec.stain or p.stain
    size = slide.size
    s = spec.px_per_um
    cx, cy = slide.field_centre(field_index)
    half_view = size / s / 2
    margin = 12.0  # micrometres: cells centred just outside the window still reach into it
    whites, reds, platelets = slide.contents(
        cx - half_view - margin, cy - half_view - margin, cx + half_view + margin, cy + half_view + margin
    )
    absorbance_of = stain_absorbance(stain, np.random.default_rng([p.seed, 19, _key(stain)]))  # [materials, 3]
    rng = np.random.default_rng([p.seed, 29, field_index, _key(_spec_text(spec))])

    def to_px(x_um: float, y_um: float) -> tuple[float, float]:
        return (x_um - cx) * s + size / 2, (y_um - cy) * s + size / 2

    # Plasma: a thin, slightly uneven film.
    film = smooth_noise(rng, (size, size), size / 5)
    film *= 0.35
    film += 1.0
    absorbance = film[..., None] * absorbance_of[PLASMA]  # [h, w, 3]

    bank = slide.red_cell_bank(s, absorbance_of[[HAEMOGLOBIN, PLASMA]], stain)
    red_boxes = []
    seen = (np.abs(reds[:, 0] - cx) < half_view + 6) & (np.abs(reds[:, 1] - cy) < half_view + 6)
    for x_um, y_um, index, orientation, amount in reds[seen]:
        shape, (bx1, by1, bx2, by2) = bank[int(index)]
        orientation = int(orientation)
        sprite = _oriented(shape, orientation)
        # The box follows the sprite: mirrored by the flips, then swapped by the transpose, as in _oriented.
        if orientation & 1:
            by1, by2 = -by2, -by1
        if orientation & 2:
            bx1, bx2 = -bx2, -bx1
        if orientation & 4:
            bx1, by1, bx2, by2 = by1, bx1, by2, bx2
        x, y = to_px(x_um, y_um)
        h, w = sprite.shape[:2]
        stamp(absorbance, sprite * amount, int(round(x - w / 2)), int(round(y - h / 2)))
        box = _visible_box((x + bx1, y + by1, x + bx2, y + by2), size)
        if box is not None:
            red_boxes.append(box)

    platelet_boxes = []
    for x_um, y_um, seed in platelets:
        x, y = to_px(x_um, y_um)
        if not -20 < x < size + 20 or not -20 < y < size + 20:
            continue
        sprite = _colour(render_platelet(np.random.default_rng([seed, 0]), s), absorbance_of)
        h, w = sprite.shape[:2]
        stamp(absorbance, sprite, int(round(x - w / 2)), int(round(y - h / 2)))
        box = _visible_box((x - w / 2.6, y - h / 2.6, x + w / 2.6, y + h / 2.6), size)
        if box is not None:
            platelet_boxes.append(box)

    cells = []
    for white in whites:
        x, y = to_px(white.x_um, white.y_um)
        reach = white.radius_um * s * 1.2
        if x + reach < 0 or y + reach < 0 or x - reach > size or y - reach > size:
            continue
        sprite = slide.white_sprite(white.cell, s, field_index)
        h, w = sprite.materials.shape[1:]
        x0, y0 = int(round(x - w / 2)), int(round(y - h / 2))
        stamp(absorbance, _colour(sprite.materials, absorbance_of), x0, y0)
        bx1, by1, bx2, by2 = sprite.body
        box = _visible_box((x0 + bx1, y0 + by1, x0 + bx2, y0 + by2), size)
        if box is not None:
            cells.append(Cell(box, white.cell.label, LLD_SCHEMA.complete(white.cell.annotated)))

    add_dust(absorbance, spec, np.random.default_rng([_key(spec.microscope), 31]))
    jpeg = capture(absorbance, spec, rng)

    x1, y1, x2, y2 = slide.annotated_region_um(field_index, annotated_fraction)
    rx1, ry1 = to_px(x1, y1)
    rx2, ry2 = to_px(x2, y2)
    rx1, ry1 = max(0, math.floor(rx1)), max(0, math.floor(ry1))
    rx2, ry2 = min(size, max(rx1 + 1, math.ceil(rx2))), min(size, max(ry1 + 1, math.ceil(ry2)))
    region = Box((rx1, ry1, rx2, ry2), BoxFormat.XYXY, normalized=False)
    domain = Domain(
        source=SOURCE,
        microscope=spec.microscope,
        camera=spec.camera,
        magnification=spec.magnification,
        stain=stain,
        sample_id=p.sample_id,
        diagnosis=p.diagnosis,
    )
    name = f"{p.sample_id}_f{field_index:02d}_{spec.slug(stain)}"
    return RenderedField(name, jpeg, cells, red_boxes, platelet_boxes, region, domain, field_index)


def _colour(materials: np.ndarray, absorbance_of: np.ndarray) -> np.ndarray:
    """[materials, h, w] amounts -> [h, w, 3] absorbance, as a few multiply-adds of whole planes. (A matrix
    product would go to BLAS, whose threads fight over two cores with worker processes and other jobs: the same
    small product then takes anywhere from 0.4 to 5 ms.)"""
    used = [k for k in range(len(materials)) if absorbance_of[k].any()]
    planes = []
    for channel in range(3):
        plane = materials[used[0]] * absorbance_of[used[0], channel]
        for k in used[1:]:
            plane += materials[k] * absorbance_of[k, channel]
        planes.append(plane)
    return np.stack(planes, axis=-1)


def _oriented(sprite: np.ndarray, orientation: int) -> np.ndarray:
    """One of the eight flips and quarter turns of a square sprite (views, no copies)."""
    if orientation & 1:
        sprite = sprite[::-1]
    if orientation & 2:
        sprite = sprite[:, ::-1]
    if orientation & 4:
        sprite = sprite.transpose(1, 0, 2)
    return sprite


def _visible_box(xyxy: tuple[float, float, float, float], size: int) -> Box | None:
    """The part of a box inside the image, or None when less than :data:`VISIBLE_SHARE` of it is."""
    x1, y1, x2, y2 = xyxy
    cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(size)), min(y2, float(size))
    if cx2 <= cx1 or cy2 <= cy1:
        return None
    if (cx2 - cx1) * (cy2 - cy1) < VISIBLE_SHARE * (x2 - x1) * (y2 - y1):
        return None
    return Box((round(cx1, 2), round(cy1, 2), round(cx2, 2), round(cy2, 2)), BoxFormat.XYXY, normalized=False)


def render_cell(
    label: str,
    *,
    seed: int = 0,
    stain: str = "Wright",
    domain: DomainSpec | None = None,
    size: int = 256,
    attributes: dict[str, str] | None = None,
) -> tuple[Image.Image, Cell]:
    """One white cell of class ``label`` in the middle of a small field with a few red cells: for galleries, and to
    see what an attribute looks like.

    Args:
        attributes: attribute values to force (the others are drawn from the class's probabilities).

    Raises:
        LeukolensError: unknown class, stain or attribute value.
    """
    spec = domain or DomainSpec()
    stain = stain_name(spec.stain or stain)
    s = spec.px_per_um
    rng = np.random.default_rng([seed, 37])
    cell = make_white_cell(label, rng, attributes=attributes)
    absorbance_of = stain_absorbance(stain, np.random.default_rng([seed, 19]))
    absorbance = np.ones((size, size, 3), np.float32) * absorbance_of[PLASMA]
    for _ in range(int(rng.integers(2, 7))):  # red cells around, not under, the white cell
        angle = rng.uniform(0, 2 * np.pi)
        reach = (cell.diameter_um / 2 + rng.uniform(4.5, 9)) * s
        x, y = size / 2 + reach * np.cos(angle), size / 2 + reach * np.sin(angle)
        sprite = _colour(
            render_red_cell(rng, s, float(rng.normal(7.5, 0.4))), absorbance_of[[HAEMOGLOBIN, PLASMA]]
        ).astype(np.float32)
        stamp(absorbance, sprite, int(round(x - sprite.shape[1] / 2)), int(round(y - sprite.shape[0] / 2)))
    sprite = render_white_cell(cell, s)
    h, w = sprite.materials.shape[1:]
    x0, y0 = int(round(size / 2 - w / 2)), int(round(size / 2 - h / 2))
    stamp(absorbance, _colour(sprite.materials, absorbance_of), x0, y0)
    bx1, by1, bx2, by2 = sprite.body
    box = _visible_box((x0 + bx1, y0 + by1, x0 + bx2, y0 + by2), size) or Box((0, 0, size, size))
    jpeg = capture(absorbance, spec, rng)
    return Image.open(io.BytesIO(jpeg)).convert("RGB"), Cell(box, label, LLD_SCHEMA.complete(cell.annotated))


# ------------------------------------------------------------------------------------------------------ data sets


def _spec_text(spec: DomainSpec) -> str:
    return ":".join(p for p in (spec.microscope, spec.camera, spec.magnification, spec.stain) if p)
