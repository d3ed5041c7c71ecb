"""The field-scale estimate, tiling and merging: hand-computed layouts and boxes, a stand-in detector on drawn discs,
and the shipped detector on real BCCD and Chula fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import leukolens
from leukolens.models.detector import Detections
from leukolens.predict.scale import (
    FALLBACK,
    OVERRIDE,
    RBC_MICRONS,
    RED_CELLS,
    ScaleConfig,
    Tile,
    axis_starts,
    box_iou,
    class_nms,
    detect_at_scale,
    diameters,
    estimate_sample_scale,
    estimate_scale,
    fitted_factor,
    learnt_rbc_diameter,
    merge_tiles,
    resize,
    tile_field,
    tile_layout,
    whole_boxes,
)

CLASSES = ("WBC", "RBC", "Platelets")


# ------------------------------------------------------------------------------------------------------ tiles
def test_axis_starts_spread_evenly_and_overlap_by_at_least_the_asked_amount():
    # ceil((1000 - 200) / (512 - 200)) = 3 windows; starts 0, 488 / 2, 488; neighbours overlap by 512 - 244 = 268
    assert axis_starts(1000, 512, 200) == [0, 244, 488]
    assert axis_starts(512, 512, 200) == [0]
    assert axis_starts(300, 512, 200) == [0]
    # 513 px need two windows: 0 and 1, overlapping by 511
    assert axis_starts(513, 512, 200) == [0, 1]


def test_tile_layout_covers_the_field_with_overlap_and_marks_inner_sides():
    tiles = tile_layout(1000, 600, tile_size=512, overlap=200)
    # x: 0, 244, 488; y: ceil(400 / 312) = 2 rows at 0 and 88
    assert [(t.x, t.y) for t in tiles] == [(0, 0), (244, 0), (488, 0), (0, 88), (244, 88), (488, 88)]
    assert all((t.width, t.height) == (512, 512) for t in tiles)
    covered = np.zeros((600, 1000), int)
    for t in tiles:
        covered[t.y : t.y + t.height, t.x : t.x + t.width] += 1
    assert covered.min() >= 1
    assert tiles[0].inner_sides == (False, False, True, True)  # field's left and top, inner right and bottom
    assert tiles[4].inner_sides == (True, True, True, False)
    # a field smaller than a tile is one tile, the whole field, with no inner side
    assert tile_layout(400, 300, tile_size=512, overlap=200) == [Tile(0, 0, 400, 300, (False,) * 4)]


def test_tile_field_resizes_then_cuts_tiles_no_larger_than_the_input():
    image = np.zeros((500, 800, 3), np.uint8)
    tiles, images = tile_field(image, factor=1.5, tile_size=512, overlap=200)  # working field 1200 x 750
    assert max(t.x + t.width for t in tiles) == 1200 and max(t.y + t.height for t in tiles) == 750
    assert all(im.shape == (t.height, t.width, 3) for t, im in zip(tiles, images))
    assert all(im.shape[0] <= 512 and im.shape[1] <= 512 for im in images)


def test_class_nms_keeps_the_best_box_per_cell_and_class():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.6, 0.9, 0.5, 0.4], np.float32)
    labels = np.array([0, 0, 1, 0])
    # boxes 0 and 1 overlap with IoU 90 / 110 = 0.82 in one class: 1 wins; box 2 is another class; box 3 alone
    assert sorted(class_nms(boxes, scores, labels, iou=0.5).tolist()) == [1, 2, 3]


def test_merge_tiles_maps_back_to_native_pixels_and_keeps_one_box_per_cell():
    left, right = Tile(0, 0, 512, 512, (False, False, True, False)), Tile(300, 0, 512, 512, (True, False, False, False))
    found_left = Detections(
        np.array([[450, 100, 512, 200], [320, 300, 400, 380], [10, 10, 50, 50]], np.float32),  # cut; whole; alone
        np.array([0.9, 0.8, 0.7], np.float32),
        np.array([0, 1, 2]),
    )
    found_right = Detections(
        np.array([[150, 100, 250, 200], [20, 300, 100, 380], [21, 301, 101, 381]], np.float32),  # whole; same; RBC
        np.array([0.85, 0.7, 0.6], np.float32),
        np.array([0, 1, 2]),  # the last one is another class at the RBC's place: kept
    )
    merged = merge_tiles([found_left, found_right], [left, right], factor=0.5)
    order = np.argsort(-merged.scores)
    # the white cell cut by the left tile's right side is dropped for its whole self in the right tile (450..550),
    # the red cell seen whole in both keeps its better box, and everything is divided by the factor 0.5
    np.testing.assert_allclose(
        merged.boxes[order],
        [[900, 200, 1100, 400], [640, 600, 800, 760], [20, 20, 100, 100], [642, 602, 802, 762]],
    )
    np.testing.assert_allclose(merged.scores[order], [0.85, 0.8, 0.7, 0.6])
    assert merged.labels[order].tolist() == [0, 1, 2, 2]


def test_a_cut_box_stays_when_no_tile_sees_the_cell_whole():
    tile = Tile(0, 0, 512, 512, (False, False, True, False))
    found = Detections(np.array([[470, 10, 512, 90]], np.float32), np.array([0.9], np.float32), np.array([0]))
    merged = merge_tiles([found], [tile], factor=1.0)
    assert len(merged) == 1


def test_merge_of_empty_tiles_is_empty():
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    merged = merge_tiles([empty, empty], tile_layout(900, 400, tile_size=512, overlap=100), factor=1.0)
    assert len(merged) == 0 and merged.boxes.shape == (0, 4)


def test_detect_at_scale_never_shrinks_a_large_field_into_one_input():
    seen = []

    def detect(image):
        seen.append(image.shape)
        h, w = image.shape[:2]
        return np.array([[w / 2 - 5, h / 2 - 5, w / 2 + 5, h / 2 + 5]], np.float32), np.ones(1), np.zeros(1, int)

    field = np.zeros((1944, 2592, 3), np.uint8)
    found = detect_at_scale(field, detect, factor=0.5, tile_size=512, overlap=200)  # working 1296 x 972
    # ceil((1296 - 200) / 312) = 4 columns, ceil((972 - 200) / 312) = 3 rows
    assert len(seen) == 4 * 3 and all(h <= 512 and w <= 512 for h, w, _ in seen)
    # the first tile's centre box (256 +- 5 working px) lands at 512 +- 10 native px
    np.testing.assert_allclose(found.boxes[np.argmin(found.boxes.sum(1))], [502, 502, 522, 522])


# ------------------------------------------------------------------------------------------------------ estimate
def disc_field(diameter: float, *, width: int = 640, height: int = 480) -> np.ndarray:
    """Dark discs of ``diameter`` pixels on white, in a grid with gaps of half a diameter."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    step = 1.5 * diameter
    for cy in np.arange(diameter, height - diameter / 2, step):
        for cx in np.arange(diameter, width - diameter / 2, step):
            draw.ellipse((cx - diameter / 2, cy - diameter / 2, cx + diameter / 2, cy + diameter / 2), fill=(90, 0, 60))
    return np.asarray(image)


def disc_detector(*, learnt: float = 80.6, shrink: float = 1.0):
    """A stand-in detector: the dark discs as red cells, found only at 0.7x to 1.4x the learnt diameter, their
    sizes pulled towards it by ``shrink`` < 1 as a size head does."""
    ndimage = pytest.importorskip("scipy.ndimage")

    def detect(image):
        labelled, count = ndimage.label(image[..., 1] < 128)
        boxes = []
        for rows, cols in ndimage.find_objects(labelled):
            boxes.append([cols.start, rows.start, cols.stop, rows.stop])
        boxes = np.array(boxes, np.float32).reshape(-1, 4)
        size = diameters(boxes)
        keep = (size >= 0.7 * learnt) & (size <= 1.4 * learnt)
        boxes, size = boxes[keep], size[keep]
        reported = learnt * (size / learnt) ** shrink
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        boxes = np.concatenate([centres - reported[:, None] / 2, centres + reported[:, None] / 2], axis=1)
        return boxes.astype(np.float32), np.full(len(boxes), 0.9, np.float32), np.ones(len(boxes), np.int64)

    return detect


@pytest.mark.parametrize("shrink", [1.0, 0.7])
def test_estimate_finds_the_disc_size_whichever_factor_is_tried_first(shrink):
    scale = estimate_scale(disc_field(40), disc_detector(shrink=shrink), classes=CLASSES)
    # a 40 px red cell: 7.5 / 40 = 0.1875 µm per pixel, and 80.6 / 40 = 2.015 to the working scale
    assert scale.method == RED_CELLS and scale.red_cells >= 3
    assert scale.microns_per_pixel == pytest.approx(RBC_MICRONS / 40, rel=0.03)
    assert scale.factor == pytest.approx(80.6 / 40, rel=0.03)


def test_the_override_sets_the_factor_from_microns_per_pixel():
    scale = estimate_scale(disc_field(40), disc_detector(), classes=CLASSES, microns_per_pixel=0.1)
    # a 7.5 µm red cell is 75 native pixels: 80.6 / 75 = 1.0747
    assert scale.method == OVERRIDE and scale.red_cells == 0
    assert scale.factor == pytest.approx(80.6 / 75) and scale.microns_per_pixel == 0.1
    with pytest.raises(ValueError):
        estimate_scale(disc_field(40), disc_detector(), classes=CLASSES, microns_per_pixel=0)


def test_no_red_cells_falls_back_to_the_letterbox_and_says_so():
    def nothing(image):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)

    scale = estimate_scale(np.full((600, 960, 3), 255, np.uint8), nothing, classes=CLASSES)
    assert scale == type(scale)(None, 512 / 960, 0, FALLBACK)
    # a detector without a red-cell class cannot tell either
    assert estimate_scale(disc_field(40), disc_detector(), classes=("WBC",)).method == FALLBACK


def test_a_sample_pools_the_red_cells_of_fields_too_few_each():
    # two whole 40 px discs per field (centres 40 and 100 on a 140 x 80 field): fewer than three each, four together
    fields = [disc_field(40, width=140, height=80)] * 2
    assert estimate_scale(fields[0], disc_detector(), classes=CLASSES).method == FALLBACK
    scale = estimate_sample_scale(fields, disc_detector(), classes=CLASSES)
    assert scale.method == RED_CELLS and scale.red_cells == 4 and scale.fields == 2
    assert scale.factor == pytest.approx(80.6 / 40, rel=0.03)


def test_a_sample_looks_at_more_fields_only_while_its_red_cells_are_too_few():
    calls = []
    detect = disc_detector()

    def counting(image):
        calls.append(image.shape)
        return detect(image)

    # a 640 x 480 field of 40 px discs holds far more than 15 whole ones at the best factor: the first field is enough
    scale = estimate_sample_scale([disc_field(40)] * 3, counting, classes=CLASSES)
    assert scale.method == RED_CELLS and scale.fields == 1 and scale.red_cells >= 15
    assert len(calls) <= 6 + 2  # six candidates and two refinements on one field


def test_fitted_factor_brings_a_field_just_over_one_input_into_it():
    config = ScaleConfig(input_size=512)
    assert fitted_factor(0.85, 640, 480, config) == 0.8  # 544 px: 1.06 over one 512 px input
    assert fitted_factor(1.0, 640, 480, config) == 1.0  # 640 px: 1.25 over, tiled
    assert fitted_factor(0.7, 640, 480, config) == 0.7  # fits already


def test_the_learnt_diameter_comes_from_the_checkpoint_when_stored():
    assert learnt_rbc_diameter(input_size=512) == 80.6
    assert learnt_rbc_diameter(input_size=1024) == pytest.approx(161.2)
    assert learnt_rbc_diameter(input_size=512, metrics={"rbc_diameter": 64.0}) == 64.0


def test_whole_boxes_leaves_out_boxes_cut_by_the_border():
    boxes = np.array([[0, 10, 20, 30], [10, 10, 30, 30], [80, 10, 100, 30]], np.float32)
    assert whole_boxes(boxes, 100, 50).tolist() == [False, True, False]


# ------------------------------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def shipped_detect():
    """The shipped detector as a callable at the image's own pixels (padded to a multiple of 32, never resized)."""
    import torch

    from leukolens.data.fields import PAD_COLOUR
    from leukolens.models.detector import FieldNetwork, decode, load_detector
    checkpoint = load_detector(Path(leukolens.__file__).parent / "weights" / "detector-bccd.pt")
    network = FieldNetwork(checkpoint.build(), checkpoint.mean, checkpoint.std).eval()

    def detect(image):
        height, width = image.shape[:2]
        canvas = np.empty((1, -(-height // 32) * 32, -(-width // 32) * 32, 3), np.uint8)
        canvas[:] = PAD_COLOUR
        canvas[0, :height, :width] = image
        with torch.inference_mode():
            outputs = [o.numpy() for o in network(torch.from_numpy(canvas))]
        found = decode(*outputs, stride=checkpoint.config.stride, threshold=0.01)[0]
        centres = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2
        inside = (centres[:, 0] < width) & (centres[:, 1] < height)  # no peak in the padding
        boxes = found.boxes[inside].copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        return boxes, found.scores[inside], found.labels[inside]

    return detect, checkpoint.classes


@pytest.mark.slow
@pytest.mark.parametrize("resized", [0.5, 2.0])
def test_bccd_fields_resized_get_their_factor_and_their_white_cell_back(shared_data, shipped_detect, resized):
    from leukolens.data.cells import load_image
    from leukolens.data.fields import boxes_of
    from leukolens.io import ProblemLog, read_dataset
    from leukolens.records import Vocabulary

    detect, classes = shipped_detect
    fields = read_dataset(shared_data / "bccd", log=ProblemLog()).splits["test"][:3]
    for field in fields:
        image = resize(np.asarray(load_image(field.image)), resized)
        scale = estimate_scale(image, detect, classes=classes)
        # BCCD letterboxed (640 -> 512, 0.8) is the learnt scale: a field resized by r wants 0.8 / r
        assert scale.method == RED_CELLS
        assert scale.factor == pytest.approx(0.8 / resized, rel=0.2)
        found = detect_at_scale(image, detect, factor=scale.factor)
        truth, labels = boxes_of(field, Vocabulary("detector", classes))
        wbc = found.boxes[(found.labels == 0) & (found.scores >= 0.45)]
        assert (box_iou(truth[labels == 0] * resized, wbc).max(axis=1) >= 0.5).all()


@pytest.mark.slow
def test_chula_fields_get_a_scale_at_which_white_cells_are_white_cell_sized(shared_data, shipped_detect):
    from leukolens.data.cells import load_image
    from leukolens.io import ProblemLog, read_dataset

    detect, classes = shipped_detect
    fields = read_dataset(shared_data / "chula", log=ProblemLog()).fields[::60]  # six fields, six slides
    ratios = []
    for field in fields:
        scale = estimate_scale(np.asarray(load_image(field.image)), detect, classes=classes)
        if scale.method != RED_CELLS:  # the shipped detector finds too few red cells on some of these pale fields
            continue
        red_cell = RBC_MICRONS / scale.microns_per_pixel  # native pixels
        white = np.array([c.box.pixels_xyxy(field.size) for c in field.cells], np.float32)
        ratios.append(float(np.median(diameters(white))) / red_cell)
    # a white cell is 1.2 to 2.6 red cells across (lymphocyte 7-10 µm ... monocyte 15-20 µm)
    assert len(ratios) >= 5, ratios
    assert 1.2 <= float(np.median(ratios)) <= 2.6, ratios
