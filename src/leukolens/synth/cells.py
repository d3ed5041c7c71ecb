"""Cell types, their attribute probabilities, and drawing one cell from its attributes.

Every white cell is drawn *from its LLD attributes*: the class sets the probabilities (:data:`CELL_TYPES`), each
attribute is drawn from them, and the drawing follows the drawn values: cell size sets the diameter, cytoplasm
sets the nuclear-to-cytoplasmic ratio, chromatin the nuclear texture, nuclear shape the outline of the nucleus, and
so on. The attribute on the label is therefore visible in the pixels.

What is drawn is an amount of each stained material per pixel (:data:`MATERIALS`), not a colour: the stain
(``leukolens.synth.domains``) turns materials into colours later, so one slide can be shown in several stains.

Where an attribute cannot be judged on a cell it is :data:`~leukolens.records.NOT_APPLICABLE`: on basophils the
dark granules hide the chromatin, the nucleolus and the cytoplasmic colour, on eosinophils the orange granules hide
the cytoplasmic colour, and smudge cells (class ``None``, LLD's class for what is not a countable white cell) have
no attribute but their size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leukolens.io.common import LeukolensError
from leukolens.records import LLD_SCHEMA, NOT_APPLICABLE
from leukolens.synth.scene import (
    blob_kernel,
    ellipse_distance,
    pixel_grid,
    polar_grid,
    sample_in_disc,
    segment_distance,
    smooth_noise,
    soft_inside,
    stamp_points,
    wobbly_distance,
)

MATERIALS = ("plasma", "haemoglobin", "chromatin", "basophilic", "acidophilic", "eosinophilic", "azurophilic")
"""What a smear is made of, as seen by a Romanowsky stain: plasma, red-cell haemoglobin, nuclear chromatin, RNA-rich
(blue) cytoplasm, acidophilic (pink-lilac) cytoplasm, eosinophil granules, and azurophilic material (purple
granules of basophils, promyelocytes, platelets, Auer rods)."""
PLASMA, HAEMOGLOBIN, CHROMATIN, BASOPHILIC, ACIDOPHILIC, EOSINOPHILIC, AZUROPHILIC = range(len(MATERIALS))

SMUDGE = "None"
"""Smudge cells (crushed lymphocytes, typical of CLL) carry LLD's class 0, ``None``: not a countable white cell."""

SIZE_DIAMETER_UM = {"small": (7.5, 10.5), "medium": (12.0, 16.0), "large": (16.0, 22.0)}
"""Cell diameter drawn for each cell-size value, in micrometres (a red cell is about 7.5)."""

SECOND_VALUES = {a.name: a.values[1] for a in LLD_SCHEMA.attributes[1:]}
"""For a2..a7, the value whose probability the tables give (coarse, irregular, prominent, abundant, moderate,
prominent); the first value has the rest."""


@dataclass(frozen=True)
class CellType:
    """How one class looks: attribute probabilities and the features drawn beside the attributes.

    Attributes:
        size: probabilities of small, medium, large.
        odds: for each of a2..a7, the probability of its second value (see :data:`SECOND_VALUES`), or None when
            the attribute is not applicable to the class.
        irregular_shapes: nuclear outlines drawn when the nuclear shape is irregular, picked uniformly.
        cytoplasm: the cytoplasm's make-up: ``blue`` (agranular, RNA-rich), ``granulocytic`` (pink-lilac),
            ``monocytic`` (grey-blue).
        granules: None, ``neutrophilic``, ``eosinophilic``, ``basophilic``, ``specific`` (myelocytes),
            ``azurophilic-few`` or ``azurophilic-heavy``.
        auer_rods: probability that a cell shows Auer rods (several, in a bundle, when ``auer_bundle``).
        chromatin_density: how much dye the nucleus takes up; mature lymphocytes are the darkest.
    """

    size: tuple[float, float, float]
    odds: dict[str, float | None]
    irregular_shapes: tuple[str, ...]
    cytoplasm: str
    granules: str | None = None
    auer_rods: float = 0.0
    auer_bundle: bool = False
    chromatin_density: float = 1.0


def _odds(chromatin, shape, nucleolus, cytoplasm, basophilia, vacuoles) -> dict[str, float | None]:
    names = [a.name for a in LLD_SCHEMA.attributes[1:]]
    return dict(zip(names, (chromatin, shape, nucleolus, cytoplasm, basophilia, vacuoles)))


# Probabilities follow textbook descriptions (blasts: fine chromatin, nucleoli, scanty basophilic cytoplasm;
# mature cells: condensed chromatin, no nucleoli), with a minority of cells against the rule, as real labels have.
CELL_TYPES: dict[str, CellType] = {
    "Myeloblast": CellType(
        (0.05, 0.45, 0.50),
        _odds(0.10, 0.25, 0.80, 0.30, 0.70, 0.10),
        ("bumpy", "indented"),
        "blue",
        granules="azurophilic-few",
        auer_rods=0.15,
        chromatin_density=0.8,
    ),
    "Lymphoblast": CellType(
        (0.45, 0.45, 0.10),
        _odds(0.20, 0.30, 0.45, 0.05, 0.60, 0.15),
        ("cleft", "bumpy"),
        "blue",
        chromatin_density=0.9,
    ),
    "Neutrophil": CellType(
        (0.05, 0.85, 0.10),
        _odds(0.97, 0.97, 0.0, 0.95, 0.05, 0.05),
        ("lobed", "lobed", "lobed", "band"),
        "granulocytic",
        granules="neutrophilic",
    ),
    "Atypical lymphocyte": CellType(
        (0.05, 0.45, 0.50),
        _odds(0.40, 0.40, 0.15, 0.80, 0.80, 0.10),
        ("indented", "bumpy"),
        "blue",
    ),
    "Promonocyte": CellType(
        (0.0, 0.30, 0.70),
        _odds(0.15, 0.85, 0.40, 0.70, 0.60, 0.30),
        ("folded", "indented"),
        "monocytic",
        granules="azurophilic-few",
        chromatin_density=0.8,
    ),
    "Monoblast": CellType(
        (0.0, 0.20, 0.80),
        _odds(0.05, 0.25, 0.85, 0.75, 0.75, 0.30),
        ("bumpy", "indented"),
        "blue",
        chromatin_density=0.75,
    ),
    "Lymphocyte": CellType(
        (0.80, 0.18, 0.02),
        _odds(0.95, 0.05, 0.02, 0.10, 0.25, 0.02),
        ("indented",),
        "blue",
        chromatin_density=1.3,
    ),
    "Myelocyte": CellType(
        (0.0, 0.60, 0.40),
        _odds(0.60, 0.15, 0.05, 0.90, 0.30, 0.05),
        ("indented",),
        "granulocytic",
        granules="specific",
    ),
    "Abnormal promyelocyte": CellType(
        (0.0, 0.40, 0.60),
        _odds(0.20, 0.80, 0.40, 0.80, 0.30, 0.10),
        ("bilobed", "kidney"),
        "granulocytic",
        granules="azurophilic-heavy",
        auer_rods=0.30,
        auer_bundle=True,
        chromatin_density=0.9,
    ),
    "Monocyte": CellType(
        (0.0, 0.30, 0.70),
        _odds(0.30, 0.90, 0.05, 0.95, 0.40, 0.40),
        ("kidney", "folded", "indented"),
        "monocytic",
        granules="azurophilic-few",
    ),
    "Metamyelocyte": CellType(
        (0.05, 0.80, 0.15),
        _odds(0.80, 0.95, 0.02, 0.90, 0.10, 0.03),
        ("kidney",),
        "granulocytic",
        granules="neutrophilic",
    ),
    "Eosinophil": CellType(
        (0.0, 0.80, 0.20),
        _odds(0.95, 0.95, 0.0, 0.98, None, 0.03),
        ("bilobed",),
        "granulocytic",
        granules="eosinophilic",
    ),
    "Basophil": CellType(
        (0.10, 0.85, 0.05),
        _odds(None, 0.80, None, 0.80, None, 0.05),
        ("bilobed", "kidney"),
        "granulocytic",
        granules="basophilic",
    ),
    SMUDGE: CellType(
        (0.25, 0.65, 0.10),
        _odds(None, None, None, None, None, None),
        (),
        "blue",
    ),
}
"""Class name -> how cells of that class look. Keys are LLD's 13 white-cell classes and ``None`` (smudge cells)."""


_VALUES = {a.name: a.values for a in LLD_SCHEMA.attributes}


def draw_attributes(label: str, rng: np.random.Generator) -> dict[str, str]:
    """LLD attributes of one cell of class ``label``, drawn from :data:`CELL_TYPES`."""
    kind = CELL_TYPES[label]
    draws = rng.random(len(_VALUES))  # one call for all seven: drawing thousands of cells stays cheap
    small, medium, _ = kind.size
    size = "small" if draws[0] < small else "medium" if draws[0] < small + medium else "large"
    attributes = {"cell_size": size}
    for draw, (name, probability) in zip(draws[1:], kind.odds.items()):
        values = _VALUES[name]
        attributes[name] = NOT_APPLICABLE if probability is None else values[1] if draw < probability else values[0]
    return attributes


def annotate(attributes: dict[str, str], noise: float, rng: np.random.Generator) -> dict[str, str]:
    """What an annotator writes for the drawn attributes: each applicable value is misread with probability ``noise``.

    A misread cell size moves to a neighbouring size; a misread a2..a7 value takes the other value.
    """
    if noise <= 0:
        return dict(attributes)
    annotated = {}
    for name, value in attributes.items():
        values = _VALUES[name]
        if value == NOT_APPLICABLE or rng.random() >= noise:
            annotated[name] = value
        elif name == "cell_size":
            i = values.index(value)
            annotated[name] = values[1] if i != 1 else values[int(rng.integers(0, 2)) * 2]
        else:
            annotated[name] = values[1 - values.index(value)]
    return annotated


@dataclass(frozen=True)
class WhiteCell:
    """A white cell (or smudge cell) on a slide: what it is and its drawn attributes; its look follows from them.

    Attributes:
        label: LLD class name (or :data:`SMUDGE`).
        attributes: the true attributes, which the drawing shows.
        annotated: the attributes as labelled (equal to ``attributes`` unless label noise is on).
        diameter_um: cell diameter in micrometres.
        seed: the seed of everything else about its look, so that it looks the same at every magnification.
    """

    label: str
    attributes: dict[str, str]
    annotated: dict[str, str]
    diameter_um: float
    seed: int


def check_attributes(label: str, attributes: dict[str, str]) -> None:
    """Raise a clear error for an unknown class, attribute or value, or a value the class cannot have.

    Raises:
        LeukolensError: what is wrong, with what is allowed.
    """
    if label not in CELL_TYPES:
        known = ", ".join(repr(n) for n in CELL_TYPES)
        raise LeukolensError(f"unknown white-cell class {label!r}: use one of {known}")
    for name, value in attributes.items():
        if name not in _VALUES:
            raise LeukolensError(f"unknown LLD attribute {name!r}: use one of {', '.join(_VALUES)}")
        applicable = name == "cell_size" or CELL_TYPES[label].odds[name] is not None
        allowed = _VALUES[name] if applicable else (NOT_APPLICABLE,)
        if value not in allowed:
            raise LeukolensError(f"{label}: {name} cannot be {value!r}; it can be {', '.join(allowed)}")


def make_white_cell(
    label: str,
    rng: np.random.Generator,
    *,
    label_noise: float = 0.0,
    attributes: dict[str, str] | None = None,
    diameter_um: float | None = None,
) -> WhiteCell:
    """Draw a white cell of class ``label``: attributes, diameter and a seed for its looks.

    Args:
        attributes: values to use instead of drawn ones (the others are still drawn), e.g. a prominent nucleolus.
        diameter_um: the diameter, when already drawn (it must fit the cell size); drawn from the size otherwise.

    Raises:
        LeukolensError: unknown class, or an attribute value the class cannot have.
    """
    check_attributes(label, attributes or {})
    attributes = {**draw_attributes(label, rng), **(attributes or {})}
    low, high = SIZE_DIAMETER_UM[attributes["cell_size"]]
    diameter = float(rng.uniform(low, high)) if diameter_um is None else diameter_um
    return WhiteCell(label, attributes, annotate(attributes, label_noise, rng), diameter, int(rng.integers(2**62)))


def draw_sizes(labels: list[str], rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Cell sizes and diameters (micrometres) of many cells at once, from their classes' size probabilities."""
    draws = rng.random(len(labels))
    sizes = []
    for label, draw in zip(labels, draws):
        small, medium, _ = CELL_TYPES[label].size
        sizes.append("small" if draw < small else "medium" if draw < small + medium else "large")
    where = rng.random(len(labels))
    diameters = np.array([low + (high - low) * w for (low, high), w in zip(map(SIZE_DIAMETER_UM.get, sizes), where)])
    return sizes, diameters


# ------------------------------------------------------------------------------------------------------ drawing
@dataclass
class Sprite:
    """A drawn object: material amounts around its centre and the extent of its body.

    Attributes:
        materials: [len(MATERIALS), height, width] amounts; the object's centre is at the array's centre.
        body: (x1, y1, x2, y2) of the cell body relative to the array's top-left corner, in pixels: its box.
    """

    materials: np.ndarray
    body: tuple[float, float, float, float]


def _nucleus_distance(x, y, polar, shape: str, radius: float, angle: float, geo: np.random.Generator) -> np.ndarray:
    """Signed distance in pixels to a nucleus of the given outline, centred at the origin of ``x``, ``y`` (whose
    distance and angle bin ``polar`` gives)."""
    c, s = np.cos(angle), np.sin(angle)
    if shape in ("round", "bumpy", "indented", "cleft"):
        wobble = 0.02 if shape != "bumpy" else 0.07
        harmonics = np.stack([geo.uniform(0, wobble, 5), geo.uniform(0, 2 * np.pi, 5)], axis=1)
        harmonics[0, 0] = geo.uniform(0.0, 0.08)  # ovalness
        distance = wobbly_distance(polar, radius, harmonics)
        if shape in ("indented", "cleft"):
            # A notch: a wide shallow dent (indented) or a narrow deep one (cleft).
            depth = geo.uniform(0.25, 0.4) if shape == "indented" else geo.uniform(0.3, 0.45)
            across = radius * (geo.uniform(0.7, 1.0) if shape == "indented" else geo.uniform(0.12, 0.2))
            notch = ellipse_distance(x, y, radius * c, radius * s, radius * depth, across, angle)
            distance = np.maximum(distance, -notch)
        return distance
    if shape == "kidney":
        body = ellipse_distance(x, y, 0, 0, radius * 1.15, radius * 0.8, angle + np.pi / 2)
        depth = geo.uniform(0.25, 0.45)
        notch = ellipse_distance(x, y, radius * 0.8 * c, radius * 0.8 * s, radius * depth, radius * 0.55, angle)
        return np.maximum(body, -notch)
    if shape == "folded":
        a = ellipse_distance(x, y, -0.25 * radius * c, -0.25 * radius * s, radius * 0.95, radius * 0.7, angle + 0.6)
        b = ellipse_distance(x, y, 0.3 * radius * c, 0.3 * radius * s, radius * 0.8, radius * 0.6, angle - 0.7)
        return np.minimum(a, b)
    # Segmented nuclei: lobes side by side along an arc (the C, U and clover shapes of real neutrophils), joined by
    # thin chromatin strands; a band nucleus is a thick unsegmented C made of overlapping discs.
    if shape == "band":
        lobes, lobe_radius, spacing = 6, radius * 0.3, 0.9
    elif shape == "bilobed":
        lobes, lobe_radius, spacing = 2, radius * 0.5, 2.2
    else:
        lobes = int(geo.integers(3, 6))
        lobe_radius, spacing = radius * (0.6 - 0.05 * lobes), geo.uniform(1.5, 2.0)  # lobes touch or overlap
    step = geo.uniform(1.0, 1.5)  # angle between neighbouring lobes, radians
    arc = spacing * lobe_radius / (2 * np.sin(step / 2))  # lobes `spacing` lobe radii apart
    angles = angle + step * (np.arange(lobes) - (lobes - 1) / 2) + geo.uniform(-0.2, 0.2, lobes)
    radii = arc * geo.uniform(0.93, 1.07, lobes)
    centres = [(r * np.cos(a), r * np.sin(a)) for r, a in zip(radii, angles)]
    middle = np.mean(centres, axis=0)
    centres = [(cx - middle[0], cy - middle[1]) for cx, cy in centres]
    reach = max(np.hypot(cx, cy) for cx, cy in centres) + lobe_radius
    shrink = min(1.0, radius * 1.3 / reach)  # keep the nucleus inside the cell
    centres = [(cx * shrink, cy * shrink) for cx, cy in centres]
    distance = None
    for i, (cx, cy) in enumerate(centres):
        r = lobe_radius * geo.uniform(0.85, 1.1)
        lobe = ellipse_distance(x, y, cx, cy, r, r * geo.uniform(0.75, 0.95), geo.uniform(0, np.pi))
        distance = lobe if distance is None else np.minimum(distance, lobe)
        if i:
            thickness = max(0.6, lobe_radius * (0.12 if shape != "band" else 0.8))
            strand = segment_distance(x, y, centres[i - 1], (cx, cy)) - thickness
            distance = np.minimum(distance, strand)
    return distance


def _granules(kind: str | None, area_um2: float, geo: np.random.Generator) -> list[tuple[int, float, float, int]]:
    """(material, radius um, weight, count) of each granule population of a cell."""
    if kind == "neutrophilic":
        return [(ACIDOPHILIC, 0.2, 0.5, int(area_um2 * 1.2))]
    if kind == "eosinophilic":
        return [(EOSINOPHILIC, 0.42, 0.6, int(area_um2 * 2.6))]
    if kind == "basophilic":
        return [(AZUROPHILIC, 0.42, 1.1, int(area_um2 * geo.uniform(0.8, 1.2)))]
    if kind == "specific":
        return [(ACIDOPHILIC, 0.22, 0.6, int(area_um2 * 1.2)), (AZUROPHILIC, 0.25, 0.8, int(geo.integers(5, 20)))]
    if kind == "azurophilic-few":
        return [(AZUROPHILIC, 0.22, 0.9, int(geo.integers(0, 14)))]
    if kind == "azurophilic-heavy":
        return [(AZUROPHILIC, 0.22, 0.55, int(area_um2 * 3.0))]
    return []


def render_white_cell(cell: WhiteCell, px_per_um: float) -> Sprite:
    """Draw a white cell at the given scale.

    Its geometry (outline, nucleus, nucleoli, vacuoles, granules, rods) is drawn in micrometres from one seed and its
    textures from another, so the same cell has the same shape at every magnification.
    """
    geo = np.random.default_rng([cell.seed, 0])  # geometry: independent of the scale
    texture = np.random.default_rng([cell.seed, 1])  # textures: drawn at the pixel size of this scale
    kind = CELL_TYPES[cell.label]
    a = cell.attributes
    s = px_per_um
    radius = cell.diameter_um / 2 * s
    half = int(np.ceil(radius * 1.12 + 3))
    size = 2 * half
    x, y = pixel_grid(size, size, half, half)
    materials = np.zeros((len(MATERIALS), size, size), np.float32)  # [materials, h, w]

    outline = 0.045 if kind.cytoplasm == "monocytic" else 0.015
    harmonics = np.stack([geo.uniform(0, outline, 6), geo.uniform(0, 2 * np.pi, 6)], axis=1)
    harmonics[0, 0] = geo.uniform(0.0, 0.06)
    body_distance = wobbly_distance(polar_grid(size), radius, harmonics)
    body = soft_inside(body_distance)

    if cell.label == SMUDGE:
        _draw_smudge(materials, radius, geo, texture, s)
        return Sprite(materials, _extent(materials[CHROMATIN] > 0.05, half, radius))

    # Nucleus: its size from the cytoplasm attribute (N:C ratio), its outline from the nuclear shape.
    abundant = a["cytoplasm"] == "abundant"
    ratio = geo.uniform(0.58, 0.72) if abundant else geo.uniform(0.78, 0.9)
    nuclear_radius = radius * ratio
    shift = (radius - nuclear_radius) * (geo.uniform(0.2, 0.7) if abundant else geo.uniform(0.0, 0.5))
    direction = geo.uniform(0, 2 * np.pi)
    nx, ny = shift * np.cos(direction), shift * np.sin(direction)
    irregular = a["nuclear_shape"] == "irregular" or (a["nuclear_shape"] == NOT_APPLICABLE and kind.irregular_shapes)
    shape = kind.irregular_shapes[int(geo.integers(len(kind.irregular_shapes)))] if irregular else "round"
    if shape in ("lobed", "bilobed", "band"):
        nx, ny = nx * 0.3, ny * 0.3  # segmented nuclei spread over the cell
        nuclear_radius = radius * geo.uniform(0.55, 0.65)
    nx, ny = round(nx), round(ny)  # whole pixels, so that the shared polar grid serves the nucleus too
    polar = polar_grid(size, nx, ny)
    nuclear_distance = _nucleus_distance(x - nx, y - ny, polar, shape, nuclear_radius, direction + np.pi, geo)
    nucleus = soft_inside(nuclear_distance) * body

    # Chromatin: fine and even when open; when coarse, darker, in clumps with paler gaps. Chromatin gathers under
    # the nuclear membrane, which draws the nucleus's outline.
    coarse = a["nuclear_chromatin"] in ("coarse", NOT_APPLICABLE)
    if coarse:
        clumps = np.tanh(1.5 * smooth_noise(texture, (size, size), 0.7 * s))
        chromatin = kind.chromatin_density * (1.1 + 0.22 * clumps)
    else:
        chromatin = kind.chromatin_density * (0.78 + 0.08 * smooth_noise(texture, (size, size), 0.35 * s))
    membrane = np.clip(1 + nuclear_distance / max(1.0, 0.35 * s), 0, 1) * nucleus
    chromatin = nucleus * chromatin + 0.2 * membrane

    if a["nucleolus"] == "prominent":
        for _ in range(int(geo.integers(1, 4))):
            ox, oy = sample_in_disc(geo, 1, nuclear_radius * 0.45)
            r = geo.uniform(0.6, 1.1) * s
            d = np.sqrt((x - nx - ox[0]) ** 2 + (y - ny - oy[0]) ** 2) - r
            inside = soft_inside(d) * nucleus
            rim = np.clip(1 - np.abs(d) / max(1.0, 0.25 * s), 0, 1) * nucleus
            chromatin = chromatin * (1 - 0.65 * inside) + 0.25 * rim
            materials[BASOPHILIC] += 0.35 * inside

    cytoplasm = body * (1 - nucleus)
    thinning = 0.75 + 0.25 * np.clip(-body_distance / (1.5 * s), 0, 1)  # cells are thinner at their edge
    moderate = a["cytoplasmic_basophilia"] == "moderate"
    grain = 1 + 0.08 * smooth_noise(texture, (size, size), 0.8 * s)
    if kind.cytoplasm == "blue":
        blue = 1.0 if moderate else 0.45
        rim = np.clip(1 - np.abs(body_distance) / (1.2 * s), 0, 1)  # the deep blue skirt of reactive cells
        materials[BASOPHILIC] += cytoplasm * (blue * grain + (0.4 * rim if moderate else 0))
    elif kind.cytoplasm == "monocytic":
        materials[BASOPHILIC] += cytoplasm * (0.65 if moderate else 0.4) * grain
        materials[ACIDOPHILIC] += cytoplasm * 0.45 * grain
    else:
        materials[ACIDOPHILIC] += cytoplasm * 0.7 * grain
        materials[BASOPHILIC] += cytoplasm * (0.3 if moderate else 0.06)

    if a["cytoplasmic_vacuoles"] == "prominent":
        holes = np.zeros((size, size), np.float32)
        for _ in range(int(geo.integers(3, 10))):
            vx, vy = sample_in_disc(geo, 1, radius * 0.85)
            d = np.sqrt((x - vx[0]) ** 2 + (y - vy[0]) ** 2) - geo.uniform(0.35, 0.9) * s
            holes = np.maximum(holes, soft_inside(d))
        keep = 1 - 0.85 * holes * (1 - nucleus)
        materials[BASOPHILIC] *= keep
        materials[ACIDOPHILIC] *= keep

    materials[CHROMATIN] += chromatin
    materials *= thinning
    _draw_granules(materials, kind, cell, cytoplasm, body, radius, s, geo)
    if geo.random() < kind.auer_rods:
        _draw_auer_rods(materials, x, y, cytoplasm, radius, s, kind.auer_bundle, geo)
    return Sprite(materials, _extent(body > 0.5, half, radius))


def _draw_granules(materials, kind, cell, cytoplasm, body, radius, s, geo) -> None:
    area = np.pi * (cell.diameter_um / 2) ** 2
    half = materials.shape[1] / 2
    for material, radius_um, weight, count in _granules(kind.granules, area, geo):
        if count <= 0:
            continue
        gx, gy = sample_in_disc(geo, count, radius * 0.95)
        # Basophil granules lie over the nucleus too; the others sit in the cytoplasm.
        where = body if kind.granules in ("basophilic", "azurophilic-heavy") else cytoplasm
        ix = np.clip((gx + half).astype(int), 0, materials.shape[2] - 1)
        iy = np.clip((gy + half).astype(int), 0, materials.shape[1] - 1)
        weights = weight * where[iy, ix] * geo.uniform(0.6, 1.2, count)
        kernel = blob_kernel(radius_um * s)
        kernel *= min(1.0, np.pi * (radius_um * s) ** 2 / kernel.sum())  # tiny granules keep their absorbance
        plane = np.zeros(materials.shape[1:], np.float32)
        stamp_points(plane, kernel, gx + half, gy + half, weights)
        materials[material] += plane


def _draw_auer_rods(materials, x, y, cytoplasm, radius, s, bundle: bool, geo) -> None:
    half = materials.shape[1] / 2
    rods = int(geo.integers(3, 7)) if bundle else 1  # APL's "faggot cells" carry bundles
    for _ in range(rods):
        for _attempt in range(8):
            cx, cy = sample_in_disc(geo, 1, radius * 0.7)
            if cytoplasm[int(cy[0] + half), int(cx[0] + half)] > 0.9:
                break
        length = geo.uniform(2.5, 5.5) * s
        angle = geo.uniform(0, np.pi)
        p0 = (cx[0] - length / 2 * np.cos(angle), cy[0] - length / 2 * np.sin(angle))
        p1 = (cx[0] + length / 2 * np.cos(angle), cy[0] + length / 2 * np.sin(angle))
        rod = soft_inside(segment_distance(x, y, p0, p1) - 0.2 * s)
        materials[AZUROPHILIC] += 1.4 * rod * (cytoplasm > 0.2)


def _draw_smudge(materials, radius, geo, texture, s) -> None:
    """A crushed cell: a ragged blot of pale, lacy nuclear material (a "basket"), no cytoplasm."""
    size = materials.shape[1]
    amplitudes = geo.uniform(0.04, 0.14, 5) / np.arange(1, 6)  # ragged but roundish: weaker high harmonics
    harmonics = np.stack([amplitudes, geo.uniform(0, 2 * np.pi, 5)], axis=1)
    blot = soft_inside(wobbly_distance(polar_grid(size), radius * 0.85, harmonics), edge=max(1.0, 0.5 * s))
    strands = np.abs(smooth_noise(texture, (size, size), 0.9 * s))  # low along the noise's zero lines: a mesh
    lace = np.clip(1.0 - 0.35 * strands, 0.3, 1.0) * (0.85 + 0.25 * smooth_noise(texture, (size, size), 3 * s))
    materials[CHROMATIN] += blot * lace * geo.uniform(0.45, 0.7)


def _extent(mask: np.ndarray, half: int, radius: float) -> tuple[float, float, float, float]:
    """The box of a mask (the cell body) in sprite pixels; a centred square of the radius if the mask is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return (half - radius, half - radius, half + radius, half + radius)
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


# ------------------------------------------------------------------------------------------------ red cells, platelets
def render_red_cell(rng: np.random.Generator, px_per_um: float, diameter_um: float) -> np.ndarray:
    """A red cell: a disc of haemoglobin thinning to a central pallor, with a faint bright halo around it.

    Returns [2, h, w]: haemoglobin, plasma (negative: the refractile halo is brighter than the background).
    """
    s = px_per_um
    a = diameter_um / 2 * s
    b = a * rng.uniform(0.88, 1.0)
    half = int(np.ceil(a * 1.25 + 2))
    x, y = pixel_grid(2 * half, 2 * half, half, half)
    angle = rng.uniform(0, np.pi)
    c, si = np.cos(angle), np.sin(angle)
    u, v = x * c + y * si, -x * si + y * c
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)  # 1 at the edge
    pallor = rng.uniform(0.45, 0.75)
    thickness = 1 - pallor * np.exp(-((rho / 0.5) ** 4))  # biconcave: thin centre, thick rim
    disc = soft_inside((rho - 1) * a, edge=max(1.0, 0.35 * s)) * thickness
    halo = np.exp(-(((rho - 1.06) * a / max(0.8, 0.25 * s)) ** 2))
    return np.stack([disc, -0.15 * halo * (rho > 0.95)]).astype(np.float32)


def render_platelet(rng: np.random.Generator, px_per_um: float) -> np.ndarray:
    """A platelet: a pale blue disc, 1.5-3.5 um, with a purple granular centre. Returns [len(MATERIALS), h, w]."""
    s = px_per_um
    radius = rng.uniform(0.75, 1.75) * s
    half = int(np.ceil(radius * 1.3 + 2))
    harmonics = np.stack([rng.uniform(0, 0.15, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1)
    disc = soft_inside(wobbly_distance(polar_grid(2 * half), radius, harmonics))
    materials = np.zeros((len(MATERIALS), 2 * half, 2 * half), np.float32)
    materials[BASOPHILIC] = 0.3 * disc
    count = int(rng.integers(4, 12))
    gx, gy = sample_in_disc(rng, count, radius * 0.55)
    plane = np.zeros((2 * half, 2 * half), np.float32)
    kernel = blob_kernel(0.25 * s)
    kernel *= min(1.0, np.pi * (0.25 * s) ** 2 / kernel.sum())
    stamp_points(plane, kernel, gx + half, gy + half, np.full(count, 0.9))
    materials[AZUROPHILIC] = plane * disc
    return materials
