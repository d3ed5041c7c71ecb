"""WBCAtt CSVs: hand-written fixtures (good and broken), the join onto PBC, and the real files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from leukolens.errors import LeukolensError
from leukolens.io.common import InputError, ProblemLog
from leukolens.io.wbcatt import (
    WBCATT_COLUMNS,
    attach_wbcatt,
    csv_files,
    index_images,
    read_wbcatt,
    read_wbcatt_rows,
    split_of,
    write_wbcatt,
)
from leukolens.records import (
    LLD_SCHEMA,
    PBC_CLASSES,
    WBCATT_CLASSES,
    WBCATT_SCHEMA,
    Box,
    BoxFormat,
    Cell,
    Dataset,
    Domain,
    Field,
    differences,
    whole_image_box,
)
from tests.conftest import make_image

HEADER = ",".join(WBCATT_COLUMNS)
NEUTROPHIL = "big,round,unsegmented-band,low,densely,no,clear,light blue,small,pink,yes"
LYMPHOCYTE = "small,irregular,irregular,high,densely,no,frosted,purple blue,nil,nil,no"
BASOPHIL = "big,irregular,unsegmented-round,low,densely,no,clear,light blue,coarse,purple,yes"


def attributes_of(values: str) -> dict[str, str]:
    return dict(zip(WBCATT_SCHEMA.names, values.split(",")))


def write_csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def row(name: str, label: str, values: str) -> str:
    return f"{name},{label},{values},PBC_dataset_normal_DIB/{label.lower()}/{name}"


@pytest.fixture
def pbc_like(tmp_path: Path) -> Path:
    """``tmp/wbcatt/*.csv`` beside ``tmp/train/images`` and ``tmp/val/images``, as in ../shared/data/pbc."""
    make_image(tmp_path / "train" / "images" / "BNE_1.jpg", (360, 363))
    make_image(tmp_path / "train" / "images" / "LY_2.jpg", (360, 363))
    make_image(tmp_path / "val" / "images" / "BA_3.jpg", (300, 320))
    write_csv(
        tmp_path / "wbcatt" / "pbc_attr_v1_train.csv",
        [
            row("BNE_1.jpg", "Neutrophil", NEUTROPHIL),
            row("LY_2.jpg", "Lymphocyte", LYMPHOCYTE),
            row("LY_404.jpg", "Lymphocyte", LYMPHOCYTE),
        ],
    )
    write_csv(tmp_path / "wbcatt" / "pbc_attr_v1_val.csv", [row("BA_3.jpg", "Basophil", BASOPHIL)])
    return tmp_path / "wbcatt"


# ------------------------------------------------------------------------------------------------ hand-made: read
def test_split_comes_from_the_file_name():
    assert split_of(Path("x/pbc_attr_v1_train.csv")) == "train"
    assert split_of(Path("pbc_attr_v1_test.csv")) == "test"
    assert split_of(Path("re-annotation_pbc_attr_reannotations.csv")) is None
    assert split_of(Path("wbcatt.csv")) is None


def test_read_wbcatt_makes_one_whole_image_cell_per_row(pbc_like: Path):
    log = ProblemLog()
    dataset = read_wbcatt(pbc_like, log=log)

    assert dataset.classes == WBCATT_CLASSES and dataset.schema == WBCATT_SCHEMA
    by_name = {Path(f.image).name: f for f in dataset.fields}
    assert sorted(by_name) == ["BA_3.jpg", "BNE_1.jpg", "LY_2.jpg"]
    basophil = by_name["BA_3.jpg"]
    assert basophil.image == pbc_like.parent / "val" / "images" / "BA_3.jpg"
    assert basophil.size == (300, 320) and basophil.split == "val"
    [cell] = basophil.cells
    assert cell.label == "Basophil"
    assert cell.attributes == attributes_of(BASOPHIL)
    assert list(cell.attributes) == list(WBCATT_SCHEMA.names)
    assert cell.box.close_to(whole_image_box((300, 320)))
    assert by_name["BNE_1.jpg"].split == "train"
    # The row whose image is absent is the only problem, on its CSV line (header = line 1).
    [problem] = log.problems
    assert (problem.kind, problem.line) == ("wbcatt-missing-image", 4)
    assert problem.path.endswith("pbc_attr_v1_train.csv")
    assert problem.message == "row for 'LY_404.jpg' names an image that is not in the data set"
    assert problem.label == "Lymphocyte"  # so counts of what was left out can be given per class


def test_missing_image_raises_in_strict_mode(pbc_like: Path):
    with pytest.raises(InputError) as error:
        read_wbcatt(pbc_like, log=ProblemLog(strict=True))
    assert error.value.problem.kind == "wbcatt-missing-image"
    assert "LY_404.jpg" in str(error.value)


def test_image_roots_replace_the_default_search(pbc_like: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    make_image(elsewhere / "deep" / "LY_404.jpg", (10, 12))
    log = ProblemLog()
    dataset = read_wbcatt(pbc_like / "pbc_attr_v1_train.csv", log=log, image_roots=[elsewhere])
    # Only LY_404.jpg is under the given root; a single CSV given by name keeps its split.
    assert [(Path(f.image).name, f.size, f.split) for f in dataset.fields] == [("LY_404.jpg", (10, 12), "train")]
    assert log.counts() == {"wbcatt-missing-image": 2}


def test_index_images_searches_recursively_and_skips_other_files(tmp_path: Path):
    make_image(tmp_path / "a" / "b" / "x.png")
    make_image(tmp_path / "y.JPG")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    index = index_images([tmp_path, tmp_path / "missing"])
    assert index == {"x.png": tmp_path / "a" / "b" / "x.png", "y.JPG": tmp_path / "y.JPG"}


def test_folder_reading_leaves_out_the_reannotation(pbc_like: Path):
    # A second annotator disagrees on BNE_1.jpg: the main annotation must not change.
    reannotation = write_csv(
        pbc_like / "re-annotation_pbc_attr_reannotations.csv",
        [row("BNE_1.jpg", "Neutrophil", NEUTROPHIL.replace("big,round", "small,irregular"))],
    )
    assert csv_files(pbc_like) == [pbc_like / "pbc_attr_v1_train.csv", pbc_like / "pbc_attr_v1_val.csv"]
    dataset = read_wbcatt(pbc_like, log=ProblemLog())
    neutrophil = next(f for f in dataset.fields if Path(f.image).name == "BNE_1.jpg")
    assert neutrophil.cells[0].attributes == attributes_of(NEUTROPHIL)

    [second] = read_wbcatt_rows(reannotation, log=ProblemLog(strict=True))
    assert (second.img_name, second.line, second.split, second.csv_path) == ("BNE_1.jpg", 2, None, reannotation)
    assert second.attributes["cell_size"] == "small" and second.attributes["cell_shape"] == "irregular"


def test_byte_order_mark_crlf_and_alias_columns_are_read(tmp_path: Path):
    header = HEADER.replace("cytoplasm_colour", "cytoplasm_color").replace("granule_colour", "Granule_Color")
    text = "\r\n".join([header, row("BNE_1.jpg", "Neutrophil", NEUTROPHIL), ""])
    path = tmp_path / "pbc_attr_v1_test.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    [only] = read_wbcatt_rows(path, log=ProblemLog(strict=True))
    assert only.attributes == attributes_of(NEUTROPHIL) and only.split == "test"


# --------------------------------------------------------------------------------------------- hand-made: broken
BROKEN_ROWS = {
    "column-count": ("BNE_9.jpg,Neutrophil,big,round", "4 cells where the header has 14 columns"),
    "unknown-class": (row("ERB_9.jpg", "Erythroblast", NEUTROPHIL), "label 'Erythroblast' is not a WBCAtt class"),
    "attribute-value": (
        row("BNE_9.jpg", "Neutrophil", NEUTROPHIL.replace("light blue", "green")),
        "cytoplasm_colour 'green' is not one of light blue, blue, purple blue",
    ),
    "duplicate": (row("BNE_1.jpg", "Neutrophil", LYMPHOCYTE), "second row for 'BNE_1.jpg' (first on line 2)"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_ROWS))
def test_each_broken_row_is_logged_on_its_line_and_skipped(tmp_path: Path, kind: str):
    make_image(tmp_path / "images" / "BNE_1.jpg")
    make_image(tmp_path / "images" / "LY_2.jpg")
    broken, message = BROKEN_ROWS[kind]
    good = [row("BNE_1.jpg", "Neutrophil", NEUTROPHIL), row("LY_2.jpg", "Lymphocyte", LYMPHOCYTE)]
    csv_path = write_csv(tmp_path / "pbc_attr_v1_train.csv", [good[0], broken, good[1]])

    log = ProblemLog()
    dataset = read_wbcatt(csv_path, log=log)
    [problem] = log.problems
    assert (problem.kind, problem.line, problem.path) == (kind, 3, str(csv_path))
    assert message in problem.message
    # The good rows around it survive; a duplicate keeps the first row's attributes.
    assert sorted(Path(f.image).name for f in dataset.fields) == ["BNE_1.jpg", "LY_2.jpg"]
    first = next(f for f in dataset.fields if Path(f.image).name == "BNE_1.jpg")
    assert first.cells[0].attributes == attributes_of(NEUTROPHIL)

    with pytest.raises(InputError) as error:
        read_wbcatt(csv_path, log=ProblemLog(strict=True))
    assert (error.value.problem.kind, error.value.problem.line) == (kind, 3)


def test_special_values_are_not_wbcatt_values(tmp_path: Path):
    csv_path = write_csv(tmp_path / "a.csv", [row("BNE_1.jpg", "Neutrophil", NEUTROPHIL.replace("big", "unknown"))])
    log = ProblemLog()
    assert read_wbcatt_rows(csv_path, log=log) == []
    assert [p.kind for p in log.problems] == ["attribute-value"]


def test_same_image_in_two_csvs_keeps_the_first(pbc_like: Path):
    write_csv(pbc_like / "pbc_attr_v1_test.csv", [row("BA_3.jpg", "Basophil", BASOPHIL)])
    log = ProblemLog()
    dataset = read_wbcatt(pbc_like, log=log)
    assert [f.split for f in dataset.fields if Path(f.image).name == "BA_3.jpg"] == ["val"]
    [duplicate] = log.of_kind("duplicate")
    assert duplicate.path.endswith("pbc_attr_v1_test.csv") and "pbc_attr_v1_val.csv:2" in duplicate.message


@pytest.mark.parametrize(
    "header",
    [
        HEADER.replace("granularity,", ""),  # a missing attribute column
        row("BNE_1.jpg", "Neutrophil", NEUTROPHIL),  # no header at all
        "",  # empty file
    ],
)
def test_a_file_that_is_not_wbcatt_raises_even_in_default_mode(tmp_path: Path, header: str):
    csv_path = tmp_path / "pbc_attr_v1_train.csv"
    csv_path.write_text(header + "\n" if header else "", encoding="utf-8")
    with pytest.raises(InputError) as error:
        read_wbcatt_rows(csv_path, log=ProblemLog())
    assert error.value.problem.kind == "not-wbcatt"
    assert str(csv_path) in str(error.value)


def test_folder_without_wbcatt_csv_raises(tmp_path: Path):
    (tmp_path / "other.csv").write_text(HEADER + "\n")
    with pytest.raises(InputError, match="pbc_attr_v1"):
        read_wbcatt(tmp_path, log=ProblemLog())


def test_unreadable_image_header_is_logged(tmp_path: Path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "BNE_1.jpg").write_bytes(b"not a jpeg")
    csv_path = write_csv(tmp_path / "pbc_attr_v1_val.csv", [row("BNE_1.jpg", "Neutrophil", NEUTROPHIL)])
    log = ProblemLog()
    assert len(read_wbcatt(csv_path, log=log)) == 0
    [problem] = log.problems
    assert problem.kind == "bad-image" and problem.path.endswith("BNE_1.jpg")


def test_a_row_after_a_multi_line_cell_keeps_its_own_line_number(tmp_path: Path):
    spanning = row("BNE_1.jpg", "Neutrophil", NEUTROPHIL).replace(",PBC_dataset", ',"two\nlines/PBC_dataset') + '"'
    csv_path = write_csv(tmp_path / "a.csv", [spanning, row("BNE_1.jpg", "Neutrophil", NEUTROPHIL)])
    log = ProblemLog()
    [first] = read_wbcatt_rows(csv_path, log=log)
    assert first.line == 2 and first.path.startswith("two\nlines/")
    assert [(p.kind, p.line) for p in log.problems] == [("duplicate", 4)]


# ------------------------------------------------------------------------------------------------ hand-made: join
def pbc_field(path: Path, label: str, *, cells: int = 1, split: str = "train") -> Field:
    """A PBC-like field as the YOLO reader gives it: a tight normalised box, not the whole image."""
    make_image(path, (360, 363))
    box = Box((0.5, 0.5, 0.4, 0.4), BoxFormat.CXCYWH, normalized=True)
    return Field(path, 360, 363, [Cell(box, label) for _ in range(cells)], split=split)


def test_attach_wbcatt_sets_attributes_and_reports_every_mismatch(tmp_path: Path):
    images = tmp_path / "train" / "images"
    fields = [
        pbc_field(images / "BNE_1.jpg", "Neutrophil"),
        pbc_field(images / "BA_3.jpg", "Eosinophil"),  # the CSV says Basophil
        pbc_field(images / "ERB_5.jpg", "Erythroblast"),  # WBCAtt has no row for it
        pbc_field(images / "LY_2.jpg", "Lymphocyte", cells=2),
    ]
    dataset = Dataset(fields, PBC_CLASSES, name="pbc")
    csv_path = write_csv(
        tmp_path / "pbc_attr_v1_train.csv",
        [
            row("BNE_1.jpg", "Neutrophil", NEUTROPHIL),
            row("BA_3.jpg", "Basophil", BASOPHIL),
            row("MO_404.jpg", "Monocyte", LYMPHOCYTE),
            row("LY_2.jpg", "Lymphocyte", LYMPHOCYTE),
        ],
    )

    log = ProblemLog()
    join = attach_wbcatt(dataset, [csv_path], log=log)

    assert dataset.schema == WBCATT_SCHEMA
    assert [r.img_name for r in join.all_rows] == ["BNE_1.jpg", "BA_3.jpg", "MO_404.jpg", "LY_2.jpg"]
    assert [(r.img_name, f) for r, f in join.matched_rows] == [("BNE_1.jpg", fields[0]), ("BA_3.jpg", fields[1])]
    assert [r.img_name for r in join.unmatched_rows] == ["MO_404.jpg"]
    assert join.fields_missing_row == [fields[2]]
    assert [r.img_name for r, _ in join.label_mismatch_rows] == ["BA_3.jpg"]
    assert [r.img_name for r, _ in join.not_single_cell_rows] == ["LY_2.jpg"]
    assert (
        join.rows,
        join.matched,
        join.unmatched,
        join.fields_without_row,
        join.label_mismatch,
        join.not_single_cell,
    ) == (4, 2, 1, 1, 1, 1)
    # Attributes land on the cell; its class and box are the data set's, untouched.
    assert fields[0].cells[0].attributes == attributes_of(NEUTROPHIL)
    assert fields[1].cells[0].label == "Eosinophil" and fields[1].cells[0].attributes == attributes_of(BASOPHIL)
    assert fields[1].cells[0].box.format is BoxFormat.CXCYWH
    assert fields[2].cells[0].attributes == {} and all(c.attributes == {} for c in fields[3].cells)
    assert [(p.kind, p.line) for p in log.problems] == [
        ("wbcatt-label-mismatch", 3),
        ("wbcatt-missing-image", 4),
        ("wbcatt-cell-count", 5),
    ]
    missing = log.of_kind("wbcatt-missing-image")[0]
    assert missing.message == "row for 'MO_404.jpg' names an image that is not in the data set"


def test_attach_wbcatt_refuses_to_mix_schemas(tmp_path: Path):
    dataset = Dataset([pbc_field(tmp_path / "BNE_1.jpg", "Neutrophil")], PBC_CLASSES, LLD_SCHEMA)
    csv_path = write_csv(tmp_path / "pbc_attr_v1_train.csv", [row("BNE_1.jpg", "Neutrophil", NEUTROPHIL)])
    with pytest.raises(LeukolensError, match="mix two schemas"):
        attach_wbcatt(dataset, [csv_path], log=ProblemLog())


# ----------------------------------------------------------------------------------------------- hand-made: write
def test_write_then_read_gives_the_same_records(pbc_like: Path, tmp_path: Path):
    dataset = read_wbcatt(pbc_like, log=ProblemLog())
    unsplit = make_image(tmp_path / "out" / "pics" / "EO_7.png", (50, 40))  # inside out: a relative path column
    dataset.fields.append(
        Field(unsplit, 50, 40, [Cell(whole_image_box((50, 40)), "Eosinophil", attributes_of(BASOPHIL))])
    )
    out = tmp_path / "out"
    report = write_wbcatt(dataset, out)

    assert (report.files, report.fields, report.cells, report.dropped) == (3, 4, 4, {})
    assert sorted(p.name for p in out.glob("*.csv")) == ["pbc_attr_v1_train.csv", "pbc_attr_v1_val.csv", "wbcatt.csv"]
    with open(out / "wbcatt.csv", newline="", encoding="utf-8") as f:
        header, only = list(csv.reader(f))
    assert tuple(header) == WBCATT_COLUMNS
    assert only == ["EO_7.png", "Eosinophil", *BASOPHIL.split(","), "pics/EO_7.png"]
    train = (out / "pbc_attr_v1_train.csv").read_text().splitlines()
    assert train[1].endswith(str(pbc_like.parent / "train" / "images" / "BNE_1.jpg"))  # outside out: absolute

    again = read_wbcatt(out, log=ProblemLog(strict=True))
    assert differences(dataset, again) == []


def test_write_reports_what_wbcatt_cannot_hold(tmp_path: Path):
    image = make_image(tmp_path / "img" / "a.jpg", (100, 80))
    whole = whole_image_box((100, 80))
    tight = Box((10, 10, 50, 50))
    attributes = attributes_of(NEUTROPHIL)

    def one(name: str, cells: list[Cell], **kwargs) -> Field:
        return Field(image.with_name(name), 100, 80, cells, **kwargs)

    fields = [
        one("kept.jpg", [Cell(whole, "Neutrophil", attributes)]),
        one("tight.jpg", [Cell(tight, "Neutrophil", attributes)], domain=Domain(source="PBC"), regions=[tight]),
        one("two.jpg", [Cell(whole, "Neutrophil", attributes), Cell(tight, "Neutrophil", attributes)]),
        one("none.jpg", []),
        one("erb.jpg", [Cell(whole, "Erythroblast", attributes)]),
        one("partial.jpg", [Cell(whole, "Neutrophil", {"cell_size": "big"})]),
    ]
    report = write_wbcatt(Dataset(fields, PBC_CLASSES, WBCATT_SCHEMA), tmp_path / "out")
    assert report.fields == 2  # kept.jpg, and tight.jpg as a whole-image cell
    assert report.dropped == {
        "cell boxes other than the whole image (written as whole-image cells)": 1,
        "domain metadata (fields)": 1,
        "annotated regions (fields)": 1,
        "fields with several cells": 1,
        "fields without a cell": 1,
        "cells of a class WBCAtt lacks": 1,
        "cells without all eleven WBCAtt attributes known": 1,
    }
    names = [line.split(",")[0] for line in (tmp_path / "out" / "wbcatt.csv").read_text().splitlines()[1:]]
    assert names == ["kept.jpg", "tight.jpg"]


def test_lld_attributes_never_fill_all_eleven(tmp_path: Path):
    image = make_image(tmp_path / "a.jpg")
    lld = {
        "cell_size": "large",
        "nuclear_chromatin": "open",
        "nuclear_shape": "regular",
        "nucleolus": "prominent",
        "cytoplasm": "scanty",
        "cytoplasmic_basophilia": "moderate",
        "cytoplasmic_vacuoles": "absent",
    }
    field = Field(image, 64, 48, [Cell(whole_image_box((64, 48)), "Lymphocyte", lld)])
    report = write_wbcatt(Dataset([field], WBCATT_CLASSES, LLD_SCHEMA), tmp_path / "out")
    assert report.fields == 0
    assert report.dropped == {"cells whose LLD attributes do not map to eleven known WBCAtt values": 1}
    assert (tmp_path / "out" / "wbcatt.csv").read_text() == HEADER + "\n"


# ----------------------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def real_wbcatt(shared_data: Path) -> tuple[Dataset, ProblemLog]:
    log = ProblemLog()
    return read_wbcatt(shared_data / "pbc" / "wbcatt", log=log), log


def test_real_csvs_hold_10298_clean_rows(shared_data: Path):
    log = ProblemLog(strict=True)
    paths = csv_files(shared_data / "pbc" / "wbcatt")
    assert [p.name for p in paths] == ["pbc_attr_v1_train.csv", "pbc_attr_v1_val.csv", "pbc_attr_v1_test.csv"]
    counts = {p.name: len(read_wbcatt_rows(p, log=log)) for p in paths}
    assert counts == {"pbc_attr_v1_train.csv": 6169, "pbc_attr_v1_val.csv": 1030, "pbc_attr_v1_test.csv": 3099}
    assert sum(counts.values()) == 10298


def test_real_read_finds_3200_images_and_misses_7098(real_wbcatt):
    dataset, log = real_wbcatt
    assert len(dataset) == 3200
    assert log.counts() == {"wbcatt-missing-image": 7098}
    assert {f.split for f in dataset.fields} == {"train", "val", "test"}
    assert {f.size for f in dataset.fields} == {(360, 363)}
    # Every image was found in the PBC split folder of the same name as its CSV.
    assert all(Path(f.image).parent.parent.name == f.split for f in dataset.fields)


def test_real_round_trip(real_wbcatt, tmp_path: Path):
    dataset, _ = real_wbcatt
    report = write_wbcatt(dataset, tmp_path)
    assert (report.fields, report.dropped) == (3200, {})
    assert differences(dataset, read_wbcatt(tmp_path, log=ProblemLog(strict=True))) == []


def test_real_attach_onto_pbc_from_yolo(shared_data: Path):
    pbc = shared_data / "pbc"
    fields = []
    for split in ("train", "val", "test"):
        for label_file in sorted((pbc / split / "labels").glob("*.txt")):
            class_id, *box = label_file.read_text().split()
            box = Box(tuple(map(float, box)), BoxFormat.CXCYWH, normalized=True)
            cell = Cell(box, PBC_CLASSES.name_of(int(class_id)))
            fields.append(Field(pbc / split / "images" / f"{label_file.stem}.jpg", 360, 363, [cell], split=split))
    dataset = Dataset(fields, PBC_CLASSES, name="pbc")
    log = ProblemLog()
    join = attach_wbcatt(dataset, csv_files(pbc / "wbcatt"), log=log)

    assert (join.rows, join.matched, join.unmatched, join.fields_without_row) == (10298, 3200, 7098, 4060 - 3200)
    assert (join.label_mismatch, join.not_single_cell) == (0, 0)
    assert log.counts() == {"wbcatt-missing-image": 7098}
    # WBCAtt describes every normal white cell here; the images it leaves out are the two classes it lacks.
    assert {f.cells[0].label for f in join.fields_missing_row} == {"Erythroblast", "Immature granulocyte"}
    assert all(f.cells[0].attributes == {} for f in join.fields_missing_row)
    assert all(len(f.cells[0].attributes) == 11 for _, f in join.matched_rows)


def test_real_reannotation_covers_1000_main_images(shared_data: Path):
    folder = shared_data / "pbc" / "wbcatt"
    log = ProblemLog(strict=True)
    second = read_wbcatt_rows(folder / "re-annotation_pbc_attr_reannotations.csv", log=log)
    first = {r.img_name: r for p in csv_files(folder) for r in read_wbcatt_rows(p, log=log)}
    assert len(second) == 1000 and all(r.split is None for r in second)
    assert all(r.img_name in first and first[r.img_name].label == r.label for r in second)
    # A genuine second opinion: the annotators disagree on some attributes.
    assert any(first[r.img_name].attributes != r.attributes for r in second)
