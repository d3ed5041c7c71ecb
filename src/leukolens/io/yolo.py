"""YOLO-style label folders: plain YOLO (5 columns) and LeukemiaAttri/LLD (12 and 16 columns).

Both keep one text file per image, one line per cell, the box as normalised centre and size. LLD adds seven
attribute codes (12 columns) and, in its sparse release, the field's annotated region in pixels (16 columns); see
``shared/formats/lld.md``. The folder layouts understood here:

- ``images/<split>/`` beside ``labels/<split>/`` (TXL-PBC, Ultralytics), or ``<split>/images`` beside
  ``<split>/labels`` (PBC), or ``images/`` beside ``labels/``, or images and label files side by side;
- class names from ``data.yaml`` (list or dict), else ``classes.txt``, else the caller's ``names``;
- an optional ``fields.csv`` with per-image domain metadata (columns ``image`` and any of
  :class:`~leukolens.records.Domain`'s names), which the writers here also write so that domain metadata survives.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from leukolens.errors import LeukolensError, atomic_write_text
from leukolens.io.attributes import AttributeProblem, decode_lld_code
from leukolens.io.common import (
    InputError,
    Problem,
    ProblemLog,
    WriteReport,
    format_number,
    image_size,
    list_images,
    place_image,
    read_lines,
)
from leukolens.records import (
    LLD_CLASSES,
    LLD_NOT_APPLICABLE_CODE,
    LLD_SCHEMA,
    SPLITS,
    UNKNOWN,
    WBCATT_TO_LLD,
    Box,
    BoxFormat,
    Cell,
    Dataset,
    Domain,
    Field,
    Vocabulary,
    known_vocabulary,
)

PLAIN_COLUMNS = (5,)
LLD_COLUMNS = (12, 16)
FIELDS_CSV = "fields.csv"

DomainRule = Callable[[Path, tuple[int, int]], Domain]


@dataclass(frozen=True)
class SplitFolder:
    """Where one split's images and labels live."""

    split: str | None
    images: Path
    labels: Path


def find_split_folders(root: Path) -> list[SplitFolder]:
    """The image and label folders of a YOLO-style data set, by split.

    Raises:
        InputError: no layout recognised.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(Problem(str(root), None, "not-found", "data set folder not found"))
    found = [SplitFolder(s, root / "images" / s, root / "labels" / s) for s in SPLITS if (root / "images" / s).is_dir()]
    found = found or [
        SplitFolder(s, root / s / "images", root / s / "labels") for s in SPLITS if (root / s / "images").is_dir()
    ]
    if found:
        return found
    if (root / "images").is_dir():
        return [SplitFolder(None, root / "images", root / "labels")]
    if any(p.suffix == ".txt" and p.name != "classes.txt" for p in root.iterdir()):
        return [SplitFolder(None, root, root)]
    raise InputError(
        Problem(
            str(root),
            None,
            "layout",
            "no YOLO layout found: expected images/ and labels/ folders "
            "(optionally per split), or images with .txt label files side by side",
        )
    )


def read_class_names(root: Path, folders: list[SplitFolder]) -> tuple[str, ...] | None:
    """Class names from ``data.yaml`` or ``classes.txt``; None when the data set names none.

    Raises:
        InputError: the file that names the classes cannot be read (not UTF-8, not YAML, no list or mapping of names).
    """
    data_yaml = root / "data.yaml"
    if data_yaml.is_file():
        try:
            spec = yaml.safe_load(_read_text(data_yaml, "bad-yaml")) or {}
        except yaml.YAMLError as error:
            line = getattr(getattr(error, "problem_mark", None), "line", None)
            line = None if line is None else line + 1
            raise InputError(Problem(str(data_yaml), line, "bad-yaml", str(error))) from None
        if not isinstance(spec, dict):
            raise InputError(Problem(str(data_yaml), None, "bad-yaml", "expected a mapping (with 'names')"))
        names = spec.get("names")
        if isinstance(names, dict):
            try:
                return tuple(str(names[k]) for k in sorted(names, key=int))
            except (TypeError, ValueError):
                message = f"the keys of 'names' must be class ids 0, 1, ...; got {list(names)[:5]}"
                raise InputError(Problem(str(data_yaml), None, "bad-yaml", message)) from None
        if isinstance(names, list):
            return tuple(str(n) for n in names)
    candidates = [root / "classes.txt", root / "labels" / "classes.txt"] + [f.labels / "classes.txt" for f in folders]
    for candidate in candidates:
        if candidate.is_file():
            text = _read_text(candidate, "unreadable-labels")
            return tuple(line.strip() for line in text.splitlines() if line.strip())
    return None


def _read_text(path: Path, kind: str) -> str:
    """A whole UTF-8 file that the data set cannot be read without.

    Raises:
        InputError: the file is not UTF-8 text, or cannot be read.
    """
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(Problem(str(path), None, kind, f"not a UTF-8 text file ({error.reason})")) from None
    except OSError as error:
        raise InputError(Problem(str(path), None, kind, f"cannot read the file ({error.strerror})")) from None


def read_fields_csv(root: Path, log: ProblemLog) -> dict[str, Domain]:
    """Per-image domain metadata from ``fields.csv`` (image file name or stem -> Domain)."""
    path = root / FIELDS_CSV
    if not path.is_file():
        return {}
    try:
        text = _read_text(path, "unreadable-labels")
    except InputError as error:
        log.add(path, None, error.problem.kind, f"{error.problem.message}; ignored")
        return {}
    domains: dict[str, Domain] = {}
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        if not reader.fieldnames or "image" not in reader.fieldnames:
            log.add(path, 1, "column-count", "fields.csv needs an 'image' column")
            return {}
        for row in reader:
            line = reader.line_num
            if None in row or None in row.values():  # more or fewer cells than the header has columns
                log.add(path, line, "column-count", f"{len(reader.fieldnames)} columns expected")
                continue
            image = row.pop("image")
            try:
                domains[Path(image).stem] = Domain.from_dict(row)
            except ValueError as error:
                log.add(path, line, "domain", str(error))
    except csv.Error as error:
        log.add(path, reader.line_num, "bad-csv", f"not a readable CSV file ({error}); the rest is ignored")
    return domains


def write_fields_csv(out: Path, fields: list[Field]) -> bool:
    """Write ``fields.csv`` when any field has domain metadata; returns whether it wrote one."""
    if not any(f.domain.as_dict() for f in fields):
        return False
    names = [name for name in Domain.__dataclass_fields__]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["image", *names])
    for f in fields:
        values = f.domain.as_dict()
        writer.writerow([Path(f.image).name, *(values.get(n, "") for n in names)])
    atomic_write_text(out / FIELDS_CSV, text.getvalue())
    return True


# ------------------------------------------------------------------------------------------------------ reading
def _parse_numbers(tokens: list[str], path: Path, line: int, log: ProblemLog) -> list[float] | None:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not _is_number(t))
        log.add(path, line, "bad-number", f"{bad!r} is not a number")
        return None


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _label_of(token: str, classes: Vocabulary) -> str | None:
    """The class a line's first token names, when it is a plain class id (for counting what a skipped line held)."""
    if token.isascii() and token.isdigit() and int(token) < len(classes):
        return classes.names[int(token)]
    return None


def _check_normalised_box(cx: float, cy: float, w: float, h: float) -> str | None:
    if w <= 0 or h <= 0:
        return f"box has non-positive size (width {w:g}, height {h:g})"
    if not all(0 <= v <= 1 for v in (cx, cy, w, h)):
        return f"box values ({cx:g}, {cy:g}, {w:g}, {h:g}) are outside [0, 1]"
    eps = 1e-6  # six-decimal files round edges a hair past the border
    if cx - w / 2 < -eps or cy - h / 2 < -eps or cx + w / 2 > 1 + eps or cy + h / 2 > 1 + eps:
        return f"box ({cx:g}, {cy:g}, {w:g}, {h:g}) reaches outside the image"
    return None


def _decode_lld_attributes(codes: list[float], path: Path, line: int, log: ProblemLog) -> dict[str, str] | None:
    attributes: dict[str, str] = {}
    for position, (attribute, code) in enumerate(zip(LLD_SCHEMA.attributes, codes), start=1):
        try:
            attributes[attribute.name] = decode_lld_code(attribute.name, code)
        except AttributeProblem as problem:
            log.add(path, line, problem.kind, f"a{position} ({attribute.title}) {problem}")
            return None
    return attributes


def parse_label_file(
    path: Path,
    *,
    columns: tuple[int, ...],
    classes: Vocabulary,
    size: tuple[int, int],
    log: ProblemLog,
) -> tuple[list[Cell], list[Box]]:
    """Cells (and the LLD annotated region) of one label file; bad lines are logged and skipped.

    Args:
        columns: the column counts this format allows: (5,) for plain YOLO, (12, 16) for LLD.
    """
    lines = read_lines(path, log)
    if lines is None:
        return [], []
    cells: list[Cell] = []
    region: tuple[float, float, float, float] | None = None
    seen: dict[str, int] = {}
    width, height = size
    for number, text in lines:
        tokens = text.split()
        label = _label_of(tokens[0], classes)
        if len(tokens) not in columns:
            expected = " or ".join(str(c) for c in columns)
            log.add(path, number, "column-count", f"{len(tokens)} columns, expected {expected}", label=label)
            continue
        if text in seen:
            log.add(path, number, "duplicate", f"duplicate of line {seen[text]}", label=label)
            continue
        seen[text] = number
        values = _parse_numbers(tokens, path, number, log)
        if values is None:
            continue
        class_id = values[0]
        if not 0 <= class_id < len(classes) or class_id != int(class_id):  # range first: int(nan) raises
            log.add(
                path,
                number,
                "unknown-class",
                f"class id {tokens[0]} is not in 0..{len(classes) - 1} ({', '.join(classes.names)})",
            )
            continue
        label = classes.names[int(class_id)]
        cx, cy, w, h = values[1:5]
        wrong = _check_normalised_box(cx, cy, w, h)
        if wrong:
            log.add(path, number, "box-range", wrong, label=label)
            continue
        attributes: dict[str, str] = {}
        if len(tokens) == 16:
            x1, y1, x2, y2 = values[5:9]
            if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
                log.add(
                    path,
                    number,
                    "region-range",
                    f"annotated region ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is not inside the {width}x{height} image",
                    label=label,
                )
                continue
            if region is not None and region != (x1, y1, x2, y2):
                log.add(
                    path,
                    number,
                    "region-mismatch",
                    f"annotated region ({x1:g}, {y1:g}, {x2:g}, {y2:g}) differs from the file's first region "
                    f"{tuple(round(v, 3) for v in region)}",
                    label=label,
                )
                continue
            region = (x1, y1, x2, y2)
        if len(tokens) in LLD_COLUMNS:
            decoded = _decode_lld_attributes(values[-7:], path, number, log)
            if decoded is None:
                continue
            attributes = decoded
        cells.append(Cell(Box((cx, cy, w, h), BoxFormat.CXCYWH, normalized=True), label, attributes))
    regions = [Box(region, BoxFormat.XYXY, normalized=False)] if region is not None else []
    return cells, regions


def read_yolo(
    root: Path,
    *,
    log: ProblemLog,
    names: tuple[str, ...] | None = None,
    lld: bool = False,
    domain_rule: DomainRule | None = None,
    progress: Callable | None = None,
) -> Dataset:
    """Read a YOLO-style data set: plain YOLO, or LLD's 12/16-column files with ``lld=True``.

    Args:
        root: the data set folder.
        log: where problems go.
        names: class names when the data set has no ``data.yaml`` or ``classes.txt`` (LLD defaults to its 14).
        lld: read LLD attribute columns (12 or 16 per line) instead of plain 5-column lines.
        domain_rule: domain metadata for a field from its image path and size, where ``fields.csv`` gives none.
        progress: wraps the iterable of images (e.g. ``tqdm``), for long reads.
    """
    root = Path(root)
    folders = find_split_folders(root)
    found = read_class_names(root, folders)
    if found is not None:
        names = found
    elif names is None and lld:
        names = LLD_CLASSES.names
    if names is None:
        raise LeukolensError(f"{root}: no class names (no data.yaml or classes.txt); pass them with --names A,B,C")
    try:
        classes = known_vocabulary(tuple(names), root.name)
    except ValueError as error:  # a class name repeats
        raise InputError(Problem(str(root), None, "bad-classes", str(error))) from None
    domains = read_fields_csv(root, log)
    fields: list[Field] = []
    columns = LLD_COLUMNS if lld else PLAIN_COLUMNS
    for folder in folders:
        images = list_images(folder.images) if folder.images.is_dir() else []
        image_stems = {p.stem for p in images}
        if folder.labels.is_dir():
            for label_file in sorted(folder.labels.glob("*.txt")):
                if label_file.name != "classes.txt" and label_file.stem not in image_stems:
                    log.add(label_file, None, "missing-image", f"label file has no image in {folder.images}")
        for image in progress(images) if progress else images:
            try:
                size = image_size(image)
            except InputError as error:
                log.add(image, None, error.problem.kind, error.problem.message)
                continue
            label_file = folder.labels / f"{image.stem}.txt"
            cells, regions = ([], [])
            if label_file.is_file():
                cells, regions = parse_label_file(label_file, columns=columns, classes=classes, size=size, log=log)
            domain = domains.get(image.stem) or (domain_rule(image, size) if domain_rule else Domain())
            fields.append(Field(image, size[0], size[1], cells, regions, domain, folder.split))
    schema = LLD_SCHEMA if lld else None
    return Dataset(fields, classes, schema, name=root.name)


def sniff_columns(root: Path) -> int | None:
    """The column count of the first non-empty label line under ``root``; None when there is none."""
    for folder in find_split_folders(root):
        if not folder.labels.is_dir():
            continue
        for label_file in sorted(folder.labels.glob("*.txt")):
            if label_file.name == "classes.txt":
                continue
            for line in label_file.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.strip():
                    return len(line.split())
    return None


# ------------------------------------------------------------------------------------------------------ writing
def _label_folder(out: Path, kind: str, split: str | None) -> Path:
    return out / kind / split if split else out / kind


def _write_layout(
    dataset: Dataset, out: Path, lines_of: Callable[[Field], list[str]], images: str, report: WriteReport
) -> None:
    """Shared by both writers: label files, images, data.yaml, classes.txt and fields.csv."""
    splits = sorted({f.split for f in dataset.fields if f.split}, key=lambda s: SPLITS.index(s) if s in SPLITS else 9)
    for f in dataset.fields:
        name = Path(f.image).name
        place_image(f.image, _label_folder(out, "images", f.split) / name, images)
        atomic_write_text(
            _label_folder(out, "labels", f.split) / f"{Path(name).stem}.txt",
            "".join(line + "\n" for line in lines_of(f)),
        )
        report.files += 1
        report.fields += 1
        report.cells += len(f.cells)
    spec = {"path": ".", "names": {i: n for i, n in enumerate(dataset.classes.names)}, "nc": len(dataset.classes)}
    for split in splits:
        spec[split] = f"images/{split}"
    if not splits:
        spec["train"] = "images"
    atomic_write_text(out / "data.yaml", yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    atomic_write_text(out / "classes.txt", "".join(n + "\n" for n in dataset.classes.names))
    if any(f.split is None for f in dataset.fields) and splits:
        report.drop(
            "split-less fields mixed with split ones (written to images/ and not listed in data.yaml)",
            sum(f.split is None for f in dataset.fields),
        )
    write_fields_csv(out, dataset.fields)


def _normalised_cxcywh(cell: Cell, f: Field) -> str:
    box = cell.box.convert(BoxFormat.CXCYWH, normalized=True, image_size=f.size)
    return " ".join(format_number(v) for v in box.values)


def write_yolo(dataset: Dataset, out: Path, *, images: str = "link") -> WriteReport:
    """Write plain YOLO: boxes and classes. Attributes and annotated regions cannot be held and are reported."""
    out = Path(out)
    report = WriteReport(out)
    report.drop("cell attributes", sum(1 for c in dataset.cells() if c.attributes))
    report.drop("annotated regions (fields then read as fully annotated)", sum(len(f.regions) for f in dataset.fields))

    def lines_of(f: Field) -> list[str]:
        return [f"{dataset.classes.index(c.label)} {_normalised_cxcywh(c, f)}" for c in f.cells]

    _write_layout(dataset, out, lines_of, images, report)
    return report


def _lld_codes(attributes: dict[str, str], report: WriteReport) -> list[str]:
    codes = []
    for position, attribute in enumerate(LLD_SCHEMA.attributes, start=1):
        value = attributes.get(attribute.name, UNKNOWN)
        if value in attribute.values:
            codes.append(str(attribute.values.index(value)))
        elif position == 1:
            # LLD has no code for an unknown size; say so rather than hide it.
            report.drop("unknown cell size written as 'medium' (LLD has no code for it)")
            codes.append("1")
        else:
            if value == UNKNOWN:
                report.drop("'unknown' attribute values written as code 2 (not assessed)")
            codes.append(str(LLD_NOT_APPLICABLE_CODE))
    return codes


def write_lld(dataset: Dataset, out: Path, *, images: str = "link") -> WriteReport:
    """Write LLD label files: 16 columns for fields with an annotated region, 12 for fully annotated ones.

    Attributes of another schema are mapped to LLD's (WBCAtt through :data:`~leukolens.records.WBCATT_TO_LLD`).
    A vocabulary other than LLD's 14 classes is kept in ``classes.txt``.
    """
    out = Path(out)
    report = WriteReport(out)
    mapping = None
    if dataset.schema is not None and dataset.schema.name != LLD_SCHEMA.name:
        if dataset.schema.name != WBCATT_TO_LLD.source.name:
            raise LeukolensError(f"no mapping from attribute schema {dataset.schema.name!r} to LLD's")
        mapping = WBCATT_TO_LLD
        report.drop(
            f"{dataset.schema.name} attributes with no LLD counterpart: "
            f"{', '.join(mapping.unmapped_source)} (per cell)",
            sum(1 for c in dataset.cells() if c.attributes),
        )
    for f in dataset.fields:
        report.drop("annotated regions beyond the first of a field", max(0, len(f.regions) - 1))
        if f.regions and not f.cells:
            report.drop("annotated region of a field with no cells (LLD repeats it on each cell line)")

    def lines_of(f: Field) -> list[str]:
        region = ""
        if f.regions:
            x1, y1, x2, y2 = f.regions[0].pixels_xyxy(f.size)
            region = " " + " ".join(format_number(v) for v in (x1, y1, x2, y2))
        lines = []
        for c in f.cells:
            attributes = mapping.apply(c.attributes) if mapping and c.attributes else c.attributes
            codes = " ".join(_lld_codes(attributes, report))
            lines.append(f"{dataset.classes.index(c.label)} {_normalised_cxcywh(c, f)}{region} {codes}")
        return lines

    _write_layout(dataset, out, lines_of, images, report)
    return report
