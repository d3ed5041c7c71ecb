"""The detector brings fields to its working scale: letterbox as before, the scale given or estimated per sample,
large fields tiled; with a tiny untrained detector whose every output cell is a white-cell peak."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from leukolens.errors import LeukolensError
from leukolens.predict.fields import Detector
from leukolens.predict.scale import FALLBACK, LETTERBOX, OVERRIDE, RED_CELLS, FieldScale
from tests.conftest import every_cell_a_wbc_detector


@pytest.fixture(scope="module")
def detector():
    """64 px input; every output cell (stride 8) a WBC peak at its centre with a 16 px box (8 x 6 on 64 x 48)."""
    return Detector(every_cell_a_wbc_detector(), engine="torch")


def test_letterbox_keeps_the_training_preprocessing(detector):
    field = Image.new("RGB", (640, 480), (200, 150, 160))
    found = detector.detect([field], scale="letterbox")[0]
    # 640 x 480 -> 64 x 48: 8 x 6 peaks, boxes 16 canvas px = 160 native px around centres 40 + 80 k
    assert len(found) == 48 and found.tiles == 1
    assert found.scale == FieldScale(None, 0.1, 0, LETTERBOX, fields=0)
    first = found.boxes[np.argmin(found.boxes.sum(1))]
    np.testing.assert_allclose(first, [0, 0, 120, 120], atol=1e-3)  # (40 +- 80) clipped at the border


def test_without_red_cells_auto_falls_back_to_the_letterbox(detector):
    field = Image.new("RGB", (640, 480), (200, 150, 160))
    auto = detector.detect([field])[0]
    plain = detector.detect([field], scale="letterbox")[0]
    assert auto.scale.method == FALLBACK and auto.scale.factor == 0.1 and auto.scale.fields == 1
    np.testing.assert_array_equal(auto.boxes, plain.boxes)


def test_a_given_scale_tiles_a_large_field_and_maps_boxes_to_native_pixels(detector):
    field = Image.new("RGB", (1000, 700), (200, 150, 160))
    # factor 0.2: 200 x 140 working px, tiles of 64 overlapping by min(ceil(2.4 * 10.075), 32) = 25:
    # ceil((200 - 25) / 39) = 5 across, ceil((140 - 25) / 39) = 3 down
    scale = FieldScale(0.05, 0.2, 12, RED_CELLS, fields=3)
    found = detector.detect([field], field_scale=scale)[0]
    assert found.tiles == 15 and found.scale == scale and found.canvas_size == (1000, 700)
    assert found.boxes.min() >= 0 and found.boxes[:, 2].max() <= 1000 and found.boxes[:, 3].max() <= 700
    # the top-left tile's first peak: centre 4 working px, box +-8 -> clipped to 0..12 working, 0..60 native
    np.testing.assert_allclose(found.boxes[np.argmin(found.boxes.sum(1))], [0, 0, 60, 60], atol=1e-3)
    override = detector.detect([field], microns_per_pixel=0.05)[0]
    assert override.scale.method == OVERRIDE and override.scale.microns_per_pixel == 0.05


def test_the_sample_scale_looks_at_the_first_three_fields_once_for_all(detector, monkeypatch):
    seen = []
    given = FieldScale(0.1, 0.5, 10, RED_CELLS, fields=3)
    monkeypatch.setattr(detector, "_sample_scale", lambda arrays, mpp: seen.append(len(arrays)) or given)
    fields = [Image.new("RGB", (640, 480))] * 5
    assert detector.sample_scale(fields) is given and seen == [3]
    # detect on its own estimates once per image size, on up to three images of that size
    found = detector.detect([*fields, Image.new("RGB", (320, 240))])
    assert seen == [3, 3, 1] and all(f.scale == given for f in found)


def test_an_unknown_scale_mode_is_refused(detector):
    with pytest.raises(LeukolensError, match="unknown scale 'zoom': use one of auto, letterbox"):
        detector.detect([Image.new("RGB", (64, 48))], scale="zoom")


def test_a_field_just_over_one_input_is_fitted_into_it(detector):
    field = Image.new("RGB", (640, 480), (200, 150, 160))
    # factor 0.11: 70 x 53 working px, over the 64 px input by 1.1 (< 1.2): one input at 0.1 instead of two tiles
    found = detector.detect([field], field_scale=FieldScale(0.1, 0.11, 9, RED_CELLS, fields=1))[0]
    assert found.tiles == 1 and found.scale.factor == pytest.approx(0.1) and found.scale.microns_per_pixel == 0.1
    # factor 0.13 (83 px, 1.3x over): tiled at its own factor
    found = detector.detect([field], field_scale=FieldScale(0.1, 0.13, 9, RED_CELLS, fields=1))[0]
    assert found.tiles == 2 and found.scale.factor == 0.13
