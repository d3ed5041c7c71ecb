from pathlib import Path

import numpy as np

from leukolens.records import LLD_CLASSES, LLD_SCHEMA, NOT_APPLICABLE, Box, Cell, Field
from leukolens.report.overlay import attribute_lines, draw_field
from tests.conftest import make_image


def _field(tmp_path: Path, *, attributes: dict, regions: list) -> Field:
    image = make_image(tmp_path / "f.png", (200, 100), colour=(120, 60, 160))
    cell = Cell(Box((20, 20, 60, 60)), "Myeloblast", attributes)
    return Field(image, 200, 100, [cell], regions)


def test_outside_the_annotated_region_is_dimmed(tmp_path):
    field = _field(tmp_path, attributes={}, regions=[Box((100, 0, 200, 100))])
    drawn = np.asarray(draw_field(field, LLD_CLASSES)).astype(int)
    assert drawn.shape == (100, 200, 3)  # no attributes: no side panel
    inside, outside = drawn[50, 150], drawn[80, 90]
    assert tuple(inside) == (120, 60, 160)
    assert all(outside > inside)  # blended towards white


def test_attributes_are_listed_in_a_side_panel(tmp_path):
    attributes = {"cell_size": "large", "nucleolus": "prominent", "cytoplasmic_vacuoles": NOT_APPLICABLE}
    field = _field(tmp_path, attributes=attributes, regions=[])
    drawn = draw_field(field, LLD_CLASSES, schema=LLD_SCHEMA)
    assert drawn.height == 100 and drawn.width > 200
    assert attribute_lines(attributes, LLD_SCHEMA) == ["cell size: large", "nucleolus: prominent"]
    panel = np.asarray(drawn)[:, 200:]
    assert (panel < 128).any()  # text was written on the white panel
