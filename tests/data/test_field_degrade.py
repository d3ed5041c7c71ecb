"""Blur and noise for domain robustness: checked on images whose answer is known."""

import pytest
import torch

from leukolens.data.fields import FIELD_AUGMENT_PRESETS, FieldAugmentConfig, degrade, gaussian_blur


def test_blur_keeps_a_flat_image_and_the_mean_and_spreads_a_point_by_hand():
    flat = torch.full((1, 3, 9, 9), 0.4)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([1.0])), flat)
    point = torch.zeros(1, 3, 21, 21)
    point[..., 10, 10] = 1.0
    blurred = gaussian_blur(point, torch.tensor([1.0]))
    assert blurred.sum().item() == pytest.approx(3.0, rel=1e-5)  # nothing reaches the edges: mass kept
    # A separable Gaussian of sigma 1: the centre holds g(0)^2 with g(0) = 1 / sum(exp(-k^2 / 2), k = -3..3).
    g0 = 1 / sum(torch.exp(torch.tensor(-(k**2) / 2.0)).item() for k in range(-3, 4))
    assert blurred[0, 0, 10, 10].item() == pytest.approx(g0**2, rel=1e-5)
    assert blurred[0, 0, 10, 11] < blurred[0, 0, 10, 10] and blurred[0, 0, 10, 11] == blurred[0, 0, 11, 10]


def test_blur_of_sigma_zero_leaves_that_image_alone():
    images = torch.rand(2, 3, 8, 8)
    out = gaussian_blur(images, torch.tensor([0.0, 2.0]))
    assert torch.equal(out[0], images[0]) and not torch.equal(out[1], images[1])


def test_degrade_stays_in_range_and_is_off_by_default():
    images = torch.rand(8, 3, 16, 16)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(degrade(images, FieldAugmentConfig(), generator), images)
    noisy = degrade(images, FieldAugmentConfig(noise=0.2, blur=1.0), generator)
    assert noisy.min() >= 0 and noisy.max() <= 1 and not torch.equal(noisy, images)


def test_presets_differ_in_what_they_change():
    plain, default, robust = (FIELD_AUGMENT_PRESETS[n] for n in ("plain", "default", "robust"))
    assert plain.stain_sigma == plain.brightness == plain.blur == plain.noise == 0
    assert default == FieldAugmentConfig()
    assert robust.stain_sigma > default.stain_sigma and robust.blur > 0 and robust.noise > 0
    assert robust.scale[0] < default.scale[0] and robust.scale[1] > default.scale[1]


def test_hue_and_grey_windows_change_colour_not_brightness():
    images = torch.rand(64, 3, 8, 8) * 0.5 + 0.25  # away from the clamp
    generator = torch.Generator().manual_seed(0)
    grey = degrade(images, FieldAugmentConfig(grayscale=1.0), generator)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey.mean(1), images.mean(1))
    turned = degrade(images, FieldAugmentConfig(hue=0.25), generator)
    changed = (turned - images).abs().flatten(1).amax(1) > 1e-3
    assert 10 < changed.sum() < 54  # about half the windows
    assert torch.allclose(turned.mean(1), images.mean(1), atol=1e-4)  # turned about the grey axis
    robust = FIELD_AUGMENT_PRESETS["robust"]
    assert robust.hue > 0 and robust.grayscale > 0
