"""COCO JSON with per-box attributes, annotated regions, domain metadata and splits.

The layout written here is plain COCO (so ``pycocotools`` and ``faster_coco_eval`` load it) plus a few keys that
keep everything a :class:`~leukolens.records.Dataset` holds, so that reading back what was written loses nothing:

- ``info``: ``description`` (the data set name), ``leukolens_vocabulary`` (the vocabulary's name) and
  ``attribute_schema`` (the schema's name, or null).
- ``categories``: ``id`` = class index + 1 and ``name``, in vocabulary order, so classes without boxes survive.
- ``images``: ``id``, ``file_name`` (relative to the JSON file's folder when the image is under it, else absolute),
  ``width``, ``height``, and ``split``, ``domain`` (the known :class:`~leukolens.records.Domain` values) and
  ``annotated_regions`` (a list of ``[x1, y1, x2, y2]`` in pixels; empty means the whole field is annotated).
- ``annotations``: ``id``, ``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]`` in pixels, ``area``,
  ``iscrowd`` 0, and ``attributes`` (attribute name -> value name, or the literal ``"not applicable"`` /
  ``"unknown"``).

The reader also accepts LLD's COCO variant, where each annotation carries the attributes as top-level integer codes
(``nuclear_chromatio`` [sic], ``nuclear_shape``, ... and optionally ``cell_size``; see ``shared/formats/lld.md``).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

from leukolens.errors import atomic_write_text
from leukolens.io.attributes import AttributeProblem, guess_schema, named_attribute
from leukolens.io.common import (
    InputError,
    Problem,
    ProblemLog,
    WriteReport,
    image_size,
    json_number,
    outside_image,
    place_image,
)
from leukolens.records import (
    LLD_SCHEMA,
    SCHEMAS,
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

DEFAULT_JSON_NAME = "annotations.json"

# Keys of a COCO annotation that are never attribute codes, whatever the schema's aliases say.
_COCO_ANNOTATION_KEYS = frozenset(
    {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation", "attributes", "score", "keypoints"}
)


def _lld_code_keys(annotation: dict) -> list[str]:
    """Top-level keys of an annotation that are LLD attribute codes (the LLD COCO variant)."""
    return [
        key
        for key in annotation
        if key not in _COCO_ANNOTATION_KEYS and LLD_SCHEMA.canonical_name(key) in LLD_SCHEMA.names
    ]


def _choose_schema(info: dict, annotations: list, path: Path, log: ProblemLog) -> AttributeSchema | None:
    """The schema named in ``info``, else LLD when LLD code keys are seen, else one that knows every attribute."""
    if "attribute_schema" in info:
        name = info["attribute_schema"]
        if name is None:  # written by us for a data set without a schema
            return None
        if isinstance(name, str) and name in SCHEMAS:
            return SCHEMAS[name]
        log.add(
            path,
            None,
            "unknown-schema",
            f"info.attribute_schema {name!r} is not a known schema ({', '.join(SCHEMAS)}); guessing from the keys",
        )
    records = [a for a in annotations if isinstance(a, dict)]
    if any(_lld_code_keys(a) for a in records):
        return LLD_SCHEMA
    names = {n for a in records if isinstance(a.get("attributes"), dict) for n in a["attributes"]}
    return guess_schema(names)


# ------------------------------------------------------------------------------------------------------ reading
def _load_json(path: Path) -> dict:
    """The parsed file; anything that stops reading it at all raises.

    Raises:
        InputError: missing, not UTF-8, not JSON, or not a COCO object with an ``images`` list.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(Problem(str(path), None, "not-found", "COCO file not found")) from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(Problem(str(path), None, "unreadable", f"cannot read COCO file ({error})")) from None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            Problem(str(path), error.lineno, "bad-json", f"not valid JSON: {error.msg} (column {error.colno})")
        ) from None
    if not isinstance(spec, dict) or not isinstance(spec.get("images"), list):
        raise InputError(Problem(str(path), None, "bad-coco", "not a COCO file: no 'images' list at the top level"))
    return spec


def _read_categories(spec: dict, info: dict, path: Path, log: ProblemLog) -> tuple[Vocabulary, dict]:
    """The vocabulary (categories in id order) and category id -> class name."""
    categories = spec.get("categories") or []
    if not isinstance(categories, list):
        raise InputError(Problem(str(path), None, "bad-coco", "'categories' is not a list"))
    valid = []
    for category in categories:
        if not isinstance(category, dict) or not _is_int(category.get("id")) or "name" not in category:
            log.add(path, None, "bad-entry", f"category {category!r} needs an integer 'id' and a 'name'")
            continue
        valid.append(category)
    names_by_id: dict[int, str] = {}
    for category in sorted(valid, key=lambda c: c["id"]):
        name = str(category["name"])
        if category["id"] in names_by_id or name in names_by_id.values():
            log.add(path, None, "duplicate", f"category id {category['id']} ({name!r}) repeats an earlier id or name")
            continue
        names_by_id[category["id"]] = name
    names = tuple(names_by_id.values())
    declared = info.get("leukolens_vocabulary")
    declared = declared if isinstance(declared, str) and declared else None
    known = VOCABULARIES.get(declared) if declared else None
    if known is not None and known.names == names:
        return known, names_by_id
    # A vocabulary of one's own keeps its declared name; a known name with other classes would be a lie.
    name = declared if declared and known is None else path.stem
    return Vocabulary(name, names), names_by_id


def _find_image(file_name: str, json_folder: Path, image_root: Path | None) -> Path | None:
    """The image file: ``file_name`` under ``image_root`` (or the JSON's folder), else ``images/`` beside or above."""
    base = image_root if image_root is not None else json_folder
    basename = Path(file_name).name
    for candidate in (base / file_name, json_folder / "images" / basename, json_folder.parent / "images" / basename):
        if candidate.is_file():
            return candidate
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_id(value: object) -> bool:
    """Whether a JSON value can be an image or annotation id (and a dict key)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if value != int(value) or value <= 0:
        return None
    return int(value)


def _numbers(value: object) -> tuple[float, float, float, float] | None:
    """Four finite numbers, or None."""
    if not isinstance(value, list) or len(value) != 4:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return None
    return tuple(float(v) for v in value)


def _read_regions(image: dict, size: tuple[int, int], where: str, path: Path, log: ProblemLog) -> list[Box]:
    regions = []
    listed = image.get("annotated_regions") or []
    if not isinstance(listed, list):
        log.add(path, None, "bad-entry", f"{where}: annotated_regions {listed!r} is not a list of regions")
        return regions
    for raw in listed:
        values = _numbers(raw)
        if values is None:
            log.add(path, None, "bad-entry", f"{where}: annotated region {raw!r} is not four numbers")
            continue
        x1, y1, x2, y2 = values
        if x2 <= x1 or y2 <= y1 or outside_image(x1, y1, x2, y2, size):
            log.add(
                path,
                None,
                "region-range",
                f"{where}: annotated region {raw} is empty or not inside the {size[0]}x{size[1]} image",
            )
            continue
        regions.append(Box(values, BoxFormat.XYXY, normalized=False))
    return regions


def _read_domain(image: dict, where: str, path: Path, log: ProblemLog) -> Domain:
    values = image.get("domain") or {}
    try:
        if not isinstance(values, dict):
            raise ValueError(f"expected an object of domain values, got {values!r}")
        return Domain.from_dict(values)
    except ValueError as error:
        log.add(path, None, "bad-domain", f"{where}: {error}")
        return Domain()


def _read_image(
    image: object, json_folder: Path, image_root: Path | None, path: Path, log: ProblemLog, annotations: int
) -> Field | None:
    """One ``images`` entry as a field without cells; None (and a logged problem) when it cannot be used."""
    if not isinstance(image, dict) or not isinstance(image.get("file_name"), str) or not _is_id(image.get("id")):
        log.add(path, None, "bad-entry", f"image entry {str(image)[:80]} needs an 'id' and a 'file_name'")
        return None
    where = f"image id {image['id']} ({image['file_name']!r})"
    found = _find_image(image["file_name"], json_folder, image_root)
    if found is None:
        skipped = ""
        if annotations:
            skipped = f"; its {annotations} annotation{'s are' if annotations > 1 else ' is'} skipped"
        log.add(path, None, "missing-image", f"{where}: image file not found{skipped}")
        return None
    width, height = _positive_int(image.get("width")), _positive_int(image.get("height"))
    if width is None or height is None:  # only then open the file, and only its header
        try:
            width, height = image_size(found)
        except InputError as error:
            log.add(path, None, error.problem.kind, f"{where}: {error.problem.message}")
            return None
    split = image.get("split")
    if split is not None and not isinstance(split, str):
        log.add(path, None, "bad-entry", f"{where}: split {split!r} is not a string; read as no split")
        split = None
    regions = _read_regions(image, (width, height), where, path, log)
    return Field(found, width, height, [], regions, _read_domain(image, where, path, log), split)


def _read_box(
    annotation: dict, size: tuple[int, int], label: str, where: str, path: Path, log: ProblemLog
) -> Box | None:
    values = _numbers(annotation.get("bbox"))
    if values is None:
        log.add(path, None, "bad-entry", f"{where}: bbox {annotation.get('bbox')!r} is not four numbers", label=label)
        return None
    x, y, w, h = values
    if w <= 0 or h <= 0:
        which = "width" if w <= 0 else "height"
        log.add(
            path, None, "box-range", f"{where}: box {list(annotation['bbox'])} has non-positive {which}", label=label
        )
        return None
    if outside_image(x, y, x + w, y + h, size):
        log.add(
            path,
            None,
            "box-range",
            f"{where}: box {list(annotation['bbox'])} reaches outside the {size[0]}x{size[1]} image",
            label=label,
        )
        return None
    return Box(values, BoxFormat.XYWH, normalized=False)


def _read_attributes(
    annotation: dict, schema: AttributeSchema | None, where: str, path: Path, log: ProblemLog
) -> dict[str, str]:
    """The cell's attributes; a bad one is logged and left out, the others kept."""
    raw = annotation.get("attributes") or {}
    if not isinstance(raw, dict):
        log.add(path, None, "bad-entry", f"{where}: attributes {raw!r} is not an object")
        raw = {}
    pairs = list(raw.items())
    if schema is LLD_SCHEMA:
        pairs += [(key, annotation[key]) for key in _lld_code_keys(annotation)]
    attributes: dict[str, str] = {}
    for name, value in pairs:
        try:
            canonical, value_name = named_attribute(schema, name, value)
        except AttributeProblem as problem:
            log.add(path, None, problem.kind, f"{where}: {problem}; attribute left out")
            continue
        attributes[canonical] = value_name
    return attributes


@dataclass
class _Annotations:
    """Turns annotations into cells of the fields read so far; remembers ids to catch repeats."""

    fields: dict  # image id -> Field
    skipped_images: set  # ids of images that could not be read; their annotations go quietly
    names_by_id: dict[int, str]
    schema: AttributeSchema | None
    path: Path
    log: ProblemLog
    seen_ids: set = dataclass_field(default_factory=set)

    def add(self, annotation: object) -> None:
        """Append the annotation to its field as a cell, or log why it cannot be one."""
        if not isinstance(annotation, dict):
            self.log.add(self.path, None, "bad-entry", f"annotation {str(annotation)[:80]} is not an object")
            return
        category_id = annotation.get("category_id")
        label = self.names_by_id.get(category_id) if _is_id(category_id) else None
        found = self._field_of(annotation, label)
        if found is None:
            return
        field, where = found
        if label is None:
            self.log.add(
                self.path,
                None,
                "unknown-class",
                f"{where}: category_id {category_id!r} is not a category "
                f"({', '.join(f'{i} {n}' for i, n in self.names_by_id.items())})",
            )
            return
        box = _read_box(annotation, field.size, label, where, self.path, self.log)
        if box is not None:
            attributes = _read_attributes(annotation, self.schema, where, self.path, self.log)
            field.cells.append(Cell(box, label, attributes))

    def _field_of(self, annotation: dict, label: str | None) -> tuple[Field, str] | None:
        """The annotation's field and how to name the annotation in a message; None when it has no usable field."""
        annotation_id = annotation.get("id")
        where = f"annotation id {annotation_id}"
        image_id = annotation.get("image_id")
        if _is_id(image_id) and image_id in self.skipped_images:
            return None  # the image's own problem already says its annotations are skipped
        field = self.fields.get(image_id) if _is_id(image_id) else None
        if field is None:
            self.log.add(self.path, None, "orphan-annotation", f"{where}: no image has id {image_id!r}", label=label)
            return None
        where = f"{where} (image {Path(field.image).name!r})"
        if _is_id(annotation_id):
            if annotation_id in self.seen_ids:
                self.log.add(
                    self.path,
                    None,
                    "duplicate",
                    f"{where}: annotation id repeats an earlier one; the first is kept",
                    label=label,
                )
                return None
            self.seen_ids.add(annotation_id)
        return field, where


def read_coco(path: Path, *, log: ProblemLog, image_root: Path | None = None) -> Dataset:
    """Read a COCO JSON file (this project's layout, plain COCO, or LLD's COCO variant).

    Bad items (an annotation, an image entry, an attribute) are logged in ``log`` and skipped; the rest is read.
    Image pixels are not opened: sizes come from the JSON (from the image header only where the JSON has none).

    Args:
        path: the JSON file.
        log: where problems go; a strict log raises at the first one.
        image_root: folder that ``file_name`` is relative to; the JSON file's folder when None (then
            ``images/<name>`` beside the JSON file or beside its folder is tried too).

    Raises:
        InputError: the file cannot be read at all (missing, not JSON, not COCO), or any problem in strict mode.
    """
    path = Path(path)
    spec = _load_json(path)
    info = spec.get("info") if isinstance(spec.get("info"), dict) else {}
    annotations = spec.get("annotations") or []
    if not isinstance(annotations, list):
        raise InputError(Problem(str(path), None, "bad-coco", "'annotations' is not a list"))
    classes, names_by_id = _read_categories(spec, info, path, log)
    schema = _choose_schema(info, annotations, path, log)
    per_image = Counter(a.get("image_id") for a in annotations if isinstance(a, dict) and _is_id(a.get("image_id")))
    fields: dict = {}
    skipped: set = set()
    for image in spec["images"]:
        image_id = image.get("id") if isinstance(image, dict) else None
        if _is_id(image_id) and (image_id in fields or image_id in skipped):
            log.add(path, None, "duplicate", f"image id {image_id!r} repeats an earlier one; the first is kept")
            continue
        annotated = per_image.get(image_id, 0) if _is_id(image_id) else 0
        field = _read_image(image, path.parent, image_root, path, log, annotated)
        if field is None:
            if _is_id(image_id):
                skipped.add(image_id)
            continue
        fields[image_id] = field
    reader = _Annotations(fields, skipped, names_by_id, schema, path, log)
    for annotation in annotations:
        reader.add(annotation)
    name = info.get("description") if isinstance(info.get("description"), str) and info["description"] else path.stem
    return Dataset(list(fields.values()), classes, schema, name=name)


# ------------------------------------------------------------------------------------------------------ writing
def coco_json_path(out: Path) -> Path:
    """The JSON file to write for ``out``: itself when it names a .json file, else ``out/annotations.json``."""
    out = Path(out)
    if out.suffix.lower() == ".json" and not out.is_dir():
        return out
    return out / DEFAULT_JSON_NAME


def _file_name(image: Path, folder: Path) -> str:
    """``image`` relative to ``folder`` when it lies under it, else absolute."""
    for resolve in (os.path.abspath, os.path.realpath):
        try:
            return Path(resolve(image)).relative_to(resolve(folder)).as_posix()
        except ValueError:
            continue
    return os.path.abspath(image)


def _image_entry(image_id: int, file_name: str, field: Field) -> dict:
    return {
        "id": image_id,
        "file_name": file_name,
        "width": field.width,
        "height": field.height,
        "split": field.split,
        "domain": field.domain.as_dict(),
        "annotated_regions": [[json_number(v) for v in r.pixels_xyxy(field.size)] for r in field.regions],
    }


def _annotation_entry(annotation_id: int, image_id: int, category_id: int, cell: Cell, field: Field) -> dict:
    x, y, w, h = cell.box.convert(BoxFormat.XYWH, normalized=False, image_size=field.size).values
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [json_number(v) for v in (x, y, w, h)],
        "area": json_number(w * h),
        "iscrowd": 0,
        "attributes": dict(cell.attributes),
    }


def write_coco(dataset: Dataset, out: Path, *, images: str = "none") -> WriteReport:
    """Write a data set as one COCO JSON file that reads back without loss.

    Args:
        dataset: what to write.
        out: a ``.json`` file, or a folder to write ``annotations.json`` in.
        images: ``none`` leaves images where they are (``file_name`` points at them); ``link`` or ``copy`` puts them
            in ``images/`` beside the JSON file.
    """
    json_path = coco_json_path(out)
    folder = json_path.parent
    report = WriteReport(json_path)
    image_entries: list[dict] = []
    annotation_entries: list[dict] = []
    placed: set[str] = set()
    for f in dataset.fields:
        name = Path(f.image).name
        if images != "none" and name in placed:
            report.drop("fields whose image file name repeats an earlier field's (one images/ folder holds both)")
            continue
        placed.add(name)
        image = place_image(f.image, folder / "images" / name, images)
        image_id = len(image_entries) + 1
        image_entries.append(_image_entry(image_id, _file_name(image, folder), f))
        report.fields += 1
        for cell in f.cells:
            if cell.label not in dataset.classes:
                report.drop("cells whose class is not in the vocabulary")
                continue
            category_id = dataset.classes.index(cell.label) + 1
            annotation_entries.append(_annotation_entry(len(annotation_entries) + 1, image_id, category_id, cell, f))
            report.cells += 1
    spec = {
        "info": {
            "description": dataset.name,
            "leukolens_vocabulary": dataset.classes.name,
            "attribute_schema": dataset.schema.name if dataset.schema is not None else None,
        },
        "licenses": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(dataset.classes.names)],
        "images": image_entries,
        "annotations": annotation_entries,
    }
    atomic_write_text(json_path, json.dumps(spec, indent=1, ensure_ascii=False) + "\n")
    report.files = 1
    return report
