"""How close synthetic smears come to real ones, on numbers anyone can recompute: cell sizes, cells per field and
the colours of background, red cells, nuclei and cytoplasm, for BCCD, TXL-PBC's four sources and synthetic fields.

Writes the generated sections of ``docs/synthetic.md`` (the comparison, the class-mix and attribute tables, the
galleries) and the gallery images under ``docs/images/synthetic/``; returns a short section for
``docs/benchmarks.md``.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from leukolens.io import ProblemLog, read_dataset
from leukolens.records import LLD_CLASSES, LLD_SCHEMA, Box, Field
from leukolens.report.overlay import draw_field
from leukolens.synth import (
    CELL_TYPES,
    DIAGNOSES,
    LLD_DOMAINS,
    SMUDGE,
    STAINS,
    DomainSpec,
    Slide,
    SynthConfig,
    make_patients,
    render_cell,
    render_field,
)
from leukolens.synth.cells import SIZE_DIAMETER_UM
from leukolens.synth.patients import make_patient

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DOC = REPO / "docs" / "synthetic.md"
IMAGES = REPO / "docs" / "images" / "synthetic"
COLOUR_FIELDS = 100  # fields per set whose pixels are measured (sizes and counts use every field)
PARTS = ("background", "red cells", "nuclei", "cytoplasm")


# ------------------------------------------------------------------------------------------------------ measuring
@dataclass
class Measures:
    """What one set of fields measures."""

    name: str
    fields: int = 0
    wbc: list[float] = field(default_factory=list)  # box diameters sqrt(w * h), pixels
    rbc: list[float] = field(default_factory=list)
    wbc_relative: list[float] = field(default_factory=list)  # diameter / image width
    rbc_relative: list[float] = field(default_factory=list)
    wbc_per_field: list[int] = field(default_factory=list)
    rbc_per_field: list[int] = field(default_factory=list)
    ratio: list[float] = field(default_factory=list)  # median WBC / median RBC diameter, per field with both
    colours: dict[str, list[np.ndarray]] = field(default_factory=lambda: {p: [] for p in PARTS})


def _otsu(values: np.ndarray) -> float:
    """The threshold that best splits values into two classes (Otsu)."""
    counts, edges = np.histogram(values, 64)
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(counts)
    above = below[-1] - below
    mean_below = np.cumsum(counts * centres) / np.maximum(below, 1)
    mean_above = (np.sum(counts * centres) - np.cumsum(counts * centres)) / np.maximum(above, 1)
    return float(centres[np.argmax(below * above * (mean_below - mean_above) ** 2)])


def _ellipse(shape: tuple[int, int], box: tuple[float, float, float, float], scale: float) -> np.ndarray:
    x1, y1, x2, y2 = box
    y, x = np.ogrid[: shape[0], : shape[1]]
    rx, ry = max((x2 - x1) / 2, 1), max((y2 - y1) / 2, 1)
    return ((x + 0.5 - (x1 + x2) / 2) / rx) ** 2 + ((y + 0.5 - (y1 + y2) / 2) / ry) ** 2 < scale**2


def measure_colours(image: np.ndarray, wbc: list, rbc: list, other: list, out: Measures) -> None:
    """Mean RGB of background, red cells, nuclei and cytoplasm of one field.

    Background: pixels outside every box, the brighter half (real label sets miss some cells). Red cells: inside
    80% of each red-cell box's ellipse, outside white-cell boxes. Nucleus and cytoplasm: inside 85% of each white
    cell box's ellipse, split by Otsu's threshold on the green channel (the nucleus is the dark class).
    """
    height, width = image.shape[:2]
    covered = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in wbc + rbc + other:
        covered[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = True
    white_cells = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in wbc:
        white_cells[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = True
    luminance = image.mean(axis=2)
    if (~covered).sum() > 500:
        background = ~covered & (luminance >= np.median(luminance[~covered]))
        out.colours["background"].append(image[background].mean(axis=0))
    red = np.zeros((height, width), bool)
    for box in rbc:
        red |= _ellipse((height, width), box, 0.8)
    red &= ~white_cells
    if red.sum() > 200:
        out.colours["red cells"].append(image[red].mean(axis=0))
    for box in wbc:
        inside = _ellipse((height, width), box, 0.85)
        if inside.sum() < 200:
            continue
        green = image[..., 1]
        threshold = _otsu(green[inside])
        out.colours["nuclei"].append(image[inside & (green < threshold)].mean(axis=0))
        out.colours["cytoplasm"].append(image[inside & (green >= threshold)].mean(axis=0))


def _add_sizes(out: Measures, width: int, wbc: list, rbc: list) -> None:
    def diameters(boxes):
        return [float(np.sqrt((x2 - x1) * (y2 - y1))) for x1, y1, x2, y2 in boxes]

    w, r = diameters(wbc), diameters(rbc)
    out.fields += 1
    out.wbc += w
    out.rbc += r
    out.wbc_relative += [d / width for d in w]
    out.rbc_relative += [d / width for d in r]
    out.wbc_per_field.append(len(w))
    out.rbc_per_field.append(len(r))
    if w and r:
        out.ratio.append(float(np.median(w) / np.median(r)))


def measure_real(name: str, fields: list[Field]) -> Measures:
    out = Measures(name)
    step = max(1, len(fields) // COLOUR_FIELDS)
    for i, f in enumerate(fields):
        boxes = {"WBC": [], "RBC": [], "Platelets": []}
        for c in f.cells:
            boxes[c.label].append(c.box.pixels_xyxy(f.size))
        _add_sizes(out, f.width, boxes["WBC"], boxes["RBC"])
        if i % step == 0:
            image = np.asarray(Image.open(f.image).convert("RGB"), np.float32)
            measure_colours(image, boxes["WBC"], boxes["RBC"], boxes["Platelets"], out)
    return out


def measure_synthetic(name: str, config: SynthConfig, *, diagnoses: tuple[str, ...] | None = None) -> Measures:
    out = Measures(name)
    for patient in make_patients(config):
        if diagnoses and patient.diagnosis not in diagnoses:
            continue
        slide = Slide(patient, size=config.size)
        for k in range(config.fields_per_patient):
            for spec in config.domain_specs:
                rendered = render_field(slide, k, spec)
                wbc = [c.box.pixels_xyxy() for c in rendered.cells if c.label != SMUDGE]
                rbc = [b.pixels_xyxy() for b in rendered.red_cells]
                other = [c.box.pixels_xyxy() for c in rendered.cells if c.label == SMUDGE]
                other += [b.pixels_xyxy() for b in rendered.platelets]
                _add_sizes(out, config.size, wbc, rbc)
                measure_colours(np.asarray(rendered.image, np.float32), wbc, rbc, other, out)
    return out


# ------------------------------------------------------------------------------------------------------ tables
def _median(values: list[float], digits: int = 0) -> str:
    return f"{np.median(values):.{digits}f}" if values else "-"


def _rgb(values: list[np.ndarray]) -> str:
    if not values:
        return "-"
    stack = np.stack(values)
    mean, spread = stack.mean(axis=0), stack.std(axis=0).mean()
    return f"{mean[0]:.0f} {mean[1]:.0f} {mean[2]:.0f} ±{spread:.0f}"


def realism_tables(sets: list[Measures]) -> str:
    sizes = [
        "| fields | n | WBC diameter (px) | WBC / width | RBC diameter (px) | RBC / width | WBC / RBC | "
        "WBC per field | RBC per field |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in sets:
        sizes.append(
            f"| {m.name} | {m.fields} | {_median(m.wbc)} | {_median(m.wbc_relative, 2)} | {_median(m.rbc)} | "
            f"{_median(m.rbc_relative, 2)} | {_median(m.ratio, 2)} | {np.mean(m.wbc_per_field):.1f} | "
            f"{np.mean(m.rbc_per_field):.1f} |"
        )
    colours = ["| fields | " + " | ".join(PARTS) + " |", "|---" * (len(PARTS) + 1) + "|"]
    for m in sets:
        colours.append(f"| {m.name} | " + " | ".join(_rgb(m.colours[p]) for p in PARTS) + " |")
    legend = "Mean colour (R G B, 0-255) ± mean per-channel spread between fields:"
    return "\n".join(sizes) + f"\n\n{legend}\n\n" + "\n".join(colours)


def _share(value: float) -> str:
    return f"{value * 100:g}%"


def _rule(rule) -> str:
    if rule.maximum == 0:
        return f"no {rule.description}"
    parts = [
        f">= {_share(rule.minimum)}" if rule.minimum > 0 else "",
        f"<= {_share(rule.maximum)}" if rule.maximum < 1 else "",
    ]
    return f"{rule.description} " + " and ".join(p for p in parts if p)


def mix_table() -> str:
    lines = [
        "| diagnosis | variant (share of patients) | class shares drawn per patient | rest, split by weight | "
        "documented constraints (share of white cells) | WBC / field | RBC / field | platelets / field | "
        "smudge cells per WBC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d in DIAGNOSES.values():
        rules = "; ".join(_rule(r) for r in d.constraints)
        counts = [
            f"{d.white_cells[0]:g}-{d.white_cells[1]:g}",
            f"{d.red_cells[0]:g}-{d.red_cells[1]:g}",
            f"{d.platelets[0]:g}-{d.platelets[1]:g}",
            f"{_share(d.smudge_cells[0])}-{_share(d.smudge_cells[1])}",
        ]
        for i, (probability, mix) in enumerate(d.variants):
            fixed = ", ".join(f"{c} {_share(lo)}-{_share(hi)}" for c, (lo, hi) in mix.fixed.items())
            rest = ", ".join(f"{c} {w:g}" for c, w in mix.rest.items())
            first = i == 0
            cells = [d.name if first else "", f"{mix.name} ({probability:.0%})", fixed, rest, rules if first else ""]
            cells += counts if first else [""] * len(counts)
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _shapes(shapes: tuple[str, ...]) -> str:
    """Irregular nuclear outlines, with their shares when not all equally likely."""
    counts = {s: shapes.count(s) for s in dict.fromkeys(shapes)}
    if len(set(counts.values())) <= 1:
        return ", ".join(counts) or "-"
    return ", ".join(f"{s} {n / len(shapes):.0%}" for s, n in counts.items())


def attribute_table() -> str:
    names = [a.name for a in LLD_SCHEMA.attributes[1:]]
    heads = [
        "coarse chromatin",
        "irregular nucleus",
        "prominent nucleolus",
        "abundant cytoplasm",
        "moderate basophilia",
        "prominent vacuoles",
    ]
    lines = [
        "| class | size small / medium / large | " + " | ".join(heads) + " | irregular shapes drawn | granules | "
        "Auer rods |",
        "|---" * (len(heads) + 5) + "|",
    ]
    for label, kind in CELL_TYPES.items():
        odds = " | ".join("n/a" if kind.odds[n] is None else f"{kind.odds[n]:.0%}" for n in names)
        size = " / ".join(f"{p:.0%}" for p in kind.size)
        rods = f"{kind.auer_rods:.0%}" + (" (bundles)" if kind.auer_bundle else "") if kind.auer_rods else "-"
        shown = "smudge cell" if label == SMUDGE else label
        lines.append(
            f"| {shown} | {size} | {odds} | {_shapes(kind.irregular_shapes)} | {kind.granules or '-'} | {rods} |"
        )
    sizes = ", ".join(f"{name} {lo:g}-{hi:g} um" for name, (lo, hi) in SIZE_DIAMETER_UM.items())
    return "\n".join(lines) + f"\n\nDiameter drawn uniformly for each cell size: {sizes} (a red cell is 7.5 um)."


# ------------------------------------------------------------------------------------------------------ galleries
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _grid(tiles: list[tuple[Image.Image, str]], columns: int, tile: int) -> Image.Image:
    caption = 16
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * tile, rows * (tile + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(12)
    for i, (image, text) in enumerate(tiles):
        x, y = (i % columns) * tile, (i // columns) * (tile + caption)
        sheet.paste(image.resize((tile, tile), Image.LANCZOS), (x, y + caption))
        draw.text((x + 3, y + 2), text, fill=(0, 0, 0), font=font)
    return sheet


def _save(image: Image.Image, name: str) -> int:
    """Save a gallery as a 96-colour PNG (tens of KB) and return its size in bytes."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / name
    image.quantize(colors=96, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    return path.stat().st_size


def galleries() -> dict[str, int]:
    sizes = {}
    tiles = []
    for i, label in enumerate(CELL_TYPES):
        image, _ = render_cell(label, seed=i + 2, size=320)
        tiles.append((image, "smudge cell (None)" if label == SMUDGE else label))
    sizes["classes.png"] = _save(_grid(tiles, 7, 132), "classes.png")

    slide = Slide(make_patient("CML", sample_id="P005", seed=21, stain="Wright"))
    tiles = []
    for text in LLD_DOMAINS:
        spec = DomainSpec.parse(text)
        tiles.append((render_field(slide, 0, spec).image, text))
    sizes["domains.png"] = _save(_grid(tiles, 4, 176), "domains.png")

    tiles = [(render_field(slide, 0, DomainSpec(stain=s)).image, s) for s in STAINS]
    sizes["stains.png"] = _save(_grid(tiles, 3, 176), "stains.png")

    tiles = []
    for i, diagnosis in enumerate(DIAGNOSES):
        patient = make_patient(diagnosis, sample_id="P", seed=40 + i, stain="May-Grunwald-Giemsa")
        tiles.append((render_field(Slide(patient), 1, DomainSpec()).image, _caption(diagnosis, patient.variant)))
    sizes["diagnoses.png"] = _save(_grid(tiles, 5, 176), "diagnoses.png")

    rendered = render_field(Slide(make_patient("AML", sample_id="P003", seed=31, stain="Wright")), 0, DomainSpec())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{rendered.name}.jpg"
        path.write_bytes(rendered.jpeg)
        full = Field(path, 640, 640, rendered.cells, [], rendered.domain)
        inside = [c for c in rendered.cells if rendered.region.contains_point(*_centre(c.box))]
        sparse = Field(path, 640, 640, inside, [rendered.region], rendered.domain)
        left = draw_field(full, LLD_CLASSES, attributes=False)
        right = draw_field(sparse, LLD_CLASSES, attributes=False)
    pair = Image.new("RGB", (720, 360), "white")
    pair.paste(left.resize((360, 360), Image.LANCZOS), (0, 0))
    pair.paste(right.resize((360, 360), Image.LANCZOS), (360, 0))
    sizes["sparse.png"] = _save(pair, "sparse.png")
    return sizes


def _caption(diagnosis: str, variant: str) -> str:
    return diagnosis if variant == diagnosis else f"{diagnosis}: {variant}"


def _centre(box: Box) -> tuple[float, float]:
    x1, y1, x2, y2 = box.pixels_xyxy()
    return (x1 + x2) / 2, (y1 + y2) / 2


# ------------------------------------------------------------------------------------------------------ document
def _fill(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- synth:{name} -->\n).*?(<!-- /synth:{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{DOC} has no <!-- synth:{name} --> section")
    return pattern.sub(lambda m: m.group(1) + body.strip() + "\n" + m.group(2), text)


def run() -> str:
    if not SHARED.is_dir():
        raise SystemExit(f"the realism benchmark needs the public data sets at {SHARED}")
    log = ProblemLog()
    sets = [measure_real("BCCD (VOC labels)", read_dataset(SHARED / "bccd", log=log).fields)]
    txl = read_dataset(SHARED / "txl_pbc", log=log)
    for source in ("BCCD", "BCDD", "PBC", "Raabin-WBC"):
        sets.append(measure_real(f"TXL-PBC {source}", [f for f in txl.fields if f.domain.source == source]))
    reference = SynthConfig(patients=10, fields_per_patient=5, seed=0)
    sets.append(measure_synthetic("synthetic 100x, high-cost, high-end", reference))
    sets.append(measure_synthetic("synthetic 100x, normal patients", reference, diagnoses=("normal",)))
    sets.append(
        measure_synthetic(
            "synthetic 100x, low-cost, mid-level",
            SynthConfig(patients=10, fields_per_patient=2, seed=1, domains=("low-cost:mid-level:100x",)),
        )
    )
    sets.append(
        measure_synthetic(
            "synthetic 40x, high-cost, high-end",
            SynthConfig(patients=5, fields_per_patient=2, seed=2, domains=("high-cost:high-end:40x",)),
        )
    )
    table = realism_tables(sets)
    sizes = galleries()
    text = DOC.read_text(encoding="utf-8")
    text = _fill(text, "realism", table)
    text = _fill(text, "mixes", mix_table())
    text = _fill(text, "attributes", attribute_table())
    DOC.write_text(text, encoding="utf-8")
    listed = ", ".join(f"{name} {size / 1024:.0f} KB" for name, size in sizes.items())
    return "\n".join(
        [
            "## Synthetic smears: realism against BCCD and TXL-PBC",
            "Box sizes, cells per field and colours of real and synthetic fields, measured the same way (method and "
            f"discussion in [synthetic.md](synthetic.md)). Galleries written: {listed}.",
            "",
            table,
        ]
    )
