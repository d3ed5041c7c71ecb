"""Synthetic smears end to end: patients, slides, fields rendered under domains, and their LLD and COCO exports.

A :class:`Slide` is one patient's smear, laid out on an endless grid of square tiles (one 100x field each), every
tile drawn from its own seed. A field is a window on the slide around a fixed centre; rendering it under a domain
photographs that window at the domain's magnification. So the same field under two domains shows the same cells
(LLD transferred its 100x labels to the other captures in the same way), and at 40x or 10x the window is wider and
shows the neighbouring tiles too. The annotated region is a rectangle on the slide, chosen once per field on its
100x window, and maps into every capture.

Everything is drawn from ``numpy.random.Generator`` seeded by (config seed, patient, tile or field, domain), so one
seed gives the same files byte for byte, whatever the number of worker processes.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from leukolens.io import write_dataset
from leukolens.io.common import LeukolensError, WriteReport, atomic_write_bytes, atomic_write_text
from leukolens.records import LLD_CLASSES, LLD_SCHEMA, Box, BoxFormat, Cell, Dataset, Domain, Field
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
    DEFAULT_DOMAIN,
    MAGNIFICATIONS,
    STAINS,
    DomainSpec,
    add_dust,
    capture,
    parse_domains,
    stain_absorbance,
    stain_name,
)
from leukolens.synth.patients import DIAGNOSES, Patient, diagnosis_name, make_patient
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
class SynthConfig:
    """What to generate.

    Attributes:
        patients: number of patients (slides); they cycle through ``diagnoses``.
        fields_per_patient: fields per slide; each is rendered under every domain.
        size: width and height of a field image in pixels.
        seed: everything is drawn from it.
        annotated_fraction: share of a 100x field's area inside its annotated region, in (0, 1].
        diagnoses: names from :data:`~leukolens.synth.patients.DIAGNOSES`.
        domains: ``MICROSCOPE:CAMERA:MAGNIFICATION[:STAIN]`` texts, or ``lld`` for LLD's twelve.
        stains: the stains slides are drawn with (one per patient, at random).
        label_noise: probability that an annotator misreads an attribute, in [0, 1).
    """

    patients: int = 5
    fields_per_patient: int = 4
    size: int = 640
    seed: int = 0
    annotated_fraction: float = 0.1
    diagnoses: tuple[str, ...] = tuple(DIAGNOSES)
    domains: tuple[str, ...] = (DEFAULT_DOMAIN,)
    stains: tuple[str, ...] = tuple(STAINS)
    label_noise: float = 0.0

    def __post_init__(self) -> None:
        for name in ("patients", "fields_per_patient", "size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise LeukolensError(f"{name} must be a whole number, got {value!r}")
        if self.patients < 1:
            raise LeukolensError(f"patients must be at least 1, got {self.patients}")
        if self.fields_per_patient < 1:
            raise LeukolensError(f"fields per patient must be at least 1, got {self.fields_per_patient}")
        if not 64 <= self.size <= 4096:
            raise LeukolensError(f"size must be between 64 and 4096 pixels, got {self.size}")
        if self.seed < 0:
            raise LeukolensError(f"seed must not be negative, got {self.seed}")
        if not (isinstance(self.annotated_fraction, int | float) and 0 < self.annotated_fraction <= 1):
            raise LeukolensError(
                f"annotated fraction must be in (0, 1] (a share of the field's area), got {self.annotated_fraction!r}"
            )
        if not 0 <= self.label_noise < 1:
            raise LeukolensError(f"label noise must be in [0, 1), got {self.label_noise!r}")
        if not self.diagnoses:
            raise LeukolensError(f"name at least one diagnosis ({', '.join(DIAGNOSES)})")
        if not self.stains:
            raise LeukolensError(f"name at least one stain ({', '.join(STAINS)})")
        object.__setattr__(self, "diagnoses", tuple(diagnosis_name(d) for d in self.diagnoses))
        object.__setattr__(self, "stains", tuple(stain_name(s) for s in self.stains))
        specs = parse_domains(self.domains)
        if len({(s.microscope, s.camera, s.magnification, s.stain) for s in specs}) != len(specs):
            raise LeukolensError("a domain is named twice")
        object.__setattr__(self, "domains", tuple(_spec_text(s) for s in specs))

    @property
    def domain_specs(self) -> tuple[DomainSpec, ...]:
        return parse_domains(self.domains)


def _spec_text(spec: DomainSpec) -> str:
    return ":".join(p for p in (spec.microscope, spec.camera, spec.magnification, spec.stain) if p)


def make_patients(config: SynthConfig) -> list[Patient]:
    """The config's patients: diagnoses in turn (5 patients give all five), stains drawn per patient."""
    patients = []
    for i in range(config.patients):
        rng = np.random.default_rng([config.seed, 3, i])
        patients.append(
            make_patient(
                config.diagnoses[i % len(config.diagnoses)],
                sample_id=f"P{i + 1:03d}",
                seed=int(rng.integers(2**62)),
                stain=config.stains[int(rng.integers(len(config.stains)))],
            )
        )
    return patients


# ------------------------------------------------------------------------------------------------------ slides
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
def _render_fields_of(config: SynthConfig, patient: Patient, field_index: int, images: Path) -> list[Field]:
    """Render one field of one patient under every domain, write the JPEGs, return the records."""
    slide = Slide(patient, size=config.size, label_noise=config.label_noise)
    fields = []
    for spec in config.domain_specs:
        rendered = render_field(slide, field_index, spec, annotated_fraction=config.annotated_fraction)
        path = images / f"{rendered.name}.jpg"
        atomic_write_bytes(path, rendered.jpeg)
        fields.append(
            Field(path, config.size, config.size, rendered.cells, [rendered.region], rendered.domain, split=None)
        )
    return fields


def _job(arguments) -> list[Field]:
    config, patient, field_index, images = arguments
    return _render_fields_of(config, patient, field_index, images)


def generate_dataset(
    config: SynthConfig, images: str | Path, *, workers: int = 1, progress: Callable | None = None
) -> Dataset:
    """Render every field of every patient under every domain into ``images`` as JPEG files.

    Returns:
        The full data set: all white cells of every field, and each field's annotated region in ``regions``
        (:func:`sparse_dataset` keeps the cells inside; :func:`full_dataset` drops the regions).
    """
    if workers < 1:
        raise LeukolensError(f"workers must be at least 1, got {workers}")
    images = Path(images)
    images.mkdir(parents=True, exist_ok=True)
    patients = make_patients(config)
    jobs = [(config, p, k, images) for p in patients for k in range(config.fields_per_patient)]
    if workers == 1:
        results = map(_job, jobs)
        fields = [f for batch in (progress(results, total=len(jobs)) if progress else results) for f in batch]
    else:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.imap(_job, jobs)
            fields = [f for batch in (progress(results, total=len(jobs)) if progress else results) for f in batch]
    extras = {"synth": {"config": config, "patients": patients}}
    return Dataset(fields, LLD_CLASSES, LLD_SCHEMA, name=SOURCE, extras=extras)


def sparse_dataset(dataset: Dataset) -> Dataset:
    """Only the cells whose box centre lies in their field's annotated region (LLD's sparse labels)."""
    fields = []
    for f in dataset.fields:
        if not f.regions:
            fields.append(f)
            continue
        region = f.regions[0]
        inside = []
        for c in f.cells:
            x1, y1, x2, y2 = c.box.pixels_xyxy(f.size)
            if region.contains_point((x1 + x2) / 2, (y1 + y2) / 2):
                inside.append(c)
        fields.append(Field(f.image, f.width, f.height, inside, list(f.regions), f.domain, f.split))
    return Dataset(fields, dataset.classes, dataset.schema, name=dataset.name, extras=dataset.extras)


def full_dataset(dataset: Dataset) -> Dataset:
    """Every cell of every field, with no annotated region: each field is fully annotated."""
    fields = [Field(f.image, f.width, f.height, list(f.cells), [], f.domain, f.split) for f in dataset.fields]
    return Dataset(fields, dataset.classes, dataset.schema, name=dataset.name, extras=dataset.extras)


@dataclass
class SynthReport:
    """What :func:`write_synthetic` made."""

    dataset: Dataset
    full: WriteReport
    sparse: WriteReport
    seconds: float

    def summary(self) -> str:
        fields = self.dataset.fields
        config: SynthConfig = self.dataset.extras["synth"]["config"]
        by_diagnosis: dict[str, int] = {}
        for f in fields:
            by_diagnosis[f.domain.diagnosis] = by_diagnosis.get(f.domain.diagnosis, 0) + 1
        cells = sum(len(f.cells) for f in fields)
        lines = [
            f"rendered {len(fields):,} fields ({config.patients} patients x {config.fields_per_patient} fields x "
            f"{len(config.domains)} domains) of {config.size}x{config.size} in {self.seconds:.1f} s "
            f"({len(fields) / max(self.seconds, 1e-9):.1f} fields/s), {cells:,} white cells",
            "fields per diagnosis: " + ", ".join(f"{d} {n}" for d, n in by_diagnosis.items()),
            "full (all cells, COCO):   " + self.full.summary(),
            "sparse (annotated region): " + self.sparse.summary(),
            f"check them with: leukolens data validate {self.sparse.path} ; leukolens data validate {self.full.path}",
        ]
        return "\n".join(lines)


def write_synthetic(
    config: SynthConfig,
    out: str | Path,
    *,
    sparse_format: str = "lld",
    images: str = "copy",
    workers: int = 1,
    progress: Callable | None = None,
) -> SynthReport:
    """Generate a synthetic data set and write it: ``out/full`` (COCO, every cell, the images) and ``out/sparse``
    (``sparse_format``, only the cells in each field's annotated region, with the region), plus
    ``out/patients.csv`` (each patient's diagnosis, variant, stain and class mix).

    Args:
        sparse_format: ``lld`` (16-column files) or ``coco`` (annotated regions in the JSON).
        images: how the sparse export gets the images: ``copy`` (a self-contained folder) or ``link`` (symlinks).

    Raises:
        LeukolensError: ``out`` is not empty, or a bad option.
    """
    out = Path(out)
    if sparse_format not in ("lld", "coco"):
        raise LeukolensError(f"unknown sparse export format {sparse_format!r}: use lld or coco")
    if images not in ("copy", "link"):
        raise LeukolensError(f"unknown image mode {images!r}: use copy or link")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LeukolensError(f"{out} exists and is not an empty folder; choose a new output folder")
    start = time.perf_counter()
    dataset = generate_dataset(config, out / "full" / "images", workers=workers, progress=progress)
    seconds = time.perf_counter() - start
    full_report = write_dataset(full_dataset(dataset), out / "full", format="coco", images="none")
    sparse_report = write_dataset(sparse_dataset(dataset), out / "sparse", format=sparse_format, images=images)
    _write_patients_csv(out / "patients.csv", dataset.extras["synth"]["patients"])
    return SynthReport(dataset, full_report, sparse_report, seconds)


def _write_patients_csv(path: Path, patients: list[Patient]) -> None:
    classes = [c for c in LLD_CLASSES.names if c != SMUDGE]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["sample_id", "diagnosis", "variant", "stain", "smudge_per_white_cell", *classes])
    for p in patients:
        shares = [f"{p.mix.get(c, 0.0):.4f}" for c in classes]
        writer.writerow([p.sample_id, p.diagnosis, p.variant, p.stain, f"{p.smudge_cells:.4f}", *shares])
    atomic_write_text(path, text.getvalue())


__all__ = [
    "RenderedField",
    "Slide",
    "SynthConfig",
    "SynthReport",
    "full_dataset",
    "generate_dataset",
    "make_patients",
    "render_cell",
    "render_field",
    "sparse_dataset",
    "write_synthetic",
]
