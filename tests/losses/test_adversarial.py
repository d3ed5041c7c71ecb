"""Hinge and auxiliary losses checked by hand; DiffAugment keeps shapes, is differentiable, and each policy does
what it says."""

import math

import pytest
import torch

from leukolens.losses.adversarial import (
    auxiliary_loss,
    diff_augment,
    hinge_discriminator_loss,
    hinge_generator_loss,
    mode_seeking_loss,
)


def test_hinge_losses_by_hand():
    parts = hinge_discriminator_loss(torch.tensor([2.0, 0.5]), torch.tensor([-3.0, 0.0]))
    # real: relu(1 - 2) = 0, relu(1 - 0.5) = 0.5 -> 0.25; fake: relu(1 - 3) = 0, relu(1 + 0) = 1 -> 0.5
    assert parts["real"].item() == pytest.approx(0.25)
    assert parts["fake"].item() == pytest.approx(0.5)
    assert parts["total"].item() == pytest.approx(0.75)
    assert hinge_generator_loss(torch.tensor([1.0, -3.0])).item() == pytest.approx(1.0)


def test_auxiliary_loss_by_hand_ignores_unknown_attributes():
    class_logits = torch.zeros(2, 4)  # uniform over 4 classes: cross-entropy log 4
    first = torch.tensor([[0.0, 0.0], [5.0, 0.0]])  # sample 1's code is not known: only sample 0 counts, log 2
    second = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # no known code at all: adds 0
    codes = torch.tensor([[1, -100], [-100, -100]])
    loss = auxiliary_loss(class_logits, [first, second], torch.tensor([0, 3]), codes)
    assert loss.item() == pytest.approx(math.log(4) + (math.log(2) + 0.0) / 2)
    assert auxiliary_loss(class_logits, [], torch.tensor([0, 3]), None).item() == pytest.approx(math.log(4))


def test_mode_seeking_loss_by_hand_punishes_a_generator_that_ignores_its_latent():
    z1, z2 = torch.zeros(2, 4), torch.ones(2, 4)  # latents 1 apart
    same = torch.zeros(2, 3, 2, 2)
    apart = torch.full((2, 3, 2, 2), 0.5)  # images 0.5 apart: ratio 0.5, loss 1 / 0.5 = 2
    assert mode_seeking_loss(same, apart, z1, z2).item() == pytest.approx(2.0, rel=1e-4)
    assert mode_seeking_loss(same, same, z1, z2).item() == pytest.approx(1e5)  # identical cells: a large loss


def test_diff_augment_is_differentiable_and_keeps_shape():
    images = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    out = diff_augment(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    out.sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()


def test_translation_moves_pixels_and_pads_with_zero():
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 4, 4] = 1.0
    moved = [diff_augment(image, policy=("translation",), generator=torch.Generator().manual_seed(s)) for s in range(8)]
    assert all(m.sum().item() in (0.0, 1.0) for m in moved)  # the pixel moves (or leaves the frame), never doubles
    assert any(m[0, 0, 4, 4].item() == 0 for m in moved)


def test_cutout_zeroes_a_quarter_of_the_image():
    ones = torch.ones(2, 3, 8, 8)
    out = diff_augment(ones, policy=("cutout",), generator=torch.Generator().manual_seed(1))
    zeroed = (out[:, 0] == 0).float().mean(dim=(1, 2))
    assert ((zeroed > 0) & (zeroed <= 0.25)).all()


def test_dihedral_only_permutes_pixels():
    images = torch.rand(6, 3, 8, 8)
    out = diff_augment(images, policy=("dihedral",), generator=torch.Generator().manual_seed(2))
    for a, b in zip(images, out):
        assert torch.allclose(a.flatten().sort().values, b.flatten().sort().values)


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        diff_augment(torch.zeros(1, 3, 8, 8), policy=("blur",))
