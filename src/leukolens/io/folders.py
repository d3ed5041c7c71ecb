"""Folder per class: single-cell crops sorted into one folder per class, the layout of Munich AML and most
classification sets.

Two layouts are read: ``root/<class>/<image>``, and ``root/<split>/<class>/<image>`` when every top folder is a split
name (train, val, test). Each image is one field holding one whole-image cell labelled with its folder's name.

:func:`write_folders` goes the other way and cuts every cell of every field into its own crop, so a detection data
set becomes a classification one.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from leukolens.errors import LeukolensError, atomic_write_bytes
from leukolens.io.common import (
    IMAGE_SUFFIXES,
    InputError,
    Problem,
    ProblemLog,
    WriteReport,
    image_size,
    place_image,
)
from leukolens.records import SPLITS, Cell, Dataset, Field, Vocabulary, whole_image_box

_PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")
"""Image modes PNG stores as they are; others (CMYK, YCbCr JPEGs) are converted to RGB first."""


# ------------------------------------------------------------------------------------------------------- reading
def read_folders(root: Path, *, log: ProblemLog, vocabulary: Vocabulary | None = None) -> Dataset:
    """A data set of single-cell crops from a folder per class.

    Args:
        root: ``root/<class>/<image>`` or ``root/<split>/<class>/<image>``.
        log: where problems are recorded: "not-an-image" (a file that is not an image, or a folder, inside a class
            folder), "bad-image" (an unreadable image header), "unknown-class" (a class folder outside
            ``vocabulary``), "no-class-folder" (an image lying outside any class folder).
        vocabulary: the classes; by default every class folder, sorted by name (empty folders included).

    Raises:
        InputError: ``root`` is not a folder, or (strict log) at the first problem.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(Problem(str(root), None, "not-found", "not a folder"))
    split_folders = _split_folders(root)
    class_parents = split_folders or {None: root}
    for parent in (root, *split_folders.values()):
        _report_loose_images(parent, log)
    class_folders = {split: _subfolders(parent) for split, parent in class_parents.items()}
    if vocabulary is None:
        names = sorted({folder.name for folders in class_folders.values() for folder in folders})
        vocabulary = Vocabulary(root.name, names)
    fields: list[Field] = []
    for split, folders in class_folders.items():
        for folder in folders:
            if folder.name not in vocabulary:
                log.add(
                    folder,
                    None,
                    "unknown-class",
                    f"class folder {folder.name!r} is not in vocabulary {vocabulary.name!r} "
                    f"({', '.join(vocabulary.names)}); its images are skipped",
                    label=folder.name,
                )
                continue
            fields.extend(_read_class_folder(folder, split, log))
    return Dataset(fields, vocabulary, None, name=root.name)


def _visible_entries(folder: Path) -> list[Path]:
    # Hidden entries (.DS_Store, ._name resource forks, .ipynb_checkpoints) are left there by tools, not annotators.
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _subfolders(folder: Path) -> list[Path]:
    return [p for p in _visible_entries(folder) if p.is_dir()]


def _split_folders(root: Path) -> dict[str, Path]:
    """Split name -> folder when every top folder is a split name; empty for the plain class layout."""
    top = _subfolders(root)
    if top and all(p.name in SPLITS for p in top):
        return {p.name: p for p in sorted(top, key=lambda p: SPLITS.index(p.name))}
    return {}


def _report_loose_images(folder: Path, log: ProblemLog) -> None:
    """Images beside the class folders have no class. Other loose files (README, LICENSE) are expected there."""
    for path in _visible_entries(folder):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            log.add(path, None, "no-class-folder", "image outside any class folder: it has no class and is skipped")


def _read_class_folder(folder: Path, split: str | None, log: ProblemLog) -> list[Field]:
    fields = []
    for path in _visible_entries(folder):
        if path.is_dir():
            log.add(path, None, "not-an-image", f"folder inside class folder {folder.name!r}: not read")
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            log.add(
                path,
                None,
                "not-an-image",
                f"not an image file (expected {', '.join(IMAGE_SUFFIXES)}) in class folder {folder.name!r}",
            )
            continue
        try:
            size = image_size(path)
        except InputError as error:
            log.add(path, None, "bad-image", error.problem.message, label=folder.name)
            continue
        cell = Cell(whole_image_box(size), folder.name)
        fields.append(Field(path, size[0], size[1], [cell], split=split))
    return fields


# ------------------------------------------------------------------------------------------------------- writing
def write_folders(dataset: Dataset, out: Path, *, images: str = "link", padding: float = 0.0) -> WriteReport:
    """Cut every cell into its own image under ``out/<split>/<class>/`` (``out/<class>/`` when no field has a split).

    A crop is named ``<field stem>_<cell index>.png``. A cell whose box covers the whole image, with no padding, is
    the image itself: it is placed under its own name with ``images`` ("link" or "copy") instead of being
    re-encoded. Every vocabulary class gets its folder, even when empty, so the classes survive a round trip (in
    sorted order: a folder layout has no other).

    Dropped and counted in the report: attributes, domain metadata, annotated regions, where each crop lay in its
    field, fields without cells, cells whose box lies outside the image, crops whose name another crop already took,
    and (when other fields have a split) fields without a split or with a split other than train/val/test.

    Args:
        dataset: the fields to cut.
        out: the output folder.
        images: how whole-image cells are placed: "link" (symlink) or "copy".
        padding: fraction of the box width and height added on each side of a crop, clipped to the image.

    Raises:
        LeukolensError: a bad option, or a class name that cannot be a folder name.
        InputError: an image that cannot be opened.
    """
    if images not in ("link", "copy"):
        raise LeukolensError(f"images={images!r}: a folder per class needs the images themselves; use link or copy")
    if padding < 0 or not math.isfinite(padding):
        raise LeukolensError(f"padding={padding}: use a fraction of the box size, 0 or more")
    out = Path(out)
    report = WriteReport(out)
    split_layout = any(f.split is not None for f in dataset.fields)
    _make_class_folders(dataset, out, split_layout)
    taken: set[Path] = set()
    for f in dataset.fields:
        folder = _split_folder(f, out, split_layout, report)
        if folder is not None:
            _write_field(f, folder, images, padding, taken, report)
    return report


def _make_class_folders(dataset: Dataset, out: Path, split_layout: bool) -> None:
    splits = sorted({f.split for f in dataset.fields if f.split in SPLITS}, key=SPLITS.index) if split_layout else []
    parents = [out / split for split in splits] or [out]
    labels = list(dataset.classes.names) + sorted({c.label for c in dataset.cells()} - set(dataset.classes.names))
    for label in labels:
        _check_folder_name(label)
        for parent in parents:
            (parent / label).mkdir(parents=True, exist_ok=True)


def _check_folder_name(label: str) -> None:
    if not label or label in (".", "..") or "/" in label or "\\" in label or label.startswith("."):
        raise LeukolensError(f"class {label!r} cannot be a folder name")


def _split_folder(f: Field, out: Path, split_layout: bool, report: WriteReport) -> Path | None:
    """Where a field's crops go, or None when the layout cannot say its split (counted in the report)."""
    if not split_layout:
        return out
    if f.split is None:
        report.drop("fields without a split beside fields with one")
        return None
    if f.split not in SPLITS:
        # A folder named after another split would be read back as a class folder.
        report.drop(f"fields of split {f.split!r} (only {', '.join(SPLITS)} can be folders)")
        return None
    return out / f.split


def _write_field(f: Field, folder: Path, images: str, padding: float, taken: set[Path], report: WriteReport) -> None:
    if f.domain.as_dict():
        report.drop("domain metadata (fields)")
    if f.regions:
        report.drop("annotated regions (fields)")
    if not f.cells:
        report.drop("fields without cells")
        return
    source: Image.Image | None = None  # opened only when a cell needs cutting
    try:
        for index, cell in enumerate(f.cells):
            if cell.attributes:
                report.drop("cell attributes")
            crop = _crop_box(cell, f.size, padding)
            if crop is None:
                report.drop("cells whose box lies outside the image")
                continue
            whole = crop == (0, 0, f.width, f.height) and padding == 0
            target = folder / cell.label / (Path(f.image).name if whole else f"{Path(f.image).stem}_{index}.png")
            if target in taken:
                report.drop("crops whose name another crop already took")
                continue
            taken.add(target)
            if whole:
                place_image(f.image, target, images)
            else:
                if source is None:
                    source = _open_image(Path(f.image))
                report.drop("where each crop lay in its field (cells cut out)")
                atomic_write_bytes(target, _png_bytes(source.crop(crop)))
            report.files += 1
            report.fields += 1
            report.cells += 1
    finally:
        if source is not None:
            source.close()


def _crop_box(cell: Cell, image_size: tuple[int, int], padding: float) -> tuple[int, int, int, int] | None:
    """The pixel rectangle of a cell with padding, clipped to the image; None when nothing of it is inside.

    The edges are rounded outwards so that a crop never cuts off part of the box.
    """
    width, height = image_size
    x1, y1, x2, y2 = cell.box.pixels_xyxy(image_size)
    pad_x, pad_y = padding * (x2 - x1), padding * (y2 - y1)
    left = max(0, math.floor(x1 - pad_x + 1e-6))  # the tolerance keeps 9.9999999 from becoming 9
    top = max(0, math.floor(y1 - pad_y + 1e-6))
    right = min(width, math.ceil(x2 + pad_x - 1e-6))
    bottom = min(height, math.ceil(y2 + pad_y - 1e-6))
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


def _open_image(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
    except FileNotFoundError:
        raise InputError(Problem(str(path), None, "missing-image", "image file not found")) from None
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(Problem(str(path), None, "bad-image", f"not a readable image ({error})")) from None
    try:
        image.load()
    except OSError as error:
        image.close()
        raise InputError(Problem(str(path), None, "bad-image", f"truncated or corrupt image ({error})")) from None
    return image


def _png_bytes(image: Image.Image) -> bytes:
    if image.mode not in _PNG_MODES:
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
