"""Cell-crop augmentations for other microscopes: values checked by hand."""

import dataclasses

import torch

from leukolens.data.augment import AUGMENT_PRESETS, AugmentConfig, augment, hue_rotate, optics, vignette


def test_hue_rotation_by_a_third_turns_red_into_green_and_a_full_turn_is_identity():
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(hue_rotate(red, torch.tensor([1 / 3])).flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    images = torch.rand(2, 3, 5, 5)
    assert torch.allclose(hue_rotate(images, torch.tensor([1.0, 0.0])), images, atol=1e-5)
    grey = torch.full((1, 3, 2, 2), 0.4)
    assert torch.allclose(hue_rotate(grey, torch.tensor([0.2])), grey, atol=1e-6)  # grey has no hue


def test_vignette_darkens_corners_not_the_centre():
    images = torch.ones(1, 3, 5, 5)
    out = vignette(images, torch.tensor([0.3]))
    assert out[0, 0, 2, 2] == 1.0  # centre
    assert torch.isclose(out[0, 0, 0, 0], torch.tensor(0.7))  # corner: radius 1


def test_grey_and_jpeg_and_every_robust_change_stay_in_range():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 32, 32)
    grey = optics(images, AugmentConfig(grayscale=1.0), generator)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    smooth = torch.linspace(0.2, 0.8, 32).view(1, 1, 1, 32).expand(2, 3, 32, 32).contiguous()
    jpeg = optics(smooth, AugmentConfig(jpeg=(30, 30), optics_share=1.0), generator)
    assert not torch.equal(jpeg, smooth) and (jpeg - smooth).abs().mean() < 0.02  # lossy, but close on a ramp
    crops = torch.randint(0, 256, (4, 40, 40, 3), dtype=torch.uint8)
    out = augment(crops, AUGMENT_PRESETS["robust"], 32, (0.5,) * 3, (0.25,) * 3, generator)
    assert out.shape == (4, 3, 32, 32) and torch.isfinite(out).all()
    assert out.min() >= -2.0 - 1e-6 and out.max() <= 2.0 + 1e-6  # (x - 0.5) / 0.25 for x in [0, 1]


def test_default_preset_draws_no_optics():
    # The default preset must give exactly what it gave before the optics changes existed.
    crops = torch.randint(0, 256, (3, 40, 40, 3), dtype=torch.uint8)
    plain = dataclasses.replace(AUGMENT_PRESETS["default"])
    a = augment(crops, plain, 32, (0.5,) * 3, (0.25,) * 3, torch.Generator().manual_seed(1))
    b = augment(crops, AugmentConfig(), 32, (0.5,) * 3, (0.25,) * 3, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(optics(images, AugmentConfig(), torch.Generator().manual_seed(0)), images)
