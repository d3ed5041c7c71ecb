"""Pascal VOC, as BCCD publishes it, with CVAT-style per-object attributes.

Layout: ``Annotations/<stem>.xml`` (one per image), ``JPEGImages/<image>``, ``ImageSets/Main/{train,val,test}.txt``
(one image stem per line; ``trainval.txt`` repeats train and val and is not read). The data set folder may be given
itself or through its parent (BCCD ships as ``bccd/BCCD/Annotations``).

An object may carry attributes the way CVAT exports them::

    <attributes><attribute><name>nuclear_chromatin</name><value>open</value></attribute></attributes>

VOC cannot hold a vocabulary's order, an attribute schema's name, domain metadata beyond the source, or annotated
regions. The writer keeps those in a side file, ``leukolens.json``, beside ``Annotations``; with it a data set reads
back without loss, and without it (a VOC set from elsewhere) the reader makes no use of it and reports nothing extra::

    {"name": "BCCD", "vocabulary": "blood-cells", "classes": ["WBC", "RBC", "Platelets"], "attribute_schema": "lld",
     "domains": {"<stem>": {"source": "BCCD", ...}}, "regions": {"<stem>": [[x1, y1, x2, y2], ...]},
     "splits": ["train", "val", "test"]}
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

from defusedxml.common import EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser

from leukolens.errors import atomic_write_text
from leukolens.io.attributes import AttributeProblem, guess_schema, named_attribute
from leukolens.io.common import (
    InputError,
    Problem,
    ProblemLog,
    WriteReport,
    find_image,
    format_number,
    image_size,
    json_number,
    outside_image,
    place_image,
    read_lines,
)
from leukolens.records import (
    BLOOD_CELLS,
    SCHEMAS,
    SPLITS,
    VOCABULARIES,
    AttributeSchema,
    Box,
    BoxFormat,
    Cell,
    Dataset,
    Domain,
    Field,
    Vocabulary,
)

SIDE_FILE = "leukolens.json"
ANNOTATIONS = "Annotations"
IMAGES = "JPEGImages"
SPLIT_FOLDER = Path("ImageSets") / "Main"
UNKNOWN_DATABASE = "Unknown"  # what labelImg writes in <source><database> when it knows nothing
_BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


# ------------------------------------------------------------------------------------------------------ XML
@dataclass
class XmlFile:
    """A parsed annotation file and the line each element starts on."""

    path: Path
    root: ET.Element
    lines: dict[ET.Element, int]

    def line(self, element: ET.Element | None) -> int | None:
        return self.lines.get(element) if element is not None else None


class XmlProblem(Exception):
    """An annotation file that is not well-formed, or not safe, XML."""

    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


class _LineTarget:
    """An ElementTree builder that notes the line each element starts on."""

    def __init__(self) -> None:
        self.builder = ET.TreeBuilder()
        self.lines: dict[ET.Element, int] = {}
        self.parser: DefusedXMLParser | None = None

    def start(self, tag: str, attributes: dict[str, str]) -> ET.Element:
        element = self.builder.start(tag, attributes)
        self.lines[element] = self.parser.parser.CurrentLineNumber
        return element

    def end(self, tag: str) -> ET.Element:
        return self.builder.end(tag)

    def data(self, text: str) -> None:
        self.builder.data(text)

    def close(self) -> ET.Element:
        return self.builder.close()


def parse_xml(path: Path) -> XmlFile:
    """Parse an XML file safely, keeping each element's line number (ElementTree's own parser does not).

    Entity declarations (the "billion laughs" expansion) and external references are refused (defusedxml).

    Raises:
        XmlProblem: the file is not well-formed XML, or declares entities or external references.
        OSError: the file cannot be read.
    """
    data = path.read_bytes()
    target = _LineTarget()
    parser = DefusedXMLParser(target=target)
    target.parser = parser
    try:
        parser.feed(data)
        root = parser.close()
    except ET.ParseError as error:
        line, column = error.position
        raise XmlProblem(line, f"not well-formed XML: {expat.ErrorString(error.code)} (column {column + 1})") from None
    except EntitiesForbidden as error:
        raise XmlProblem(
            parser.parser.CurrentLineNumber,
            f"declares the entity {error.name!r}; entity declarations are refused (they can expand without bound)",
        ) from None
    except ExternalReferenceForbidden as error:
        raise XmlProblem(
            parser.parser.CurrentLineNumber, f"refers to an external resource ({error.sysid!r}); refused"
        ) from None
    return XmlFile(path, root, target.lines)


def _text(element: ET.Element, path: str) -> str:
    return (element.findtext(path) or "").strip()


# ------------------------------------------------------------------------------------------------------ side file
@dataclass
class SideFile:
    """What ``leukolens.json`` keeps that VOC cannot; empty when there is no side file."""

    path: Path
    classes: Vocabulary | None = None
    schema_given: bool = False
    schema: AttributeSchema | None = None
    domains: dict[str, Domain] = field(default_factory=dict)
    regions: dict[str, list] = field(default_factory=dict)  # stem -> raw [x1, y1, x2, y2] lists
    splits: tuple[str, ...] = SPLITS
    name: str | None = None  # the data set's name


def read_side_file(path: Path, log: ProblemLog) -> SideFile:
    """The side file at ``path``; a broken one is logged and read as absent (the VOC files still read)."""
    side = SideFile(path)
    if not path.is_file():
        return side
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        log.add(path, None, "bad-side-file", f"cannot read the side file ({error}); ignored")
        return side
    except json.JSONDecodeError as error:
        log.add(path, error.lineno, "bad-side-file", f"not valid JSON ({error.msg}); ignored")
        return side
    if not isinstance(spec, dict):
        log.add(path, None, "bad-side-file", "expected a JSON object; ignored")
        return side
    side.name = spec["name"] if isinstance(spec.get("name"), str) and spec["name"] else None
    side.classes = _side_vocabulary(spec, path, log)
    if "attribute_schema" in spec:
        name = spec["attribute_schema"]
        if name is None or (isinstance(name, str) and name in SCHEMAS):
            side.schema_given, side.schema = True, SCHEMAS.get(name)
        else:
            log.add(path, None, "unknown-schema", f"attribute_schema {name!r} is not one of {', '.join(SCHEMAS)}")
    domains = spec.get("domains") if isinstance(spec.get("domains"), dict) else {}
    for stem, values in domains.items():
        try:
            if not isinstance(values, dict):
                raise ValueError(f"expected an object of domain values, got {values!r}")
            side.domains[stem] = Domain.from_dict(values)
        except ValueError as error:
            log.add(path, None, "bad-domain", f"domain of {stem!r}: {error}")
    regions = spec.get("regions") if isinstance(spec.get("regions"), dict) else {}
    side.regions = {stem: list(r) for stem, r in regions.items() if isinstance(r, list)}
    splits = spec.get("splits")
    if isinstance(splits, list) and all(isinstance(s, str) for s in splits):
        side.splits = tuple(dict.fromkeys([*SPLITS, *splits]))
    return side


def _side_vocabulary(spec: dict, path: Path, log: ProblemLog) -> Vocabulary | None:
    name = spec.get("vocabulary") if isinstance(spec.get("vocabulary"), str) else None
    classes = spec.get("classes")
    if isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes):
        known = VOCABULARIES.get(name)
        if known is not None and known.names == tuple(classes):
            return known
        try:
            return Vocabulary(name if isinstance(name, str) and name else "voc", tuple(classes))
        except ValueError as error:
            log.add(path, None, "bad-side-file", f"{error}; the class list is ignored")
            return None
    if name in VOCABULARIES:
        return VOCABULARIES[name]
    if name is not None:
        log.add(path, None, "bad-side-file", f"vocabulary {name!r} is not known and no 'classes' list is given")
    return None


# ------------------------------------------------------------------------------------------------------ reading
def find_voc_root(root: Path) -> Path:
    """The folder holding ``Annotations``: ``root`` itself or its one subfolder that has it.

    Raises:
        InputError: neither.
    """
    root = Path(root)
    if (root / ANNOTATIONS).is_dir():
        return root
    if root.is_dir():
        found = sorted(p for p in root.iterdir() if (p / ANNOTATIONS).is_dir())
        if len(found) == 1:
            return found[0]
    raise InputError(
        Problem(str(root), None, "layout", f"no Pascal VOC layout: expected {ANNOTATIONS}/ here or in one subfolder")
    )


def read_splits(base: Path, names: tuple[str, ...], stems: set[str], log: ProblemLog) -> dict[str, str]:
    """Image stem -> split, from ``ImageSets/Main/<split>.txt``; the first listing of a stem wins."""
    splits: dict[str, str] = {}
    where: dict[str, tuple[Path, int]] = {}
    for split in names:
        path = base / SPLIT_FOLDER / f"{split}.txt"
        if not path.is_file():
            continue
        for number, text in read_lines(path, log) or []:
            stem = text.split()[0]
            if stem not in stems:
                log.add(path, number, "missing-annotation", f"{stem!r} has no file in {ANNOTATIONS}/")
            elif stem in splits:
                first, line = where[stem]
                log.add(
                    path,
                    number,
                    "duplicate",
                    f"{stem!r} is already in split {splits[stem]!r} ({first.name}:{line}); the first is kept",
                )
            else:
                splits[stem] = split
                where[stem] = (path, number)
    return splits


@dataclass
class _Context:
    """What reading one annotation file needs from the data set around it."""

    base: Path
    classes: Vocabulary | None  # given by the side file: names outside it are errors
    schema: AttributeSchema | None
    side: SideFile
    splits: dict[str, str]
    log: ProblemLog


def _find_voc_image(base: Path, xml: XmlFile) -> Path | None:
    """``JPEGImages/<filename>``, else an image with the annotation's stem, else the ``<path>`` it names."""
    images = base / IMAGES
    filename = _text(xml.root, "filename")
    if filename and (images / filename).is_file():
        return images / filename
    found = find_image(images, xml.path.stem) if images.is_dir() else None
    if found is not None:
        return found
    path = _text(xml.root, "path")
    if path and (base / path).is_file():  # an absolute <path> stays absolute
        return base / path
    return None


def _declared_size(xml: XmlFile) -> tuple[int, int] | None:
    try:
        width, height = float(_text(xml.root, "size/width")), float(_text(xml.root, "size/height"))
    except ValueError:
        return None
    if not all(math.isfinite(v) and v > 0 and v == int(v) for v in (width, height)):
        return None
    return int(width), int(height)


def _read_box(obj: ET.Element, xml: XmlFile, size: tuple[int, int], label: str, log: ProblemLog) -> Box | None:
    bndbox = obj.find("bndbox")
    line = xml.line(bndbox) or xml.line(obj)
    if bndbox is None:
        log.add(xml.path, line, "bad-object", f"{label} object has no <bndbox>", label=label)
        return None
    try:
        values = tuple(float(_text(bndbox, key)) for key in _BOX_KEYS)
    except ValueError:
        raw = ", ".join(f"{k}={_text(bndbox, k)!r}" for k in _BOX_KEYS)
        log.add(xml.path, line, "bad-object", f"{label} box has a missing or non-numeric corner ({raw})", label=label)
        return None
    if not all(math.isfinite(v) for v in values):
        log.add(xml.path, line, "bad-object", f"{label} box {values} is not finite", label=label)
        return None
    x1, y1, x2, y2 = values
    shown = ", ".join(format_number(v) for v in values)
    if x2 <= x1 or y2 <= y1:
        log.add(
            xml.path,
            line,
            "box-range",
            f"{label} box ({shown}) has xmax <= xmin or ymax <= ymin (width {x2 - x1:g}, height {y2 - y1:g})",
            label=label,
        )
        return None
    if outside_image(x1, y1, x2, y2, size):
        log.add(
            xml.path,
            line,
            "box-range",
            f"{label} box ({shown}) reaches outside the {size[0]}x{size[1]} image",
            label=label,
        )
        return None
    return Box(values, BoxFormat.XYXY, normalized=False)


def _read_attributes(obj: ET.Element, xml: XmlFile, label: str, context: _Context) -> dict[str, str]:
    """CVAT-style attributes of one object; a bad one is logged and left out."""
    attributes: dict[str, str] = {}
    for element in obj.iterfind("attributes/attribute"):
        try:
            name, value = named_attribute(context.schema, _text(element, "name"), _text(element, "value"))
        except AttributeProblem as problem:
            context.log.add(xml.path, xml.line(element), problem.kind, f"{label} object: {problem}; left out")
            continue
        attributes[name] = value
    return attributes


def _read_cells(xml: XmlFile, size: tuple[int, int], context: _Context) -> list[Cell]:
    cells: list[Cell] = []
    seen: dict[tuple, int | None] = {}
    for obj in xml.root.iter("object"):
        label = _text(obj, "name")
        name_line = xml.line(obj.find("name")) or xml.line(obj)
        if not label:
            context.log.add(xml.path, name_line, "bad-object", "object has no <name>")
            continue
        if context.classes is not None and label not in context.classes:
            context.log.add(
                xml.path,
                name_line,
                "unknown-class",
                f"class {label!r} is not in vocabulary {context.classes.name!r} ({', '.join(context.classes.names)})",
                label=label,
            )
            continue
        box = _read_box(obj, xml, size, label, context.log)
        if box is None:
            continue
        key = (label, box.values)
        if key in seen:
            context.log.add(
                xml.path,
                xml.line(obj),
                "duplicate",
                f"{label} box ({', '.join(format_number(v) for v in box.values)}) repeats the object at "
                f"line {seen[key]}; the first is kept",
                label=label,
            )
            continue
        seen[key] = xml.line(obj)
        cells.append(Cell(box, label, _read_attributes(obj, xml, label, context)))
    return cells


def _read_regions(stem: str, size: tuple[int, int], context: _Context) -> list[Box]:
    regions = []
    for raw in context.side.regions.get(stem, []):
        ok = isinstance(raw, list) and len(raw) == 4 and all(isinstance(v, (int, float)) for v in raw)
        if ok:
            x1, y1, x2, y2 = (float(v) for v in raw)
            ok = x1 < x2 and y1 < y2 and not outside_image(x1, y1, x2, y2, size)
        if not ok:
            context.log.add(
                context.side.path,
                None,
                "region-range",
                f"annotated region {raw!r} of {stem!r} is not inside the {size[0]}x{size[1]} image",
            )
            continue
        regions.append(Box(tuple(raw), BoxFormat.XYXY, normalized=False))
    return regions


def _read_field(xml: XmlFile, context: _Context) -> Field | None:
    """One annotation file as a field; None (and a logged problem) when its image or size cannot be found."""
    stem = xml.path.stem
    image = _find_voc_image(context.base, xml)
    if image is None:
        filename = _text(xml.root, "filename") or f"{stem}.*"
        context.log.add(
            xml.path,
            xml.line(xml.root.find("filename")),
            "missing-image",
            f"image {filename!r} not found in {context.base / IMAGES}",
        )
        return None
    size = _declared_size(xml)
    if size is None:  # labelImg writes 0x0 when it could not read the image
        try:
            size = image_size(image)
        except InputError as error:
            context.log.add(xml.path, None, error.problem.kind, f"{image.name}: {error.problem.message}")
            return None
    database = _text(xml.root, "source/database")
    domain = context.side.domains.get(stem)
    if domain is None:
        domain = Domain(source=database if database and database != UNKNOWN_DATABASE else context.base.name)
    cells = _read_cells(xml, size, context)
    regions = _read_regions(stem, size, context)
    return Field(image, size[0], size[1], cells, regions, domain, context.splits.get(stem))


def _parse_all(base: Path, log: ProblemLog) -> list[XmlFile]:
    files = []
    for path in sorted((base / ANNOTATIONS).glob("*.xml")):
        try:
            xml = parse_xml(path)
        except XmlProblem as problem:
            log.add(path, problem.line, "bad-xml", problem.message)
            continue
        except OSError as error:
            log.add(path, None, "bad-xml", f"cannot read the file ({error.strerror})")
            continue
        if xml.root.tag != "annotation":
            log.add(path, xml.line(xml.root), "bad-xml", f"root element is <{xml.root.tag}>, not <annotation>")
            continue
        files.append(xml)
    return files


def _vocabulary_of(files: list[XmlFile], name: str) -> Vocabulary:
    """BCCD's three classes when every name is one of them, else the names found, sorted."""
    names = {_text(obj, "name") for xml in files for obj in xml.root.iter("object")} - {""}
    if names and names <= set(BLOOD_CELLS.names):
        return BLOOD_CELLS
    return Vocabulary(name, tuple(sorted(names)))


def read_voc(root: Path, *, log: ProblemLog) -> Dataset:
    """Read a Pascal VOC data set (BCCD's layout), with the ``leukolens.json`` side file when there is one.

    Bad items (an annotation file, an object, an attribute) are logged in ``log`` with the file and line and skipped.

    Args:
        root: the folder holding ``Annotations/``, or its parent.
        log: where problems go; a strict log raises at the first one.

    Raises:
        InputError: no VOC layout at ``root``, or any problem in strict mode.
    """
    base = find_voc_root(Path(root))
    side = read_side_file(base / SIDE_FILE, log)
    files = _parse_all(base, log)
    # Stems of every annotation file, parsed or not: a broken one is reported once, as bad XML.
    stems = {p.stem for p in (base / ANNOTATIONS).glob("*.xml")}
    splits = read_splits(base, side.splits, stems, log)
    if side.schema_given:
        schema = side.schema
    else:
        schema = guess_schema(_text(a, "name") for xml in files for a in xml.root.iter("attribute"))
    context = _Context(base, side.classes, schema, side, splits, log)
    fields = [f for f in (_read_field(xml, context) for xml in files) if f is not None]
    classes = side.classes or _vocabulary_of(files, "voc")
    # Named after the folder the user gave (as the other readers do); domains take BCCD's own folder name.
    return Dataset(fields, classes, schema, name=side.name or Path(root).name)


# ------------------------------------------------------------------------------------------------------ writing
def _add(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = text
    return element


def _object_element(parent: ET.Element, cell: Cell, field: Field) -> None:
    obj = _add(parent, "object")
    _add(obj, "name", cell.label)
    _add(obj, "pose", "Unspecified")
    _add(obj, "truncated", "0")
    _add(obj, "difficult", "0")
    bndbox = _add(obj, "bndbox")
    for key, value in zip(_BOX_KEYS, cell.box.pixels_xyxy(field.size)):
        _add(bndbox, key, format_number(value))
    if cell.attributes:
        attributes = _add(obj, "attributes")
        for name, value in cell.attributes.items():
            attribute = _add(attributes, "attribute")
            _add(attribute, "name", name)
            _add(attribute, "value", value)


def annotation_xml(field: Field, image: Path, classes: Vocabulary) -> str:
    """The VOC annotation file of one field (cells outside ``classes`` are left to the caller to drop)."""
    root = ET.Element("annotation")
    _add(root, "folder", IMAGES)
    _add(root, "filename", Path(field.image).name)
    _add(root, "path", os.path.abspath(image))
    _add(_add(root, "source"), "database", field.domain.source or UNKNOWN_DATABASE)
    size = _add(root, "size")
    _add(size, "width", format_number(field.width))
    _add(size, "height", format_number(field.height))
    _add(size, "depth", "3")
    _add(root, "segmented", "0")
    for cell in field.cells:
        if cell.label in classes:
            _object_element(root, cell, field)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def _side_spec(dataset: Dataset, fields: list[Field], splits: list[str]) -> dict:
    regions = {
        Path(f.image).stem: [[json_number(v) for v in r.pixels_xyxy(f.size)] for r in f.regions]
        for f in fields
        if f.regions
    }
    return {
        "name": dataset.name,
        "vocabulary": dataset.classes.name,
        "classes": list(dataset.classes.names),
        "attribute_schema": dataset.schema.name if dataset.schema is not None else None,
        "domains": {Path(f.image).stem: f.domain.as_dict() for f in fields},
        "regions": regions,
        "splits": splits,
    }


def write_voc(dataset: Dataset, out: Path, *, images: str = "link") -> WriteReport:
    """Write Pascal VOC: annotation files, images, split lists, and the ``leukolens.json`` side file.

    Args:
        dataset: what to write.
        out: the data set folder (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/`` go in it).
        images: ``link`` (symlink), ``copy``, or ``none`` (leave them; each file's ``<path>`` names the original).
    """
    out = Path(out)
    report = WriteReport(out)
    written: list[Field] = []
    stems: set[str] = set()
    for f in dataset.fields:
        stem = Path(f.image).stem
        if stem in stems:
            report.drop("fields whose image stem repeats an earlier field's (VOC names annotation files by stem)")
            continue
        stems.add(stem)
        report.drop("cells whose class is not in the vocabulary", sum(c.label not in dataset.classes for c in f.cells))
        image = place_image(f.image, out / IMAGES / Path(f.image).name, images)
        atomic_write_text(out / ANNOTATIONS / f"{stem}.xml", annotation_xml(f, image, dataset.classes))
        written.append(f)
        report.files += 1
        report.fields += 1
        report.cells += sum(c.label in dataset.classes for c in f.cells)
    splits = list(dict.fromkeys(f.split for f in written if f.split))
    lists = {split: [Path(f.image).stem for f in written if f.split == split] for split in splits}
    if ("train" in lists or "val" in lists) and "trainval" not in lists:
        # Other VOC tools train on trainval.txt; the reader here ignores it.
        lists["trainval"] = [Path(f.image).stem for f in written if f.split in ("train", "val")]
    for split, stems_of_split in lists.items():
        atomic_write_text(out / SPLIT_FOLDER / f"{split}.txt", "".join(s + "\n" for s in stems_of_split))
        report.files += 1
    atomic_write_text(out / SIDE_FILE, json.dumps(_side_spec(dataset, written, splits), indent=1) + "\n")
    report.files += 1
    return report
