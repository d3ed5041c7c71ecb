import math

import torch
import torch.nn.functional as F

from leukolens.losses.contrastive import contrastive_loss, multi_positive_cross_entropy, soft_targets


def test_identity_positives_give_clip_loss():
    torch.manual_seed(0)
    images = F.normalize(torch.randn(4, 8), dim=1)
    texts = F.normalize(torch.randn(4, 8), dim=1)
    scale = torch.tensor(math.log(10.0))
    parts = contrastive_loss(images, texts, torch.eye(4, dtype=torch.bool), scale)
    logits = 10.0 * images @ texts.T
    expected = (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.T, torch.arange(4))) / 2
    assert torch.isclose(parts["total"], expected, atol=1e-6)


def test_two_positives_share_the_target_by_hand():
    logits = torch.tensor([[0.0, 0.0, math.log(2.0)]])  # softmax = [1/4, 1/4, 1/2]
    positive = torch.tensor([[True, True, False]])
    assert torch.allclose(soft_targets(positive), torch.tensor([[0.5, 0.5, 0.0]]))
    # -(0.5 log 1/4 + 0.5 log 1/4) = log 4
    assert torch.isclose(multi_positive_cross_entropy(logits, positive), torch.tensor(math.log(4.0)))


def test_a_duplicate_is_not_pushed_away():
    """Two cells with the same sentence: matching both to it is the optimum, not a mistake."""
    image = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), dim=1)
    text = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    positive = torch.tensor([[True, False], [True, False]])
    scale = torch.tensor(math.log(50.0))
    good = contrastive_loss(image, text, positive, scale)["total"]
    wrong = contrastive_loss(image, text, torch.eye(2, dtype=torch.bool), scale)["total"]
    # The best a two-positive column can do is the entropy of its target, log 2, in the text-to-image half.
    assert torch.isclose(good, torch.tensor(math.log(2.0) / 2), atol=1e-3)
    assert wrong > 5


def test_rows_without_positive_are_skipped_and_gradients_are_finite():
    images = F.normalize(torch.randn(3, 5, requires_grad=True), dim=1)
    texts = F.normalize(torch.randn(2, 5), dim=1)
    positive = torch.tensor([[True, False], [False, False], [False, True]])
    scale = torch.tensor(2.0, requires_grad=True)
    parts = contrastive_loss(images, texts, positive, scale)
    parts["total"].backward()
    assert torch.isfinite(parts["total"]) and torch.isfinite(scale.grad)
    assert multi_positive_cross_entropy(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.bool)) == 0
