"""The words and the grouping of the report's cells, and the CSV's text, on hand-made cells."""

from __future__ import annotations

from leukolens.report.html import (
    ATYPICAL_GROUP,
    BLAST_GROUP,
    NOT_TYPED_GROUP,
    blast_features,
    cell_sentence,
    gallery_groups,
)
from leukolens.report.page import ChartRow, differential_chart
from leukolens.report.table import cell_rows


def attribute(value: str, probabilities: dict[str, float]) -> dict:
    return {"value": value, "probability": probabilities[value], "probabilities": probabilities}


BLAST_LIKE = {
    "cell_size": attribute("big", {"small": 0.1, "big": 0.9}),
    "nuclear_cytoplasmic_ratio": attribute("high", {"low": 0.2, "high": 0.8}),
    "chromatin_density": attribute("loosely", {"densely": 0.3, "loosely": 0.7}),
    "granule_type": attribute("small", {"small": 0.6, "round": 0.1, "coarse": 0.1, "nil": 0.2}),
    "granularity": attribute("no", {"no": 0.6, "yes": 0.4}),
    "cytoplasm_colour": attribute("light blue", {"light blue": 0.8, "blue": 0.1, "purple blue": 0.1}),
}


def cell(number: int, label: str | None, **extra) -> dict:
    found = {"id": number, "box_xyxy": [0.0, 0.0, 10.0, 10.0], "detector_class": "WBC", "detector_score": 0.9}
    if label is not None:
        found |= {"type": label, "type_probability": 0.8, "type_probabilities": {label: 0.8}, "attributes": {},
                  "atypicality": 0.1, "verdict": "typical", "blast_probability": 0.1, "blast_suspected": False}
    return found | extra


def test_a_typed_cell_is_described_from_its_own_attributes():
    lymphocyte = cell(1, "Lymphocyte", attributes={
        "cell_size": attribute("small", {"small": 0.9, "big": 0.1}),
        "chromatin_density": attribute("densely", {"densely": 0.8, "loosely": 0.2}),
    })
    assert cell_sentence(lymphocyte) == "A small lymphocyte with dense clumped chromatin."
    assert cell_sentence(cell(2, "Monocyte")) == "A monocyte."
    assert cell_sentence(cell(3, None)) == "WBC (not typed)."
    unknown = {"made_up": attribute("x", {"x": 1.0})}  # no schema has it: the type alone
    assert cell_sentence(cell(4, "Mystery type", attributes=unknown)) == "A mystery type."


def test_a_suspected_blast_is_called_so_with_its_blast_like_features():
    blast = cell(1, "Lymphocyte", attributes=BLAST_LIKE, blast_suspected=True, blast_probability=0.9)
    assert blast_features(blast) == ("large cell", "high nuclear-to-cytoplasmic ratio",
                                     "loosely packed (fine) chromatin", "no granules")
    sentence = cell_sentence(blast)
    assert sentence.startswith("A large blast (suspected) with a high nuclear-to-cytoplasmic ratio, loosely packed")
    assert "granules" in sentence and "small granules" not in sentence  # no granules: no granule type said
    assert sentence.endswith("Blast-like: large cell, high nuclear-to-cytoplasmic ratio, loosely packed (fine) "
                             "chromatin and no granules.")
    assert blast_features(cell(2, "Lymphocyte")) == ("resembles the blast examples",)


def test_the_gallery_puts_suspected_blasts_then_atypical_cells_first_and_every_white_cell_once():
    fields = [
        ("f1", {"cells": [
            cell(1, "Neutrophil"),
            cell(2, "Lymphocyte", blast_suspected=True, blast_probability=0.6),
            cell(3, "Lymphocyte", verdict="atypical, review", atypicality=0.5),
            {"id": 4, "box_xyxy": [0, 0, 5, 5], "detector_class": "RBC", "detector_score": 0.9},
            cell(5, None),
        ]}),
        ("f2", {"cells": [
            cell(1, "Lymphocyte"),
            cell(2, "Neutrophil", verdict="atypical, review", atypicality=0.9),
            cell(3, "Monocyte", blast_suspected=True, blast_probability=0.95),
        ]}),
    ]
    summary = {"interpretation": {"differential": {
        "Lymphocyte": {"count": 3, "percent": 50.0}, "Neutrophil": {"count": 2, "percent": 33.3},
        "Monocyte": {"count": 1, "percent": 16.7},
    }}}
    groups = [(name, [(stem, c["id"]) for stem, c in cells]) for name, cells in gallery_groups(summary, fields)]
    assert groups == [
        (BLAST_GROUP, [("f2", 3), ("f1", 2)]),
        (ATYPICAL_GROUP, [("f2", 2), ("f1", 3)]),
        ("Lymphocyte", [("f2", 1)]),
        ("Neutrophil", [("f1", 1)]),
        (NOT_TYPED_GROUP, [("f1", 5)]),
    ]


def test_the_chart_has_a_bar_and_a_whisker_per_row_and_escapes_names():
    svg = differential_chart([ChartRow("A<b>", 3, 30.0, 10.0, 60.0), ChartRow("C", 7, 70.0)])
    assert svg.count("<rect") == 2 and "A&lt;b&gt;" in svg and "A<b>" not in svg
    assert svg.count("<line") == 1 + 3 + 5  # the axis, one whisker with its two caps, grid lines at 0-80%
    assert [f">{k}%</text>" in svg for k in (0, 20, 40, 60, 80, 100)] == [True] * 5 + [False]
    assert "3 (30.0%)" in svg and "7 (70.0%)" in svg


def test_csv_text_is_never_a_formula_and_missing_values_are_empty():
    fields = [("=cmd", {"image": "+x.jpg", "cells": [
        cell(1, "Neutrophil", attributes={"cell_size": attribute("big", {"small": 0.25, "big": 0.75})}),
        {"id": 2, "box_xyxy": [1.5, 2, 3, 4], "detector_class": "RBC", "detector_score": 0.5},
    ]})]
    header, rows = cell_rows(fields)
    assert header[-2:] == ["cell_size", "cell_size_probability"]
    assert rows[0][:3] == ["'=cmd", "'+x.jpg", 1]
    assert rows[0][header.index("blast_suspected")] == "false" and rows[0][-2:] == ["big", 0.75]
    assert rows[1][header.index("type")] == "" and rows[1][-2:] == ["", ""] and rows[1][3] == 1.5
