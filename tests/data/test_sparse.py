"""The sparse-label simulator: rectangles of the asked area, the boxes inside kept, the same rectangle in every mode."""

import numpy as np
import pytest

from leukolens.data.sparse import random_region, sparsify, sparsify_field
from leukolens.io.common import LeukolensError
from leukolens.records import Box, Cell, Field


def _field(name: str = "a.jpg") -> Field:
    # A 640 x 480 field with a 10 x 10 cell centred every 40 px: 16 x 12 = 192 cells.
    cells = [Cell(Box((x - 5, y - 5, x + 5, y + 5)), "RBC") for x in range(20, 640, 40) for y in range(20, 480, 40)]
    return Field(name, 640, 480, cells)


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25, 0.5, 0.9])
def test_the_region_has_the_asked_area_and_lies_inside_the_field(fraction):
    for seed in range(20):
        x1, y1, x2, y2 = random_region(640, 480, fraction, np.random.default_rng(seed)).xyxy()
        assert (x2 - x1) * (y2 - y1) == pytest.approx(fraction * 640 * 480, rel=1e-6)
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
        assert 0.5 - 1e-9 <= (x2 - x1) / (y2 - y1) <= 2 + 1e-9


def test_a_whole_field_region_is_the_field():
    assert random_region(640, 480, 1.0, np.random.default_rng(0)).xyxy() == (0, 0, 640, 480)


def test_only_cells_centred_in_the_region_keep_their_labels():
    field = _field()
    sparse = sparsify_field(field, 0.1, mode="masked", seed=3)
    (region,) = sparse.regions
    x1, y1, x2, y2 = region.xyxy()
    inside = [c for c in field.cells if x1 <= c.box.values[0] + 5 <= x2 and y1 <= c.box.values[1] + 5 <= y2]
    assert sparse.cells == inside
    # Cells every 40 px: a rectangle of 10% of the area (30,720 px^2) holds about 30,720 / 1,600 = 19 centres.
    assert 10 <= len(sparse.cells) <= 30
    assert sparse.annotated_fraction() == pytest.approx(0.1)


def test_every_mode_sees_the_same_rectangle_and_naive_forgets_it():
    field = _field()
    masked = sparsify_field(field, 0.25, mode="masked", seed=1)
    pseudo = sparsify_field(field, 0.25, mode="pseudo", seed=1)
    naive = sparsify_field(field, 0.25, mode="naive", seed=1)
    assert masked.regions == pseudo.regions and masked.cells == pseudo.cells == naive.cells
    assert naive.regions == [] and naive.fully_annotated
    assert sparsify_field(field, 0.25, seed=2).regions != masked.regions


def test_the_rectangle_depends_on_the_field_not_its_position_in_the_list():
    a, b = _field("a.jpg"), _field("b.jpg")
    assert sparsify([a, b], 0.1)[1].regions == sparsify([b], 0.1)[0].regions
    # Nor on where the data set lives: a copy elsewhere (another machine, a temporary folder) sees the same rectangle.
    assert sparsify_field(_field("/data/x/a.jpg"), 0.1).regions == sparsify_field(_field("/tmp/y/a.jpg"), 0.1).regions


def test_fraction_one_keeps_the_field_and_bad_input_is_refused():
    field = _field()
    assert sparsify_field(field, 1.0, mode="naive") is field
    with pytest.raises(LeukolensError, match="sparse mode"):
        sparsify_field(field, 0.1, mode="random")
    with pytest.raises(LeukolensError, match="fraction"):
        sparsify_field(field, 0.0)
