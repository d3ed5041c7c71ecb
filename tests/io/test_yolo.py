"""YOLO and LLD label folders: the real TXL-PBC and PBC sets, and hand-written fixtures, broken ones included."""

import os
from pathlib import Path

import pytest

from leukolens.errors import LeukolensError, atomic_write_text
from leukolens.io import check_images, read_dataset, sniff_format, write_dataset
from leukolens.io.common import InputError, ProblemLog
from leukolens.io.yolo import read_yolo, write_lld, write_yolo
from leukolens.records import (
    LLD_CLASSES,
    LLD_SCHEMA,
    NOT_APPLICABLE,
    UNKNOWN,
    Box,
    BoxFormat,
    Cell,
    Dataset,
    Domain,
    Field,
    differences,
)
from tests.conftest import make_image

# --------------------------------------------------------------------------------------------- real data sets


def test_txl_pbc_counts_sources_and_duplicates(shared_data):
    log = ProblemLog()
    dataset = read_dataset(shared_data / "txl_pbc", log=log)
    assert len(dataset) == 1440
    assert {s: len(f) for s, f in dataset.splits.items()} == {"train": 1008, "val": 288, "test": 144}
    kept = dataset.class_counts()
    skipped = {label: sum(p.label == label for p in log.problems) for label in ("WBC", "RBC", "Platelets")}
    # The label files hold 1,515 WBC, 24,271 RBC and 851 platelet lines; a few are exact duplicates.
    assert kept["WBC"] + skipped["WBC"] == 1515
    assert kept["RBC"] + skipped["RBC"] == 24271
    assert kept["Platelets"] + skipped["Platelets"] == 851
    assert set(log.counts()) == {"duplicate"}
    assert all("duplicate of line" in p.message and p.line for p in log.problems)
    sources = {f.domain.source for f in dataset.fields}
    assert sources == {"BCCD", "BCDD", "PBC", "Raabin-WBC"}


def test_pbc_with_wbcatt_attributes(shared_data):
    log = ProblemLog()
    dataset = read_dataset(shared_data / "pbc", log=log)
    assert len(dataset) == 4060 and sum(dataset.class_counts().values()) == 4060
    assert len(dataset.classes) == 7 and dataset.classes.name == "pbc"
    join = dataset.extras["wbcatt"]
    assert (join.rows, join.matched, join.unmatched) == (10298, 3200, 7098)
    assert len(log.of_kind("wbcatt-missing-image")) == 7098
    with_attributes = [c for c in dataset.cells() if c.attributes]
    assert len(with_attributes) == 3200
    assert {f.domain.source for f in dataset.fields} == {"PBC"}


# ------------------------------------------------------------------------------------------------ fixtures
def _lld_folder(root: Path, lines: str, *, size=(200, 100), name="f1") -> Path:
    make_image(root / "images" / f"{name}.jpg", size)
    atomic_write_text(root / "labels" / f"{name}.txt", lines)
    return root


def test_lld_twelve_columns_decode_attributes(tmp_path):
    root = _lld_folder(tmp_path, "1 0.5 0.5 0.2 0.4 2 0 1 1 0 1 2\n7 0.2 0.3 0.1 0.1 0 1 0 0 0 0 0\n")
    assert sniff_format(root) == "lld"
    log = ProblemLog()
    dataset = read_dataset(root, log=log)
    assert not log.problems
    assert dataset.schema is LLD_SCHEMA and dataset.classes is LLD_CLASSES
    first, second = dataset.fields[0].cells
    assert first.label == "Myeloblast" and second.label == "Lymphocyte"
    assert first.attributes == {
        "cell_size": "large",
        "nuclear_chromatin": "open",
        "nuclear_shape": "irregular",
        "nucleolus": "prominent",
        "cytoplasm": "scanty",
        "cytoplasmic_basophilia": "moderate",
        "cytoplasmic_vacuoles": NOT_APPLICABLE,
    }
    assert first.box.pixels_xyxy((200, 100)) == pytest.approx((80, 30, 120, 70))
    assert dataset.fields[0].fully_annotated


def test_lld_sixteen_columns_carry_the_annotated_region(tmp_path):
    root = _lld_folder(
        tmp_path, "3 0.25 0.25 0.1 0.2 10 5 90 60 1 1 0 0 1 0 0\n12 0.3 0.4 0.1 0.2 10 5 90 60 1 1 1 0 1 0 0\n"
    )
    field = read_dataset(root).fields[0]
    assert len(field.cells) == 2
    assert field.regions == [Box((10, 5, 90, 60), BoxFormat.XYXY, normalized=False)]
    assert field.annotated_fraction() == pytest.approx(80 * 55 / (200 * 100))


def test_lld_round_trip_is_lossless(tmp_path):
    root = _lld_folder(tmp_path / "in", "1 0.5 0.5 0.2 0.4 10 5 190 95 2 0 1 1 0 1 2\n")
    make_image(root / "images" / "f2.jpg", (200, 100))
    atomic_write_text(root / "labels" / "f2.txt", "13 0.123456 0.654321 0.05 0.07 0 1 0 0 1 0 2\n")
    make_image(root / "images" / "f3.jpg", (200, 100))  # a field with no label file: no cells
    first = read_dataset(root)
    first.fields[0].domain = Domain(microscope="low-cost", camera="phone", magnification="40x", sample_id="P7")
    report = write_lld(first, tmp_path / "out")
    assert not report.dropped
    again = read_dataset(tmp_path / "out")
    assert differences(first, again) == []
    text = (tmp_path / "out" / "labels" / "f1.txt").read_text()
    assert text == "1 0.5 0.5 0.2 0.4 10 5 190 95 2 0 1 1 0 1 2\n"
    assert (tmp_path / "out" / "labels" / "f3.txt").read_text() == ""


def test_plain_yolo_round_trip_and_what_it_drops(tmp_path):
    make_image(tmp_path / "a.jpg", (200, 100))
    cell = Cell(Box((20, 10, 60, 50)), "Myeloblast", {"cell_size": "large"})
    dataset = Dataset(
        [Field(tmp_path / "a.jpg", 200, 100, [cell], [Box((0, 0, 100, 100))], split="train")], LLD_CLASSES, LLD_SCHEMA
    )
    report = write_yolo(dataset, tmp_path / "yolo")
    assert report.dropped["cell attributes"] == 1
    assert report.dropped["annotated regions (fields then read as fully annotated)"] == 1
    assert sniff_format(tmp_path / "yolo") == "yolo"
    back = read_dataset(tmp_path / "yolo")
    assert back.fields[0].split == "train"
    assert back.fields[0].cells[0].box.close_to(cell.box, image_size=(200, 100))
    assert back.fields[0].cells[0].attributes == {}


def test_lld_writer_maps_wbcatt_and_says_what_it_cannot_hold(tmp_path):
    make_image(tmp_path / "c.jpg", (100, 100))
    wbcatt = {
        "cell_size": "small",
        "chromatin_density": "densely",
        "nuclear_cytoplasmic_ratio": "high",
        "nucleus_shape": "unsegmented-round",
        "cytoplasm_vacuole": "no",
    }
    from leukolens.records import PBC_CLASSES, WBCATT_SCHEMA

    dataset = Dataset(
        [Field(tmp_path / "c.jpg", 100, 100, [Cell(Box((0, 0, 100, 100)), "Lymphocyte", wbcatt)])],
        PBC_CLASSES,
        WBCATT_SCHEMA,
    )
    report = write_lld(dataset, tmp_path / "lld")
    assert any("no LLD counterpart" in what for what in report.dropped)
    assert any("'unknown' attribute values" in what for what in report.dropped)  # nucleolus, basophilia
    cell = read_dataset(tmp_path / "lld").fields[0].cells[0]
    assert cell.label == "Lymphocyte"  # the PBC vocabulary travels in data.yaml
    assert cell.attributes["nuclear_chromatin"] == "coarse" and cell.attributes["cytoplasm"] == "scanty"
    assert cell.attributes["nucleolus"] == NOT_APPLICABLE  # written as code 2: the loss the report names


def test_empty_label_file_is_a_field_without_cells(tmp_path):
    root = _lld_folder(tmp_path, "")
    log = ProblemLog(strict=True)
    dataset = read_yolo(root, log=log, names=("WBC",))
    assert len(dataset) == 1 and dataset.fields[0].cells == []


# --------------------------------------------------------------------------------------- broken inputs
BROKEN_LINES = [
    ("1 0.5 0.5 0.2\n", "column-count", "4 columns, expected 12 or 16"),
    ("1 0.5 0.5 0.2 0.4 2 0 1 1 0 1\n", "column-count", "11 columns"),
    ("1 1.2 0.5 0.2 0.4 2 0 1 1 0 1 0\n", "box-range", "outside [0, 1]"),
    ("1 0.95 0.5 0.2 0.4 2 0 1 1 0 1 0\n", "box-range", "reaches outside the image"),
    ("1 0.5 0.5 0 0.4 2 0 1 1 0 1 0\n", "box-range", "non-positive size"),
    ("14 0.5 0.5 0.2 0.4 2 0 1 1 0 1 0\n", "unknown-class", "class id 14 is not in 0..13"),
    ("1 0.5 0.5 0.2 0.4 3 0 1 1 0 1 0\n", "attribute-code", "a1 (cell size) code 3 is out of range 0..2"),
    ("1 0.5 0.5 0.2 0.4 2 0 1 5 0 1 0\n", "attribute-code", "a4 (nucleolus) code 5 is out of range 0..2"),
    ("1 0.5 0.5 0.2 0.4 2 0 x 1 0 1 0\n", "bad-number", "'x' is not a number"),
    ("1 0.5 0.5 0.2 0.4 0 0 250 60 2 0 1 1 0 1 0\n", "region-range", "not inside the 200x100 image"),
]


@pytest.mark.parametrize("line, kind, message", BROKEN_LINES)
def test_each_broken_line_gets_its_clear_error(tmp_path, line, kind, message):
    good = "7 0.2 0.3 0.1 0.1 0 1 0 0 0 0 0\n"
    root = _lld_folder(tmp_path, good + line)
    log = ProblemLog()
    dataset = read_yolo(root, log=log, lld=True)
    assert [p.kind for p in log.problems] == [kind]
    problem = log.problems[0]
    assert problem.path.endswith("f1.txt") and problem.line == 2
    assert message in problem.message
    assert str(problem).startswith(f"{problem.path}:2: ")
    assert len(dataset.fields[0].cells) == 1  # the good line is kept
    with pytest.raises(InputError, match=r"f1\.txt:2: "):
        read_yolo(root, log=ProblemLog(strict=True), lld=True)


def test_duplicate_lines_and_mismatched_regions(tmp_path):
    line = "3 0.25 0.25 0.1 0.2 10 5 90 60 1 1 0 0 1 0 0\n"
    root = _lld_folder(tmp_path, line + line + "3 0.5 0.5 0.1 0.2 0 0 50 50 1 1 0 0 1 0 0\n")
    log = ProblemLog()
    field = read_yolo(root, log=log, lld=True).fields[0]
    assert [(p.kind, p.line) for p in log.problems] == [("duplicate", 2), ("region-mismatch", 3)]
    assert "duplicate of line 1" in log.problems[0].message
    assert len(field.cells) == 1


def test_label_file_without_its_image(tmp_path):
    root = _lld_folder(tmp_path, "7 0.2 0.3 0.1 0.1 0 1 0 0 0 0 0\n")
    atomic_write_text(root / "labels" / "orphan.txt", "7 0.2 0.3 0.1 0.1 0 1 0 0 0 0 0\n")
    log = ProblemLog()
    dataset = read_yolo(root, log=log, lld=True)
    assert len(dataset) == 1
    assert [p.kind for p in log.problems] == ["missing-image"]
    assert log.problems[0].path.endswith("orphan.txt")


def test_unreadable_and_truncated_images(tmp_path):
    root = _lld_folder(tmp_path, "7 0.2 0.3 0.1 0.1 0 1 0 0 0 0 0\n")
    (root / "images" / "junk.jpg").write_bytes(b"this is not a jpeg")
    whole = (root / "images" / "f1.jpg").read_bytes()
    make_image(root / "images" / "cut.jpg", (300, 300), colour=(10, 200, 30))
    cut = (root / "images" / "cut.jpg").read_bytes()
    (root / "images" / "cut.jpg").write_bytes(cut[: len(cut) // 2])
    log = ProblemLog()
    dataset = read_yolo(root, log=log, lld=True)
    assert [(Path(p.path).name, p.kind) for p in log.problems] == [("junk.jpg", "bad-image")]
    assert {f.image.name for f in dataset.fields} == {"cut.jpg", "f1.jpg"}  # the header of cut.jpg reads
    assert check_images(dataset, log=log) == 1
    assert [(Path(p.path).name, p.kind) for p in log.problems][1:] == [("cut.jpg", "bad-image")]
    assert "truncated" in log.problems[1].message
    assert whole  # the sound image is untouched


def test_yolo_without_class_names_asks_for_them(tmp_path):
    make_image(tmp_path / "images" / "a.jpg")
    atomic_write_text(tmp_path / "labels" / "a.txt", "0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(LeukolensError, match="--names"):
        read_dataset(tmp_path)
    assert read_dataset(tmp_path, names=("WBC",)).fields[0].cells[0].label == "WBC"


def test_interrupted_write_leaves_no_file_that_looks_complete(tmp_path, monkeypatch):
    target = tmp_path / "labels" / "x.txt"
    atomic_write_text(target, "old\n")

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new\n" * 1000)
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["x.txt"]  # no temporary file left behind


def test_unknown_attribute_in_lld_writer_is_reported(tmp_path):
    make_image(tmp_path / "d.jpg", (100, 100))
    cell = Cell(Box((10, 10, 50, 50)), "Myeloblast", {"cell_size": "large", "nucleolus": UNKNOWN})
    dataset = Dataset([Field(tmp_path / "d.jpg", 100, 100, [cell])], LLD_CLASSES, LLD_SCHEMA)
    report = write_dataset(dataset, tmp_path / "o", format="lld")
    assert report.dropped["'unknown' attribute values written as code 2 (not assessed)"] == 6


def test_written_files_are_readable_by_others(tmp_path):
    atomic_write_text(tmp_path / "x.txt", "hello\n")
    assert (tmp_path / "x.txt").stat().st_mode & 0o044 == 0o044  # not the private mode of a temporary file
