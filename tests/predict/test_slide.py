"""Walking a slide in windows: the cores the windows own tile the slide, each box is kept by one window, cut boxes
are dropped, and windows are sized to whole numbers of detector inputs."""

import numpy as np
import pytest

from leukolens.models.detector import Detections
from leukolens.predict.scale import Tile, merge_tiles, scale_from_microns_per_pixel
from leukolens.predict.slide import SlideConfig, Window, _owned, window_layout, window_overlap


def test_windows_cores_tile_the_slide_and_leave_half_the_overlap_to_each_inner_border():
    overlap = 300
    windows = window_layout(2500, 1700, window=1000, overlap=overlap)
    owner = np.zeros((1700, 2500), np.int32)
    for w in windows:
        x0, y0, x1, y1 = w.core
        owner[y0:y1, x0:x1] += 1
        # a cell centred in the core and up to the overlap wide is whole in the window
        assert x0 - w.x >= (overlap // 2 if w.x > 0 else 0) and w.x + w.width - x1 >= (
            overlap // 2 if w.x + w.width < 2500 else 0)
        assert y0 - w.y >= (overlap // 2 if w.y > 0 else 0) and w.y + w.height - y1 >= (
            overlap // 2 if w.y + w.height < 1700 else 0)
    assert (owner == 1).all()


def test_a_window_keeps_the_boxes_centred_in_its_core_and_marks_those_near_its_edge():
    window = Window(400, 0, 600, 600, core=(550, 0, 850, 600))  # neighbours left and right, slide 1200 x 600
    boxes = np.array([
        [640, 100, 760, 220],  # centred mid-core: kept, no twin possible
        [535, 300, 555, 320],  # centre 545: 5 px left of the core, within the margin: kept, near
        [480, 300, 500, 320],  # centre 490: the left neighbour's: dropped
        [400, 400, 480, 480],  # cut by the window's left border (centre 440): dropped
        [820, 500, 870, 550],  # centre 845: in the core, 5 px from its right edge: kept, near
    ], np.float32)
    keep, near = _owned(boxes, window, margin=10, slide_size=(1200, 600))
    assert keep.tolist() == [True, True, False, False, True]
    assert near.tolist() == [False, True, False, False, True]
    # the slide's own border is no window border: nothing there is near
    corner = Window(0, 0, 600, 600, core=(0, 0, 450, 600))
    keep, near = _owned(np.array([[0, 0, 20, 20]], np.float32), corner, margin=10, slide_size=(1200, 600))
    assert keep.tolist() == [True] and near.tolist() == [False]


def test_a_cell_cut_a_few_pixels_short_of_a_tile_side_is_dropped_for_its_whole_self():
    left, right = Tile(0, 0, 512, 512, (False, False, True, False)), Tile(300, 0, 512, 512, (True, False, False, False))
    # the detector's box of the cut cell stops 6 px before the cut: IoU with the whole box just under 0.5
    cut = Detections(np.array([[402, 100, 506, 290]], np.float32), np.array([0.63], np.float32), np.array([0]))
    whole = Detections(np.array([[86, 103, 308, 286]], np.float32), np.array([0.69], np.float32), np.array([0]))
    merged = merge_tiles([cut, whole], [left, right], factor=1.0)
    np.testing.assert_allclose(merged.boxes, [[386, 103, 608, 286]])


def test_a_cut_box_stretched_past_its_cell_yields_to_the_whole_box_crossing_its_cut():
    # A white cell on a 20k px slide, working pixels of one window: the tile above sees it whole; the tile below
    # sees its lower part and stretches the box 53 px past the cell, so only 55% of the cut box lies in the whole one
    top, bottom = Tile(0, 0, 512, 512, (False, False, False, True)), Tile(0, 309, 512, 512, (False, True, False, False))
    whole = Detections(np.array([[150, 205, 307, 395]], np.float32), np.array([0.55], np.float32), np.array([0]))
    cut = Detections(np.array([[140, 0, 317, 139]], np.float32), np.array([0.46], np.float32), np.array([0]))
    merged = merge_tiles([whole, cut], [top, bottom], factor=1.0)
    assert merged.boxes.tolist() == [[150, 205, 307, 395]]
    # another cell cut by the same line beside the whole one (they share 30% of its width there): both stay
    beside = Detections(np.array([[260, 0, 410, 120]], np.float32), np.array([0.6], np.float32), np.array([0]))
    merged = merge_tiles([whole, beside], [top, bottom], factor=1.0)
    assert len(merged) == 2
    # a large cell that ends at the line, and below it one that begins 11 px past it (near enough to the side to
    # count as cut): the first does not reach into the second, so both stay
    above = Detections(np.array([[115, 113, 356, 309]], np.float32), np.array([0.77], np.float32), np.array([0]))
    below = Detections(np.array([[113, 11, 359, 207]], np.float32), np.array([0.72], np.float32), np.array([0]))
    merged = merge_tiles([above, below], [top, bottom], factor=1.0)
    assert len(merged) == 2


def test_a_cut_box_that_yielded_to_another_cell_does_not_take_its_own_cell_down():
    # Two tall cells stacked across the tiles' overlap. B is cut in both tiles: its lower box yields to A (A reaches
    # 16 px into it across the line), and its upper box must then stay, not yield to the lower one in turn.
    top, bottom = Tile(0, 0, 512, 512, (False, False, False, True)), Tile(0, 309, 512, 512, (False, True, False, False))
    upper = Detections(np.array([[150, 150, 307, 340], [150, 318, 307, 512]], np.float32),
                       np.array([0.8, 0.7], np.float32), np.array([0, 0]))
    lower = Detections(np.array([[150, 9, 307, 221]], np.float32), np.array([0.7], np.float32), np.array([0]))
    merged = merge_tiles([upper, lower], [top, bottom], factor=1.0)
    assert len(merged) == 2 and [150, 150, 307, 340] in merged.boxes.tolist()


@pytest.mark.parametrize("turn", range(4))
def test_the_cut_line_rule_holds_on_every_side(turn):
    # The stretched cut box of the first test, turned a quarter at a time (512 px tiles: x -> y, y -> 512 - x ...).
    def rotate(box, k):
        x0, y0, x1, y1 = box
        for _ in range(k):
            x0, y0, x1, y1 = y0, 821 - x1, y1, 821 - x0  # a quarter turn of the 821 px field the two tiles cover
        return [x0, y0, x1, y1]

    def tile(x, y, k):
        x0, y0, x1, y1 = rotate([x, y, x + 512, y + 512], k)
        return x0, y0

    whole, cut = [150, 205, 307, 395], [140, 309, 317, 448]  # field pixels; the cut at the line y = 309
    tiles, found = [], []
    for origin, box in (((0, 0), whole), ((0, 309), cut)):
        x, y = tile(*origin, turn)
        inner = [x > 0, y > 0, x + 512 < 821, y + 512 < 821]
        tiles.append(Tile(x, y, 512, 512, tuple(inner)))
        local = np.array(rotate(box, turn), np.float32) - [x, y, x, y]
        found.append(Detections(local[None], np.array([0.55 if box is whole else 0.46], np.float32), np.array([0])))
    merged = merge_tiles(found, tiles, factor=1.0)
    assert merged.boxes.tolist() == [rotate(whole, turn)]


def test_a_cell_wider_than_the_tiles_overlap_keeps_its_largest_box():
    # 100 px of overlap, a cell 110 px tall on the tile rows' border: near a side in both rows (one box each), and a
    # third tile to the right sees its left part cut
    top = Tile(0, 0, 512, 512, (False, False, True, True))
    right = Tile(300, 0, 512, 512, (True, False, False, True))
    bottom = Tile(0, 412, 512, 512, (False, True, True, False))
    tall = Detections(np.array([[200, 405, 400, 512]], np.float32), np.array([0.8], np.float32), np.array([0]))
    part = Detections(np.array([[0, 410, 100, 512]], np.float32), np.array([0.5], np.float32), np.array([0]))
    low = Detections(np.array([[200, 0, 400, 103]], np.float32), np.array([0.7], np.float32), np.array([0]))
    merged = merge_tiles([tall, part, low], [top, right, bottom], factor=1.0)
    # the left part (300..400 of the slide) yields to the larger boxes; the two near-whole boxes overlap by NMS
    assert len(merged) == 1 and merged.boxes[0].tolist() == [200, 405, 400, 512]


def test_a_white_cell_seen_twice_keeps_its_larger_box_and_red_cells_are_left_alone():
    from leukolens.predict.results import FieldDetections
    from leukolens.predict.slide import merge_contained

    boxes = np.array([
        [100, 100, 300, 300],  # a white cell
        [150, 110, 260, 310],  # part of it (IoU 0.5 with it): the same cell
        [290, 100, 480, 290],  # a neighbour touching it: kept
        [600, 600, 680, 680], [610, 605, 670, 675],  # two red cells, one over the other: not this merge's
    ], np.float32)
    found = FieldDetections(boxes, np.array([0.8, 0.6, 0.7, 0.9, 0.5], np.float32), np.array([0, 0, 0, 1, 1]),
                            canvas_size=(1000, 1000), classes=("WBC", "RBC", "Platelets"))
    merged = merge_contained(found, ("WBC",))
    assert merged.boxes.tolist() == boxes[[0, 2, 3, 4]].tolist()


class _Detector:
    """What window_overlap asks of a detector: its scale configuration."""

    def __init__(self):
        from leukolens.predict.scale import ScaleConfig

        self.scale_config = ScaleConfig()


def test_windows_fill_whole_numbers_of_detector_inputs():
    detector = _Detector()
    scale = scale_from_microns_per_pixel(0.0873, detector.scale_config)
    side, overlap = window_overlap(scale, detector, SlideConfig(), width=20_000, height=20_000)
    step = 512 - 194  # the detector's inputs at the working scale overlap by one large white cell (194 px)
    working = round(side * scale.factor)
    inputs = -(-(working - 194) // step)  # per side of a window, as tiles_at_scale lays them
    assert 3 * overlap <= side <= SlideConfig().window
    assert working >= inputs * step + 194 - 2  # the window fills its inputs: none of them mostly wasted


def test_a_window_stays_within_the_limit_once_enlarged_to_the_working_scale():
    from leukolens.predict.scale import FieldScale

    detector, config = _Detector(), SlideConfig()
    enlarged = FieldScale(0.09, 2.8, 0, "override", fields=0)  # a 40x scan: the detector enlarges windows 2.8x
    side, overlap = window_overlap(enlarged, detector, config, width=60_000, height=40_000)
    assert side * 2.8 <= config.window and side >= 3 * overlap
    # shrunk below native size the limit stays in native pixels, as before: 1000 px, not the 1111 px that would be
    # 1000 at the working scale (no whole number of inputs fits between three overlaps, 968 px, and the limit)
    shrunk = FieldScale(0.5, 0.9, 0, "override", fields=0)
    side, _ = window_overlap(shrunk, detector, SlideConfig(window=1000), width=20_000, height=20_000)
    assert side == 1000
