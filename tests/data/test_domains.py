"""Typed white cells from several microscopes: one vocabulary, BCCD's side file, splits by slide."""

from collections import Counter

from leukolens.data.domains import VAL_SHARE, WBC_CLASSES, canonical_class, slide_splits, typed_cells


def test_class_names_meet_in_one_vocabulary():
    assert canonical_class("NEUTROPHIL") == "Neutrophil"
    assert canonical_class(" immature granulocyte ") == "Immature granulocyte"
    assert canonical_class("RBC") is None and canonical_class("WBC") is None


def test_slide_split_keeps_whole_slides_and_half_of_every_class():
    # Slide "big" holds most monocytes: it can never go to validation.
    slides = ["big"] * 60 + ["a"] * 10 + ["b"] * 10 + ["c"] * 10 + ["d"] * 10
    labels = ["Monocyte"] * 50 + ["Lymphocyte"] * 10 + ["Lymphocyte"] * 10 + ["Neutrophil"] * 10 + ["Monocyte"] * 5 + [
        "Neutrophil"
    ] * 5 + ["Basophil"] * 10
    splits = slide_splits(slides, labels)
    assert set(splits) == {"big", "a", "b", "c", "d"} and splits["big"] == "train"
    val = [lab for s, lab in zip(slides, labels) if splits[s] == "val"]
    assert 0 < len(val) <= VAL_SHARE * len(labels)
    totals, in_val = Counter(labels), Counter(val)
    assert all(in_val[c] <= totals[c] / 2 for c in totals)


def test_bccd_cells_typed_from_its_side_file(shared_data):
    cells = typed_cells(shared_data / "bccd")
    counts = Counter(WBC_CLASSES[c.sample.label] for c in cells)
    # wbc_types.csv: 341 fields with one WBC box and one named type (202 neutrophils, 84 eosinophils, ...).
    assert len(cells) == 341 and counts["Neutrophil"] == 202 and counts["Basophil"] == 2
    assert {c.split for c in cells} == {"train", "val", "test"} and {c.domain for c in cells} == {"BCCD"}


def test_chula_split_by_slide_never_by_field(shared_data):
    cells = typed_cells(shared_data / "chula")
    assert len(cells) == 387
    split_of_slide = {}
    for c in cells:
        assert split_of_slide.setdefault(c.slide, c.split) == c.split  # one split per slide
    assert set(split_of_slide.values()) == {"train", "val"}
