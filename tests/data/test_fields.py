"""Field transforms move the image and its boxes together: checked against numbers computed by hand."""

import numpy as np
import pytest
from PIL import Image

from leukolens.data.fields import (
    PAD_COLOUR,
    FieldArrays,
    FieldAugmentConfig,
    augment_field,
    hflip,
    letterbox,
    random_window,
    rot90,
    vflip,
)


def test_letterbox_a_bccd_field():
    # 640 x 480 to longer side 512: scale 0.8, 512 x 384, already a multiple of 32.
    image = Image.new("RGB", (640, 480), (200, 100, 50))
    canvas, boxes, box = letterbox(image, np.array([[100, 50, 300, 250]]), size=512)
    assert canvas.shape == (384, 512, 3)
    assert boxes.tolist() == [[80, 40, 240, 200]]
    assert box.scale == pytest.approx(0.8)
    assert box.to_original(boxes).tolist() == [[100, 50, 300, 250]]


def test_letterbox_pads_right_and_bottom_to_the_stride():
    # 360 x 363 to 512: scale 512 / 363, width round(360 * 1.4105) = 508 -> canvas 512 wide, padded on the right.
    image = Image.new("RGB", (360, 363), (0, 0, 0))
    canvas, boxes, box = letterbox(image, np.array([[0, 0, 360, 363]]), size=512)
    assert canvas.shape == (512, 512, 3)
    assert boxes[0].tolist() == pytest.approx([0, 0, 508, 512])
    assert canvas[:, 508:].reshape(-1, 3).tolist() == [list(PAD_COLOUR)] * (512 * 4)
    assert canvas[:, :508].max() == 0
    assert box.to_original(np.array([[0, 0, 600, 600]]))[0].tolist() == pytest.approx([0, 0, 360, 363])  # clipped
    assert box.to_original(boxes)[0].tolist() == pytest.approx([0, 0, 360, 363])


def _marked(width=100, height=50, box=(10, 20, 30, 40)):
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image, np.array([box], np.float32)


def _bright_box(image):
    ys, xs = np.nonzero(image[..., 0] > 200)  # the marked square, not the padding
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_flips_move_boxes_with_the_pixels():
    image, boxes = _marked()
    flipped, moved = hflip(image, boxes)
    assert moved.tolist() == [[70, 20, 90, 40]] == [_bright_box(flipped)]
    flipped, moved = vflip(image, boxes)
    assert moved.tolist() == [[10, 10, 30, 30]] == [_bright_box(flipped)]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotations_move_boxes_with_the_pixels(k):
    image, boxes = _marked()
    turned, moved = rot90(image, boxes, k)
    assert moved.tolist() == [_bright_box(turned)]
    if k == 1:  # (x1, y1, x2, y2) -> (y1, W - x2, y2, W - x1)
        assert moved.tolist() == [[20, 70, 40, 90]]


def test_random_window_at_scale_one_on_a_small_image_keeps_every_box():
    image, boxes = _marked(60, 40, (10, 20, 30, 40))
    window, moved, labels = random_window(image, boxes, np.array([2]), out_size=64, scale=1.0,
                                          rng=np.random.default_rng(0))
    assert window.shape == (64, 64, 3) and labels.tolist() == [2]
    assert moved[0].tolist() == pytest.approx(_bright_box(window), abs=1)  # bilinear: edges within a pixel


def test_random_window_drops_boxes_mostly_outside():
    image, boxes = _marked(400, 400, (0, 0, 40, 40))
    rng = np.random.default_rng(0)
    kept = 0
    for _ in range(20):
        window, moved, labels = random_window(image, boxes, np.array([0]), out_size=100, scale=1.0, rng=rng)
        assert len(moved) == len(labels)
        if len(moved):
            kept += 1
            x1, y1, x2, y2 = moved[0]
            assert (x2 - x1) * (y2 - y1) >= 0.4 * 40 * 40 - 1e-3
    assert kept < 20


def test_a_field_without_cells_augments_to_an_empty_box_array():
    field = FieldArrays(np.zeros((48, 64, 3), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    image, boxes, labels, regions = augment_field(field, FieldAugmentConfig(window=32), np.random.default_rng(0))
    assert image.shape == (32, 32, 3) and boxes.shape == (0, 4) and labels.shape == (0,) and regions is None


def test_annotated_regions_travel_with_the_window_and_are_never_counted_as_cells():
    image = np.zeros((64, 64, 3), np.uint8)
    image[8:24, 8:24] = 255  # the annotated region, drawn so that it can be found after the transforms
    field = FieldArrays(image, np.array([[10, 10, 20, 20]], np.float32), np.array([0]), regions=np.array(
        [[8, 8, 24, 24]], np.float32))
    config = FieldAugmentConfig(window=64, scale=(1.0, 1.0))
    for seed in range(4):
        window, boxes, labels, regions = augment_field(field, config, np.random.default_rng(seed))
        assert labels.tolist() == [0] and len(regions) == 1
        assert regions[0].tolist() == pytest.approx(_bright_box(window), abs=1)
