"""WBCAtt: eleven morphological attributes per PBC single-cell image, in CSV files joined to images by file name.

The published files (apple2373/wbcatt) are ``pbc_attr_v1_{train,val,test}.csv`` with the columns of
:data:`WBCATT_COLUMNS`. Their ``path`` column is relative to a PBC download that is rarely where the images are, so
images are found by file name under a few folders; a ``path`` that does name the image (as :func:`write_wbcatt`
writes it) is used first.

``re-annotation_pbc_attr_reannotations.csv`` holds a second annotator's labels for 1,000 of the same images. It is
never merged into the main annotation: :func:`read_wbcatt_rows` reads it as plain rows so that agreement between the
two annotators can be measured.

Three entry points:

- :func:`read_wbcatt` makes a data set of whole-image cells from the CSVs and the images they find.
- :func:`attach_wbcatt` puts the attributes onto the cells of a data set read from elsewhere (PBC from YOLO).
- :func:`write_wbcatt` writes one CSV per split.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from leukolens.errors import LeukolensError, atomic_write_text
from leukolens.io.common import (
    IMAGE_SUFFIXES,
    InputError,
    Problem,
    ProblemLog,
    WriteReport,
    image_size,
)
from leukolens.records import (
    LLD_SCHEMA,
    LLD_TO_WBCATT,
    SPLITS,
    WBCATT_CLASSES,
    WBCATT_SCHEMA,
    Cell,
    Dataset,
    Field,
    whole_image_box,
)

WBCATT_COLUMNS = ("img_name", "label", *WBCATT_SCHEMA.names, "path")
"""The published column order."""
REQUIRED_COLUMNS = WBCATT_COLUMNS[:-1]
"""``path`` may be missing: images are found by file name anyway."""

MAIN_CSV_GLOB = "pbc_attr_v1_*.csv"
UNSPLIT_CSV_NAME = "wbcatt.csv"
"""What :func:`write_wbcatt` calls the CSV of fields without a split."""
_SPLIT_FROM_NAME = re.compile(r"^pbc_attr_v1_(?P<split>.+)\.csv$")


@dataclass(frozen=True)
class WbcattRow:
    """One annotation row of a WBCAtt CSV, kept apart from any image.

    Attributes:
        csv_path: the CSV it came from.
        line: its line in that CSV (the header is line 1).
        img_name: the image file name, the key that joins a row to an image.
        label: the cell class, one of :data:`~leukolens.records.WBCATT_CLASSES`.
        attributes: the eleven WBCAtt attributes, name -> value, in schema order.
        split: "train", "val", "test" from the CSV's name, or None.
        path: the CSV's ``path`` column ("" when absent).
    """

    csv_path: Path
    line: int
    img_name: str
    label: str
    attributes: dict[str, str]
    split: str | None
    path: str = ""


@dataclass
class WbcattJoin:
    """How WBCAtt rows met the fields of a data set (see :func:`attach_wbcatt`): the rows and fields themselves, and
    their counts under the short names (``rows``, ``matched``, ...) that summaries print.

    Attributes:
        all_rows: every valid row read, duplicates removed.
        matched_rows: rows whose image is a single-cell field of the data set, with that field.
        unmatched_rows: rows whose image is not in the data set.
        not_single_cell_rows: rows whose image is a field with no cell or several cells (nothing attached), with it.
        fields_missing_row: fields that no row names.
        label_mismatch_rows: matched rows whose label differs from the cell's class (attributes were still attached),
            with their field.
    """

    all_rows: list[WbcattRow] = field(default_factory=list)
    matched_rows: list[tuple[WbcattRow, Field]] = field(default_factory=list)
    unmatched_rows: list[WbcattRow] = field(default_factory=list)
    not_single_cell_rows: list[tuple[WbcattRow, Field]] = field(default_factory=list)
    fields_missing_row: list[Field] = field(default_factory=list)
    label_mismatch_rows: list[tuple[WbcattRow, Field]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.all_rows)

    @property
    def matched(self) -> int:
        return len(self.matched_rows)

    @property
    def unmatched(self) -> int:
        return len(self.unmatched_rows)

    @property
    def not_single_cell(self) -> int:
        return len(self.not_single_cell_rows)

    @property
    def fields_without_row(self) -> int:
        return len(self.fields_missing_row)

    @property
    def label_mismatch(self) -> int:
        return len(self.label_mismatch_rows)


# ------------------------------------------------------------------------------------------------------- reading
def split_of(csv_path: Path) -> str | None:
    """The split a CSV's name gives (``pbc_attr_v1_train.csv`` -> "train"); None for any other name."""
    match = _SPLIT_FROM_NAME.match(Path(csv_path).name)
    return match.group("split") if match else None


def read_wbcatt_rows(csv_path: Path, *, log: ProblemLog) -> list[WbcattRow]:
    """The valid rows of one WBCAtt CSV, in file order; each bad row is logged and skipped.

    Args:
        csv_path: a ``pbc_attr_v1_*.csv``, the re-annotation CSV, or any CSV with the WBCAtt columns.
        log: where bad rows are recorded ("column-count", "unknown-class", "attribute-value", "duplicate").

    Raises:
        InputError: the file cannot be read, or its header lacks WBCAtt columns.
    """
    csv_path = Path(csv_path)
    text = _read_csv_text(csv_path)
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    columns = _column_positions(csv_path, header)
    split = split_of(csv_path)
    rows: list[WbcattRow] = []
    first_line: dict[str, int] = {}
    end_of_previous = reader.line_num
    for cells in reader:
        # A quoted cell may span lines: a row is reported at its first line, where an editor shows it.
        line, end_of_previous = end_of_previous + 1, reader.line_num
        if not any(c.strip() for c in cells):  # blank lines, e.g. a trailing one
            continue
        row = _parse_row(csv_path, line, cells, len(header), columns, split, log)
        if row is None:
            continue
        if row.img_name in first_line:
            log.add(
                csv_path,
                line,
                "duplicate",
                f"second row for {row.img_name!r} (first on line {first_line[row.img_name]}); keeping the first",
                label=row.label,
            )
            continue
        first_line[row.img_name] = line
        rows.append(row)
    return rows


def _read_csv_text(csv_path: Path) -> str:
    try:
        # utf-8-sig: spreadsheet programs often save CSVs with a byte-order mark.
        return csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(
            Problem(str(csv_path), None, "unreadable-labels", f"not a UTF-8 text file ({error.reason})")
        ) from None
    except OSError as error:
        raise InputError(
            Problem(str(csv_path), None, "unreadable-labels", f"cannot read WBCAtt CSV ({error.strerror})")
        ) from None


def _column_positions(csv_path: Path, header: list[str] | None) -> dict[str, int]:
    """Column name -> index, accepting the schema's alternative spellings (``cytoplasm_color``)."""
    if not header:
        raise InputError(Problem(str(csv_path), 1, "not-wbcatt", "empty file: not a WBCAtt CSV"))
    positions: dict[str, int] = {}
    for index, name in enumerate(header):
        key = name.strip().lower()
        if key not in ("img_name", "label", "path"):
            key = WBCATT_SCHEMA.canonical_name(key)
        positions.setdefault(key, index)
    missing = [c for c in REQUIRED_COLUMNS if c not in positions]
    if missing:
        raise InputError(
            Problem(
                str(csv_path),
                1,
                "not-wbcatt",
                f"not a WBCAtt CSV: the header lacks {', '.join(missing)} (expected {','.join(WBCATT_COLUMNS)})",
            )
        )
    return positions


def _parse_row(
    csv_path: Path, line: int, cells: list[str], width: int, columns: dict[str, int], split: str | None, log: ProblemLog
) -> WbcattRow | None:
    """One data row, or None after logging what is wrong with it."""
    if len(cells) != width:
        log.add(csv_path, line, "column-count", f"{len(cells)} cells where the header has {width} columns")
        return None
    value = {name: cells[index].strip() for name, index in columns.items()}
    img_name = value["img_name"]
    if not img_name:
        log.add(csv_path, line, "empty-value", "empty img_name")
        return None
    label = value["label"]
    if label not in WBCATT_CLASSES:
        log.add(
            csv_path,
            line,
            "unknown-class",
            f"{img_name}: label {label!r} is not a WBCAtt class ({', '.join(WBCATT_CLASSES.names)})",
            label=label,
        )
        return None
    attributes = {}
    for attribute in WBCATT_SCHEMA:
        given = value[attribute.name]
        # The files hold only real values: "unknown"/"not applicable" are not WBCAtt values (and write_wbcatt never
        # writes them), so they are refused like any other stray word.
        if given not in attribute.values:
            log.add(
                csv_path,
                line,
                "attribute-value",
                f"{img_name}: {attribute.name} {given!r} is not one of {', '.join(attribute.values)}",
                label=label,
            )
            return None
        attributes[attribute.name] = given
    return WbcattRow(csv_path, line, img_name, label, attributes, split, value.get("path", ""))


def _rows_of(csv_paths: list[Path], log: ProblemLog) -> list[WbcattRow]:
    """Rows of several CSVs; an image named again in a later CSV is a duplicate (the first CSV wins)."""
    rows: list[WbcattRow] = []
    seen: dict[str, WbcattRow] = {}
    for csv_path in csv_paths:
        for row in read_wbcatt_rows(csv_path, log=log):
            first = seen.get(row.img_name)
            if first is not None:
                log.add(
                    row.csv_path,
                    row.line,
                    "duplicate",
                    f"{row.img_name!r} already has a row in {first.csv_path}:{first.line}; keeping that one",
                    label=row.label,
                )
                continue
            seen[row.img_name] = row
            rows.append(row)
    return rows


def index_images(roots: list[Path]) -> dict[str, Path]:
    """Image file name -> path, searching each root recursively.

    When two images share a file name, the first root wins, and within a root the first path in sorted order.
    """
    index: dict[str, Path] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                index.setdefault(path.name, path)
    return index


def csv_files(path: Path) -> list[Path]:
    """The CSVs :func:`read_wbcatt` reads: ``path`` itself, or a folder's ``pbc_attr_v1_*.csv`` and ``wbcatt.csv``.

    The re-annotation CSV in the same folder is left out on purpose: it is a second opinion on images the main files
    already annotate.

    Raises:
        InputError: ``path`` does not exist or holds no WBCAtt CSV.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(Problem(str(path), None, "not-found", "no such file or folder"))
    found = sorted(path.glob(MAIN_CSV_GLOB), key=_split_order)
    if (path / UNSPLIT_CSV_NAME).is_file():
        found.append(path / UNSPLIT_CSV_NAME)
    if not found:
        raise InputError(
            Problem(str(path), None, "missing-labels", f"no {MAIN_CSV_GLOB} or {UNSPLIT_CSV_NAME} in this folder")
        )
    return found


def _split_order(csv_path: Path) -> tuple[int, str]:
    split = split_of(csv_path)
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), csv_path.name)


class _ImageFinder:
    """Finds a row's image: by its ``path`` column when that names the file, else by name under the roots.

    The recursive index is built only when a row needs it, since the default roots can be large folders.
    """

    def __init__(self, roots: list[Path]):
        self._roots = roots
        self._index: dict[str, Path] | None = None

    def find(self, row: WbcattRow) -> Path | None:
        if row.path:
            candidate = row.csv_path.parent / row.path  # an absolute path column stays absolute
            if candidate.name == row.img_name and candidate.is_file():
                return candidate
        if self._index is None:
            self._index = index_images(self._roots)
        return self._index.get(row.img_name)


def read_wbcatt(path: Path, *, log: ProblemLog, image_roots: list[Path] | None = None) -> Dataset:
    """A data set of single-cell crops with WBCAtt attributes: one field with one whole-image cell per row.

    Args:
        path: a WBCAtt CSV, or a folder of ``pbc_attr_v1_*.csv`` (see :func:`csv_files`).
        log: where problems are recorded; rows whose image is missing ("wbcatt-missing-image") or whose image header
            is unreadable ("bad-image") are skipped.
        image_roots: folders searched recursively for images by file name; by default the CSV's folder and its
            parent.

    Raises:
        InputError: a CSV cannot be read as WBCAtt, or (strict log) at the first problem.
    """
    paths = csv_files(path)
    if image_roots is None:
        folder = paths[0].parent
        image_roots = [folder, folder.parent]
    finder = _ImageFinder([Path(r) for r in image_roots])
    fields = []
    for row in _rows_of(paths, log):
        image = finder.find(row)
        if image is None:
            _log_missing_image(log, row)
            continue
        try:
            size = image_size(image)
        except InputError as error:
            log.add(error.problem.path, None, error.problem.kind, error.problem.message, label=row.label)
            continue
        cell = Cell(whole_image_box(size), row.label, dict(row.attributes))
        fields.append(Field(image, size[0], size[1], [cell], split=row.split))
    return Dataset(fields, WBCATT_CLASSES, WBCATT_SCHEMA, name="wbcatt")


def _log_missing_image(log: ProblemLog, row: WbcattRow) -> None:
    log.add(
        row.csv_path,
        row.line,
        "wbcatt-missing-image",
        f"row for {row.img_name!r} names an image that is not in the data set",
        label=row.label,
    )


# ------------------------------------------------------------------------------------------------------- joining
def attach_wbcatt(dataset: Dataset, csv_paths: list[Path], *, log: ProblemLog) -> WbcattJoin:
    """Put WBCAtt attributes on the cells of a data set of single-cell crops, matching rows to images by file name.

    The one cell of each matched field gets the row's attributes, and the data set's schema becomes
    :data:`~leukolens.records.WBCATT_SCHEMA`. Cell classes are left alone: a row whose label disagrees is attached
    anyway and listed in ``label_mismatch_rows``. Rows that name an image not in the data set are logged as
    "wbcatt-missing-image"; rows whose field has no cell or several cells as "wbcatt-cell-count"; label
    disagreements as "wbcatt-label-mismatch".

    Args:
        dataset: e.g. PBC read from its YOLO labels; changed in place.
        csv_paths: the WBCAtt CSVs to join (not the re-annotation CSV, unless that is what you mean to attach).
        log: where problems are recorded.

    Raises:
        LeukolensError: the data set already carries attributes of another schema.
    """
    if dataset.schema is not None and dataset.schema.name != WBCATT_SCHEMA.name:
        raise LeukolensError(
            f"data set {dataset.name!r} already has {dataset.schema.name} attributes; adding "
            "WBCAtt attributes would mix two schemas"
        )
    by_name: dict[str, list[Field]] = {}
    for f in dataset.fields:
        by_name.setdefault(Path(f.image).name, []).append(f)
    join = WbcattJoin(all_rows=_rows_of([Path(p) for p in csv_paths], log))
    named: set[str] = set()
    for row in join.all_rows:
        fields = by_name.get(row.img_name)
        if not fields:
            join.unmatched_rows.append(row)
            _log_missing_image(log, row)
            continue
        named.add(row.img_name)
        for f in fields:  # normally one; the same file name in two splits gets the same description
            _attach_row(row, f, join, log)
    join.fields_missing_row = [f for f in dataset.fields if Path(f.image).name not in named]
    dataset.schema = WBCATT_SCHEMA
    return join


def _attach_row(row: WbcattRow, f: Field, join: WbcattJoin, log: ProblemLog) -> None:
    if len(f.cells) != 1:
        join.not_single_cell_rows.append((row, f))
        log.add(
            row.csv_path,
            row.line,
            "wbcatt-cell-count",
            f"{row.img_name!r} has {len(f.cells)} cells; a WBCAtt row describes a single-cell image",
            label=row.label,
        )
        return
    cell = f.cells[0]
    cell.attributes = dict(row.attributes)
    join.matched_rows.append((row, f))
    if cell.label != row.label:
        join.label_mismatch_rows.append((row, f))
        log.add(
            row.csv_path,
            row.line,
            "wbcatt-label-mismatch",
            f"{row.img_name!r}: WBCAtt says {row.label!r}, the data set says {cell.label!r}",
        )


# ------------------------------------------------------------------------------------------------------- writing
def write_wbcatt(dataset: Dataset, out: Path) -> WriteReport:
    """Write one WBCAtt CSV per split into ``out``: ``pbc_attr_v1_<split>.csv``, or ``wbcatt.csv`` without a split.

    WBCAtt holds one whole-image cell per image with all eleven attributes known. Whatever else the data set carries
    is counted in the report's ``dropped``: fields without exactly one cell, boxes that are not the whole image,
    domain metadata, annotated regions, classes WBCAtt lacks, and cells whose attributes are not eleven known WBCAtt
    values (LLD attributes are mapped with :data:`~leukolens.records.LLD_TO_WBCATT`, which always leaves some
    unknown). The ``path`` column is the image path relative to ``out`` when the image lies inside it, else absolute.
    Images themselves are not copied.
    """
    out = Path(out)
    report = WriteReport(out)
    groups = dataset.splits or {None: []}  # an empty data set still gets a (header-only) CSV
    for split, fields in groups.items():
        rows = [row for f in fields if (row := _row_of(f, dataset, out, report)) is not None]
        name = UNSPLIT_CSV_NAME if split is None else f"pbc_attr_v1_{split}.csv"
        atomic_write_text(out / name, _csv_text(rows))
        report.files += 1
        report.fields += len(rows)
        report.cells += len(rows)
    return report


def _row_of(f: Field, dataset: Dataset, out: Path, report: WriteReport) -> list[str] | None:
    """The CSV row of one field, or None (counted in the report) when WBCAtt cannot hold it."""
    if f.domain.as_dict():
        report.drop("domain metadata (fields)")
    if f.regions:
        report.drop("annotated regions (fields)")
    if len(f.cells) != 1:
        report.drop("fields without a cell" if not f.cells else "fields with several cells")
        return None
    cell = f.cells[0]
    if cell.label not in WBCATT_CLASSES:
        report.drop("cells of a class WBCAtt lacks")
        return None
    attributes = _wbcatt_attributes(cell.attributes, dataset)
    if attributes is None:
        report.drop(_attribute_drop_reason(dataset))
        return None
    if not cell.box.close_to(whole_image_box(f.size), image_size=f.size, tolerance=0.5):
        report.drop("cell boxes other than the whole image (written as whole-image cells)")
    values = [attributes[name] for name in WBCATT_SCHEMA.names]
    return [Path(f.image).name, cell.label, *values, _path_column(Path(f.image), out)]


def _wbcatt_attributes(attributes: dict[str, str], dataset: Dataset) -> dict[str, str] | None:
    """The eleven WBCAtt values of a cell, or None when any is missing, unknown or not applicable."""
    if not attributes or dataset.schema is None:
        return None
    if dataset.schema.name == LLD_SCHEMA.name:
        attributes = LLD_TO_WBCATT.apply(attributes)
    elif dataset.schema.name != WBCATT_SCHEMA.name:
        return None
    complete = WBCATT_SCHEMA.complete(attributes)
    if any(value not in WBCATT_SCHEMA[name].values for name, value in complete.items()):
        return None
    return complete


def _attribute_drop_reason(dataset: Dataset) -> str:
    if dataset.schema is None:
        return "cells without WBCAtt attributes"
    if dataset.schema.name == LLD_SCHEMA.name:
        return "cells whose LLD attributes do not map to eleven known WBCAtt values"
    if dataset.schema.name != WBCATT_SCHEMA.name:
        return f"cells with attributes of schema {dataset.schema.name!r}"
    return "cells without all eleven WBCAtt attributes known"


def _path_column(image: Path, out: Path) -> str:
    image, out = Path(os.path.abspath(image)), Path(os.path.abspath(out))
    if image.is_relative_to(out):
        return image.relative_to(out).as_posix()
    return str(image)


def _csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(WBCATT_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue()
