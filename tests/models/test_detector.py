"""The field detector: shapes, a finite loss that trains, empty fields, and decoding checked by hand."""

import numpy as np
import pytest
import torch

from leukolens.losses.detection import centernet_targets, detection_loss
from leukolens.models.detector import (
    CenterNet,
    DetectorConfig,
    PeakOutputs,
    checkpoint_from_model,
    decode,
    load_detector,
    save_detector,
)

CLASSES = ("WBC", "RBC", "Platelets")


def tiny(stride: int = 8) -> CenterNet:
    torch.manual_seed(0)
    return CenterNet(DetectorConfig(CLASSES, neck_channels=16, stride=stride), pretrained=False)


@pytest.mark.parametrize("stride", [4, 8])
def test_forward_shapes(stride):
    out = tiny(stride).eval()(torch.randn(2, 3, 64, 96))
    assert out.heatmap.shape == (2, 3, 64 // stride, 96 // stride)
    assert out.size.shape == out.offset.shape == (2, 2, 64 // stride, 96 // stride)
    assert (out.size >= 0).all()


def test_loss_is_finite_and_reaches_every_head():
    model = tiny()
    out = model(torch.randn(2, 3, 64, 64))
    boxes = [np.array([[8, 8, 40, 40], [44, 44, 56, 56]], np.float32), np.array([[0, 0, 20, 30]], np.float32)]
    labels = [np.array([0, 2]), np.array([1])]
    targets = centernet_targets(boxes, labels, num_classes=3, output_size=(8, 8), stride=8)
    parts = detection_loss(out, targets)
    assert all(torch.isfinite(v) for v in parts.values())
    parts["total"].backward()
    for head in (model.heatmap, model.size, model.offset):
        assert head[-1].weight.grad is not None and head[-1].weight.grad.abs().sum() > 0


def test_a_field_without_cells_gives_zero_box_loss_and_no_detection():
    model = tiny()
    out = model(torch.randn(1, 3, 64, 64))
    targets = centernet_targets([np.zeros((0, 4), np.float32)], [np.zeros(0, np.int64)], num_classes=3,
                                output_size=(8, 8), stride=8)
    parts = detection_loss(out, targets)
    assert parts["size"].item() == 0 and parts["offset"].item() == 0
    assert torch.isfinite(parts["heatmap"]) and parts["heatmap"].item() > 0  # only pushes scores down
    empty = decode(np.zeros((1, 3, 8, 8), np.float32), np.ones((1, 2, 8, 8), np.float32),
                   np.zeros((1, 2, 8, 8), np.float32), stride=8)
    assert len(empty) == 1 and len(empty[0]) == 0 and empty[0].boxes.shape == (0, 4)


def test_targets_put_the_peak_size_and_offset_where_computed_by_hand():
    # Box (20, 12)-(52, 28) at stride 8: centre (36, 20) px = (4.5, 2.5) cells -> cell (4, 2), offset (0.5, 0.5),
    # size (32 / 8, 16 / 8) = (4, 2) cells.
    targets = centernet_targets([np.array([[20, 12, 52, 28]], np.float32)], [np.array([1])], num_classes=3,
                                output_size=(6, 8), stride=8)
    assert targets.heatmap[0, 1, 2, 4] == 1 and targets.heatmap[0, 1].max() == 1
    assert targets.heatmap[0, 0].sum() == 0 and targets.heatmap[0, 2].sum() == 0
    assert targets.index[0, 0] == 2 * 8 + 4
    assert targets.size[0, 0].tolist() == [4, 2] and targets.offset[0, 0].tolist() == [0.5, 0.5]


def test_decode_a_hand_made_heatmap():
    peaks = np.zeros((1, 3, 6, 8), np.float32)
    size = np.zeros((1, 2, 6, 8), np.float32)
    offset = np.zeros((1, 2, 6, 8), np.float32)
    peaks[0, 1, 3, 5] = 0.9  # an RBC at cell (x 5, y 3)
    size[0, :, 3, 5] = (4, 2)  # 32 x 16 px
    offset[0, :, 3, 5] = (0.5, 0.25)  # centre ((5 + 0.5) * 8, (3 + 0.25) * 8) = (44, 26)
    peaks[0, 0, 0, 0] = 0.005  # below the threshold
    found = decode(peaks, size, offset, stride=8, threshold=0.01)[0]
    assert found.labels.tolist() == [1]
    assert found.scores.tolist() == pytest.approx([0.9])
    assert found.boxes.tolist() == [[28, 18, 60, 34]]


def test_peaks_keep_only_local_maxima():
    model = tiny()
    network = PeakOutputs(model.eval())
    with torch.no_grad():  # a heatmap head that copies a fixed blob: zero weights, blob added through the bias
        blob = torch.full((3, 8, 8), -10.0)
        blob[0, 2:5, 2:5] = 0.0
        blob[0, 3, 3] = 2.0
        model.heatmap[-1].weight.zero_()
        model.heatmap[-1].bias.zero_()
        original = model.heatmap.forward
        model.heatmap.forward = lambda x: original(x) + blob  # noqa: B023
        peaks, _, _ = network(torch.zeros(1, 3, 64, 64))
    nonzero = torch.nonzero(peaks[0] > 1e-3).tolist()
    assert nonzero == [[0, 3, 3]]


def test_checkpoint_round_trip_in_half_precision(tmp_path):
    model = tiny().eval()
    path = save_detector(checkpoint_from_model(model, input_size=64, score_threshold=0.4), tmp_path / "d.pt")
    loaded = load_detector(path)
    assert loaded.classes == CLASSES and loaded.input_size == 64 and loaded.score_threshold == 0.4
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x).heatmap, loaded.build()(x).heatmap
    assert torch.allclose(a, b, atol=5e-2)


def test_an_untaught_class_channel_gives_no_loss():
    out = tiny()(torch.randn(2, 3, 64, 64))
    empty = centernet_targets([np.zeros((0, 4), np.float32)] * 2, [np.zeros(0, np.int64)] * 2, num_classes=3,
                              output_size=(8, 8), stride=8)
    nothing = torch.zeros(2, 3)
    assert detection_loss(out, empty, taught=nothing)["heatmap"].item() == 0
    only_rbc = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    full = detection_loss(out, empty)["heatmap"]
    part = detection_loss(out, empty, taught=only_rbc)["heatmap"]
    assert 0 < part.item() < full.item()


def test_outside_the_annotated_region_nothing_is_a_negative():
    from leukolens.losses.detection import annotated_mask

    mask = annotated_mask([None, np.array([[8, 16, 24, 40]], np.float32)], output_size=(8, 8), stride=8)
    assert mask[0].sum() == 64  # fully annotated
    assert torch.nonzero(mask[1, 0]).tolist() == [[y, x] for y in (2, 3, 4) for x in (1, 2)]
    out = tiny()(torch.randn(1, 3, 64, 64))
    empty = centernet_targets([np.zeros((0, 4), np.float32)], [np.zeros(0, np.int64)], num_classes=3,
                              output_size=(8, 8), stride=8)
    none_annotated = torch.zeros(1, 1, 8, 8)
    assert detection_loss(out, empty, annotated=none_annotated)["heatmap"].item() == 0
