"""Cells: attributes drawn with the documented probabilities, and drawn from those attributes."""

import numpy as np
import pytest

from leukolens.io.common import LeukolensError
from leukolens.records import LLD_SCHEMA, NOT_APPLICABLE
from leukolens.synth.cells import (
    CELL_TYPES,
    CHROMATIN,
    SIZE_DIAMETER_UM,
    annotate,
    draw_attributes,
    make_white_cell,
    render_white_cell,
)
from leukolens.synth.generate import render_cell


def test_attribute_frequencies_follow_the_table():
    rng = np.random.default_rng(0)
    drawn = [draw_attributes("Myeloblast", rng) for _ in range(3000)]
    kind = CELL_TYPES["Myeloblast"]
    for name, second in (("nucleolus", "prominent"), ("nuclear_chromatin", "coarse")):
        share = sum(a[name] == second for a in drawn) / len(drawn)
        assert share == pytest.approx(kind.odds[name], abs=0.03)
    large = sum(a["cell_size"] == "large" for a in drawn) / len(drawn)
    assert large == pytest.approx(kind.size[2], abs=0.03)


def test_not_applicable_where_the_table_says_so_and_valid_values_elsewhere():
    rng = np.random.default_rng(1)
    for label, kind in CELL_TYPES.items():
        attributes = draw_attributes(label, rng)
        assert list(attributes) == list(LLD_SCHEMA.names)
        for name, value in attributes.items():
            if name != "cell_size" and kind.odds[name] is None:
                assert value == NOT_APPLICABLE
            else:
                assert value in LLD_SCHEMA[name].values


def test_diameter_follows_cell_size():
    rng = np.random.default_rng(2)
    for _ in range(50):
        cell = make_white_cell("Lymphocyte", rng)
        low, high = SIZE_DIAMETER_UM[cell.attributes["cell_size"]]
        assert low <= cell.diameter_um <= high


def test_label_noise_misreads_at_its_rate_and_never_invents_applicability():
    rng = np.random.default_rng(3)
    truth = {"cell_size": "small", "nuclear_chromatin": "coarse", "nuclear_shape": NOT_APPLICABLE}
    flips = sum(annotate(truth, 0.2, rng)["nuclear_chromatin"] == "open" for _ in range(4000)) / 4000
    assert flips == pytest.approx(0.2, abs=0.03)
    assert all(annotate(truth, 0.9, rng)["nuclear_shape"] == NOT_APPLICABLE for _ in range(100))
    assert annotate(truth, 0.0, rng) == truth


def test_a_cell_keeps_its_shape_across_magnifications():
    cell = make_white_cell("Neutrophil", np.random.default_rng(4))
    high, low = render_white_cell(cell, 12.0), render_white_cell(cell, 4.8)
    width_high = high.body[2] - high.body[0]
    width_low = low.body[2] - low.body[0]
    assert width_low == pytest.approx(width_high * 0.4, abs=2)
    assert np.isfinite(high.materials).all() and high.materials[CHROMATIN].max() > 0.5


def test_forced_attributes_are_drawn_and_labelled():
    image, cell = render_cell("Myeloblast", seed=1, size=200, attributes={"nucleolus": "prominent"})
    assert image.size == (200, 200)
    assert cell.attributes["nucleolus"] == "prominent"


@pytest.mark.parametrize(
    "label, attributes, message",
    [
        ("Blast", None, "unknown white-cell class 'Blast'"),
        ("Basophil", {"nucleolus": "prominent"}, "Basophil: nucleolus cannot be 'prominent'"),
        ("Lymphocyte", {"nucleoli": "prominent"}, "unknown LLD attribute 'nucleoli'"),
        ("Lymphocyte", {"cell_size": "huge"}, "cell_size cannot be 'huge'; it can be small, medium, large"),
    ],
)
def test_unknown_class_or_attribute_is_a_clear_error(label, attributes, message):
    with pytest.raises(LeukolensError, match=message):
        render_cell(label, attributes=attributes)
