"""Folder per class: the real Munich AML and bone marrow samples, hand-made layouts (good and broken), and crops."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from leukolens.errors import LeukolensError
from leukolens.io.common import InputError, ProblemLog
from leukolens.io.folders import read_folders, write_folders
from leukolens.records import (
    LLD_SCHEMA,
    Box,
    BoxFormat,
    Cell,
    Dataset,
    Domain,
    Field,
    Vocabulary,
    differences,
    whole_image_box,
)
from tests.conftest import make_image

RED, WHITE = (255, 0, 0), (255, 255, 255)


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------------------------------- real data
def test_real_munich_has_15_classes_of_10(shared_data: Path):
    log = ProblemLog(strict=True)
    dataset = read_folders(shared_data / "munich_aml_sample", log=log)
    assert len(dataset) == 150
    assert dataset.classes.names == (
        "BAS",
        "EBO",
        "EOS",
        "KSC",
        "LYA",
        "LYT",
        "MMZ",
        "MOB",
        "MON",
        "MYB",
        "MYO",
        "NGB",
        "NGS",
        "PMB",
        "PMO",
    )
    assert dataset.class_counts() == Counter({name: 10 for name in dataset.classes.names})
    assert Counter(f.size for f in dataset.fields) == {(360, 360): 100, (400, 400): 50}
    for f in dataset.fields:
        [cell] = f.cells
        assert cell.label == Path(f.image).parent.name and f.split is None
        assert cell.box.close_to(whole_image_box(f.size))


def test_real_bone_marrow_has_18_images_in_14_classes(shared_data: Path):
    dataset = read_folders(shared_data / "bone_marrow_sample", log=ProblemLog(strict=True))
    assert len(dataset) == 18 and len(dataset.classes) == 14
    two_each = {"BLA", "LYT", "NGB", "NGS"}
    assert dataset.class_counts() == Counter({name: 2 if name in two_each else 1 for name in dataset.classes.names})
    assert {f.size for f in dataset.fields} == {(250, 250)}


def test_real_munich_round_trip(shared_data: Path, tmp_path: Path):
    dataset = read_folders(shared_data / "munich_aml_sample", log=ProblemLog(strict=True))
    report = write_folders(dataset, tmp_path / "munich")
    assert (report.fields, report.cells, report.dropped) == (150, 150, {})
    # Whole-image crops are the originals, linked under their own names.
    placed = tmp_path / "munich" / "BAS" / "BAS_0001_0_8415_102.png"
    assert placed.is_symlink()
    assert placed.resolve() == (shared_data / "munich_aml_sample" / "BAS" / placed.name).resolve()
    again = read_folders(tmp_path / "munich", log=ProblemLog(strict=True))
    assert differences(dataset, again) == []


# ------------------------------------------------------------------------------------------ hand-made: reading
def test_split_layout_and_empty_class_folders(tmp_path: Path):
    root = tmp_path / "cells"
    make_image(root / "train" / "Blast" / "b1.png", (30, 20))
    make_image(root / "train" / "Lymphocyte" / "l1.jpg", (40, 40))
    make_image(root / "test" / "Blast" / "b2.png", (30, 20))
    (root / "val" / "Monocyte").mkdir(parents=True)  # empty: still a class
    (root / "README.md").write_text("not part of any class")  # loose non-image files are expected

    log = ProblemLog(strict=True)
    dataset = read_folders(root, log=log)
    assert dataset.classes == Vocabulary("cells", ("Blast", "Lymphocyte", "Monocyte"))
    assert [(Path(f.image).name, f.split, f.cells[0].label, f.size) for f in dataset.fields] == [
        ("b1.png", "train", "Blast", (30, 20)),
        ("l1.jpg", "train", "Lymphocyte", (40, 40)),
        ("b2.png", "test", "Blast", (30, 20)),
    ]


def test_top_folders_that_are_not_all_splits_are_classes(tmp_path: Path):
    make_image(tmp_path / "train" / "x.png")
    make_image(tmp_path / "Blast" / "y.png")
    dataset = read_folders(tmp_path, log=ProblemLog(strict=True))
    assert dataset.classes.names == ("Blast", "train")
    assert {f.split for f in dataset.fields} == {None}


def test_given_vocabulary_keeps_its_order_and_absent_classes(tmp_path: Path):
    make_image(tmp_path / "Lymphocyte" / "a.png")
    vocabulary = Vocabulary("mine", ("Neutrophil", "Lymphocyte"))
    dataset = read_folders(tmp_path, log=ProblemLog(strict=True), vocabulary=vocabulary)
    assert dataset.classes is vocabulary and [f.cells[0].label for f in dataset.fields] == ["Lymphocyte"]


def test_hidden_files_are_ignored(tmp_path: Path):
    make_image(tmp_path / "Blast" / "a.png")
    (tmp_path / "Blast" / ".DS_Store").write_bytes(b"\0\0")
    (tmp_path / ".cache").mkdir()
    dataset = read_folders(tmp_path, log=ProblemLog(strict=True))
    assert len(dataset) == 1 and dataset.classes.names == ("Blast",)


def _not_an_image(root: Path) -> Path:
    return _write(root / "Blast" / "notes.txt", b"written by hand")


def _bad_image(root: Path) -> Path:
    return _write(root / "Blast" / "broken.png", b"\x89PNG but not really")


def _unknown_class(root: Path) -> Path:
    make_image(root / "Smudge" / "s.png")
    return root / "Smudge"


def _loose_image(root: Path) -> Path:
    return make_image(root / "loose.png")


def _nested_folder(root: Path) -> Path:
    make_image(root / "Blast" / "more" / "deep.png")
    return root / "Blast" / "more"


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


BROKEN = {
    "not-an-image": _not_an_image,
    "bad-image": _bad_image,
    "unknown-class": _unknown_class,
    "no-class-folder": _loose_image,
    "nested-folder": _nested_folder,
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_broken_input_is_logged_and_the_good_images_kept(tmp_path: Path, case: str):
    root = tmp_path / "cells"
    make_image(root / "Blast" / "good.png", (20, 10))
    make_image(root / "Lymphocyte" / "good2.png", (20, 10))
    culprit = BROKEN[case](root)
    kind = "not-an-image" if case == "nested-folder" else case
    vocabulary = Vocabulary("v", ("Blast", "Lymphocyte"))

    log = ProblemLog()
    dataset = read_folders(root, log=log, vocabulary=vocabulary)
    [problem] = log.problems
    assert problem.kind == kind
    assert problem.path == str(culprit) and culprit.name in str(problem)
    assert sorted(Path(f.image).name for f in dataset.fields) == ["good.png", "good2.png"]

    with pytest.raises(InputError) as error:
        read_folders(root, log=ProblemLog(strict=True), vocabulary=vocabulary)
    assert error.value.problem.kind == kind and culprit.name in str(error.value)


def test_unknown_class_names_the_vocabulary(tmp_path: Path):
    make_image(tmp_path / "Smudge" / "s.png")
    log = ProblemLog()
    read_folders(tmp_path, log=log, vocabulary=Vocabulary("v", ("Blast",)))
    [problem] = log.problems
    assert "'Smudge' is not in vocabulary 'v' (Blast)" in problem.message and problem.label == "Smudge"


def test_root_must_be_a_folder(tmp_path: Path):
    with pytest.raises(InputError, match="not a folder"):
        read_folders(tmp_path / "absent", log=ProblemLog())


# ------------------------------------------------------------------------------------------ hand-made: writing
def smear_with_two_cells(tmp_path: Path) -> Field:
    """A 100x80 white field with a red 30x20 cell at (10, 5) and a second cell given as normalised centre + size."""
    image = Image.new("RGB", (100, 80), WHITE)
    image.paste(RED, (10, 5, 40, 25))
    path = tmp_path / "fields" / "smear.png"
    path.parent.mkdir(parents=True)
    image.save(path)
    cells = [
        Cell(Box((10, 5, 40, 25)), "Blast", {"cell_size": "large"}),
        Cell(Box((0.75, 0.5, 0.2, 0.5), BoxFormat.CXCYWH, normalized=True), "Lymphocyte"),  # (65, 20)-(85, 60)
    ]
    return Field(path, 100, 80, cells, regions=[Box((0, 0, 90, 70))], domain=Domain(source="hand"), split="train")


def test_crops_have_the_size_and_pixels_of_their_boxes(tmp_path: Path):
    field = smear_with_two_cells(tmp_path)
    dataset = Dataset([field], Vocabulary("v", ("Blast", "Lymphocyte", "Monocyte")), LLD_SCHEMA)
    out = tmp_path / "out"
    report = write_folders(dataset, out)

    assert (report.files, report.fields, report.cells) == (2, 2, 2)
    assert names_in(out) == ["train"]
    assert names_in(out / "train") == ["Blast", "Lymphocyte", "Monocyte"]  # the empty class keeps its folder
    with Image.open(out / "train" / "Blast" / "smear_0.png") as blast:
        assert blast.size == (30, 20)
        assert blast.convert("RGB").getextrema() == ((255, 255), (0, 0), (0, 0))  # all red: the cell, nothing else
    with Image.open(out / "train" / "Lymphocyte" / "smear_1.png") as lymphocyte:
        assert lymphocyte.size == (20, 40)
    assert report.dropped == {
        "cell attributes": 1,
        "domain metadata (fields)": 1,
        "annotated regions (fields)": 1,
        "where each crop lay in its field (cells cut out)": 2,
    }
    again = read_folders(out, log=ProblemLog(strict=True))
    assert again.classes.names == ("Blast", "Lymphocyte", "Monocyte")
    assert sorted((f.split, f.cells[0].label, f.size) for f in again.fields) == [
        ("train", "Blast", (30, 20)),
        ("train", "Lymphocyte", (20, 40)),
    ]


@pytest.mark.parametrize(
    ("box", "padding", "size"),
    [
        (Box((10, 10, 30, 30)), 0.5, (40, 40)),  # 10 px on each side
        (Box((80, 70, 100, 80)), 0.25, (25, 13)),  # clipped right and bottom; 2.5 px on top rounds out to 3
        (Box((10.4, 10.6, 19.2, 20.0)), 0.0, (10, 10)),  # fractional edges round outwards
    ],
)
def test_padding_is_a_fraction_of_the_box_clipped_to_the_image(
    tmp_path: Path, box: Box, padding: float, size: tuple[int, int]
):
    image = make_image(tmp_path / "f.png", (100, 80))
    dataset = Dataset([Field(image, 100, 80, [Cell(box, "Blast")])], Vocabulary("v", ("Blast",)))
    write_folders(dataset, tmp_path / "out", padding=padding)
    with Image.open(tmp_path / "out" / "Blast" / "f_0.png") as crop:
        assert crop.size == size


def test_whole_image_cells_are_placed_unless_padded(tmp_path: Path):
    image = make_image(tmp_path / "in" / "cell.jpg", (50, 40))
    dataset = Dataset([Field(image, 50, 40, [Cell(whole_image_box((50, 40)), "Blast")])], Vocabulary("v", ("Blast",)))

    write_folders(dataset, tmp_path / "copied", images="copy")
    copied = tmp_path / "copied" / "Blast" / "cell.jpg"
    assert not copied.is_symlink() and copied.read_bytes() == image.read_bytes()

    write_folders(dataset, tmp_path / "padded", padding=0.1)
    assert names_in(tmp_path / "padded" / "Blast") == ["cell_0.png"]
    with Image.open(tmp_path / "padded" / "Blast" / "cell_0.png") as crop:
        assert crop.size == (50, 40)  # padding cannot grow past the image


def test_what_cannot_be_cut_is_counted(tmp_path: Path):
    a = make_image(tmp_path / "a.png", (50, 40))
    b = make_image(tmp_path / "sub" / "a.jpg", (50, 40))  # same stem: its crop name is taken
    c = make_image(tmp_path / "c.png", (50, 40))
    fields = [
        Field(a, 50, 40, [Cell(Box((0, 0, 10, 10)), "Blast"), Cell(Box((60, 60, 70, 70)), "Blast")], split="val"),
        Field(b, 50, 40, [Cell(Box((5, 5, 15, 15)), "Blast")], split="val"),
        Field(c, 50, 40, [], split="val"),
        Field(c, 50, 40, [Cell(Box((0, 0, 10, 10)), "Blast")], split=None),
        Field(c, 50, 40, [Cell(Box((0, 0, 10, 10)), "Blast")], split="holdout"),
    ]
    report = write_folders(Dataset(fields, Vocabulary("v", ("Blast",))), tmp_path / "out")
    assert report.cells == 1 and names_in(tmp_path / "out" / "val" / "Blast") == ["a_0.png"]
    assert report.dropped == {
        "cells whose box lies outside the image": 1,
        "crops whose name another crop already took": 1,
        "fields without cells": 1,
        "fields without a split beside fields with one": 1,
        "fields of split 'holdout' (only train, val, test can be folders)": 1,
        "where each crop lay in its field (cells cut out)": 1,
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"images": "none"}, "use link or copy"),
        ({"padding": -0.1}, "0 or more"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, options: dict, message: str):
    with pytest.raises(LeukolensError, match=message):
        write_folders(Dataset([], Vocabulary("v", ())), tmp_path / "out", **options)


def test_class_names_that_cannot_be_folders_are_refused(tmp_path: Path):
    image = make_image(tmp_path / "a.png")
    dataset = Dataset([Field(image, 64, 48, [Cell(whole_image_box((64, 48)), "T/NK")])], Vocabulary("v", ("T/NK",)))
    with pytest.raises(LeukolensError, match="cannot be a folder name"):
        write_folders(dataset, tmp_path / "out")
