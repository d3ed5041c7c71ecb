"""Pseudo-labels: which teacher peaks become targets, the boxes they give, and where their loss reaches."""

import math

import numpy as np
import pytest
import torch

from leukolens.losses.pseudo import (
    PseudoLabelConfig,
    PseudoLabels,
    class_entropy,
    pseudo_label_loss,
    select_pseudo_labels,
    update_prototypes,
)
from leukolens.models.detector import DetectorOutput

H = W = 8  # output cells; stride 8 -> a 64 x 64 window


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _teacher(peaks: dict[tuple[int, int, int], float]) -> DetectorOutput:
    """Heatmap logits with probability 0.01 everywhere and the given (class, y, x) -> probability peaks; every box
    4 x 2 cells, every offset (0.5, 0.25)."""
    heat = torch.full((1, 2, H, W), _logit(0.01))
    for (k, y, x), p in peaks.items():
        heat[0, k, y, x] = _logit(p)
    size = torch.stack([torch.full((H, W), 4.0), torch.full((H, W), 2.0)])[None]
    offset = torch.stack([torch.full((H, W), 0.5), torch.full((H, W), 0.25)])[None]
    return DetectorOutput(heat, size, offset)


def _outside_left_half() -> torch.Tensor:
    outside = torch.zeros(1, 1, H, W)
    outside[..., : W // 2] = 1  # the annotated region is the right half
    return outside


def test_confident_peaks_outside_the_region_become_boxes_computed_by_hand():
    teacher = _teacher({(0, 2, 1): 0.9, (1, 5, 2): 0.3, (0, 3, 6): 0.95})
    found = select_pseudo_labels(teacher, _outside_left_half(), stride=8, config=PseudoLabelConfig(threshold=0.5))
    # Only (class 0, y 2, x 1): (1, 5, 2) is too weak, (0, 3, 6) lies in the annotated right half.
    assert found.count == 1 and found.labels[0].tolist() == [0]
    # Centre (x + 0.5, y + 0.25) * 8 = (12, 18); size (4, 2) * 8 = (32, 16).
    assert found.boxes[0].tolist() == [[-4.0, 10.0, 28.0, 26.0]]


def test_fully_annotated_fields_and_untaught_classes_get_no_pseudo_labels():
    teacher = _teacher({(0, 2, 1): 0.9, (1, 5, 2): 0.9})
    nothing = select_pseudo_labels(teacher, torch.zeros(1, 1, H, W), stride=8, config=PseudoLabelConfig())
    assert nothing.count == 0
    only_class_1 = select_pseudo_labels(
        teacher, _outside_left_half(), stride=8, config=PseudoLabelConfig(), taught=torch.tensor([[0.0, 1.0]])
    )
    assert only_class_1.labels[0].tolist() == [1]


def test_class_entropy_by_hand_and_the_entropy_filter():
    assert class_entropy(torch.tensor([[[[1.0]], [[0.0]]]])).item() == pytest.approx(0.0, abs=1e-6)
    assert class_entropy(torch.tensor([[[[0.4]], [[0.4]]]])).item() == pytest.approx(math.log(2))
    # Both classes sure at (2, 1): an ambiguous cell (entropy log 2 = 0.69) is dropped at max_entropy 0.5.
    teacher = _teacher({(0, 2, 1): 0.9, (1, 2, 1): 0.9, (0, 5, 2): 0.9})
    found = select_pseudo_labels(
        teacher, _outside_left_half(), stride=8, config=PseudoLabelConfig(max_entropy=0.5)
    )
    assert found.count == 1 and found.boxes[0][0, 1] == pytest.approx((5 + 0.25) * 8 - 8)


def test_prototype_filter_keeps_peaks_whose_feature_resembles_their_class():
    teacher = _teacher({(0, 2, 1): 0.9, (0, 5, 2): 0.9})
    features = torch.zeros(1, 2, H, W)
    features[0, 0, 2, 1] = 1.0  # like the prototype of class 0
    features[0, 1, 5, 2] = 1.0  # orthogonal to it
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    found = select_pseudo_labels(
        teacher, _outside_left_half(), stride=8, config=PseudoLabelConfig(min_prototype_similarity=0.5),
        features=features, prototypes=prototypes,
    )
    assert found.count == 1 and found.boxes[0][0].tolist() == [-4.0, 10.0, 28.0, 26.0]


def test_prototypes_start_from_the_first_mean_then_move_slowly():
    features = torch.zeros(1, 2, H, W)
    features[0, :, 2, 1] = torch.tensor([3.0, 4.0])
    box = [np.array([[0.0, 8.0, 24.0, 32.0]])]  # centre (12, 20) -> cell (x 1, y 2)
    prototypes = update_prototypes(torch.zeros(2, 2), features, box, [np.array([0])], stride=8, momentum=0.9)
    assert prototypes[0].tolist() == pytest.approx([0.6, 0.8]) and prototypes[1].tolist() == [0.0, 0.0]
    features[0, :, 2, 1] = torch.tensor([1.0, 0.0])
    moved = update_prototypes(prototypes, features, box, [np.array([0])], stride=8, momentum=0.9)
    expected = torch.tensor([0.9 * 0.6 + 0.1, 0.9 * 0.8])
    assert moved[0].tolist() == pytest.approx((expected / expected.norm()).tolist())


def test_the_pseudo_loss_reaches_only_the_pseudo_labels_neighbourhood_outside_the_region():
    heat = torch.zeros(1, 2, H, W, requires_grad=True)
    size = torch.ones(1, 2, H, W, requires_grad=True)
    offset = torch.zeros(1, 2, H, W, requires_grad=True)
    pseudo = PseudoLabels([np.array([[0.0, 8.0, 24.0, 32.0]], np.float32)], [np.array([1])])
    loss = pseudo_label_loss(DetectorOutput(heat, size, offset), pseudo, _outside_left_half(), stride=8)
    assert torch.isfinite(loss["total"]) and loss["heatmap"] > 0
    loss["total"].backward()
    touched = heat.grad[0].abs() > 0  # [classes, h, w]
    assert touched[1, 2, 1] and not touched[0].any()  # only the pseudo-label's class
    assert not touched[1, :, W // 2 :].any()  # never inside the annotated region
    assert not touched[1, 7, 0]  # nor far from the pseudo-label
    assert size.grad[0, :, 2, 1].abs().sum() > 0 and size.grad.abs().sum() == size.grad[0, :, 2, 1].abs().sum()
