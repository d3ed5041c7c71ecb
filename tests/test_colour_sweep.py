"""The colour sweep's transforms (benchmarks/colour_sweep.py): shapes kept, and each does what its name says, checked
on small fields whose colours are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import colour_sweep as sweep


def smear(seed: int = 0) -> np.ndarray:
    """A 48 x 64 field made in optical density: glass, a ring of eosin (a red cell) and a haematoxylin disc (a
    nucleus), with a little noise; ``uint8 [48, 64, 3]``."""
    vectors = sweep._stain_vectors()
    y, x = np.mgrid[:48, :64]
    radius = np.hypot(x - 32, y - 24)
    amounts = np.zeros((48, 64, 3))
    amounts[..., 0] = 0.9 * (radius < 8)
    amounts[..., 1] = 0.4 * ((radius > 12) & (radius < 20))
    glass = np.array([235.0, 232.0, 238.0])
    noise = np.random.default_rng(seed).normal(0, 1.5, (48, 64, 3))
    return (glass * np.exp(-(amounts @ vectors)) + noise).round().clip(0, 255).astype(np.uint8)


def luminance(image: np.ndarray) -> np.ndarray:
    return sweep.rgb_to_lab(image)[..., 0]


@pytest.mark.parametrize("name", list(sweep.TRANSFORMS))
def test_every_transform_keeps_the_field_shape_and_dtype(name):
    field = smear()
    out = sweep.TRANSFORMS[name](field)
    assert out.shape == field.shape and out.dtype == np.uint8
    if name != "reference":
        assert np.abs(out.astype(int) - field).max() > 0


def test_lab_round_trip_and_hue_rotation():
    field = smear()
    assert np.abs(sweep.lab_to_rgb(sweep.rgb_to_lab(field)).astype(int) - field).max() <= 1
    assert np.array_equal(sweep.hue_rotated(field, 0), field)
    # Pure white is L* 100, a* = b* = 0; a turn of 360 degrees gives the field back.
    assert np.allclose(sweep.rgb_to_lab(np.full((1, 1, 3), 255, np.uint8)), [[[100, 0, 0]]], atol=0.01)
    assert np.abs(sweep.hue_rotated(field, 360).astype(int) - field).max() <= 1
    # A quarter turn moves the nucleus' hue angle by 90 degrees and keeps its lightness.
    nucleus = (slice(20, 28), slice(28, 36))
    before, after = sweep.rgb_to_lab(field)[nucleus], sweep.rgb_to_lab(sweep.hue_rotated(field, 90))[nucleus]
    turned = np.rad2deg(np.arctan2(after[..., 2], after[..., 1]) - np.arctan2(before[..., 2], before[..., 1])) % 360
    assert np.median(turned) == pytest.approx(90, abs=3)
    assert np.abs(after[..., 0] - before[..., 0]).mean() < 2


def test_grayscale_is_grey_of_the_same_lightness():
    field = smear()
    grey = sweep.grayscale(field)
    assert np.abs(grey[..., 0].astype(int) - grey[..., 2]).max() <= 1
    assert np.abs(luminance(grey) - luminance(field)).max() < 1


def test_stain_rescale_scales_the_stain_amounts_and_keeps_the_glass():
    field = smear()
    unchanged = sweep.stain_rescaled(field, haematoxylin=1.0, eosin=1.0)
    assert np.abs(unchanged.astype(int) - field).max() <= 1
    out = sweep.stain_rescaled(field, haematoxylin=0.5, eosin=1.8)
    glass = np.percentile(field.reshape(-1, 3), sweep.GLASS_PERCENTILE, axis=0)
    unmix = np.linalg.inv(sweep._stain_vectors())

    def stains(image, where):
        return (-np.log(np.maximum(image[where].reshape(-1, 3).astype(float), 1) / glass) @ unmix).mean(axis=0)

    nucleus, ring = (slice(20, 28), slice(28, 36)), (slice(22, 26), slice(47, 50))
    assert stains(out, nucleus)[0] == pytest.approx(0.5 * stains(field, nucleus)[0], rel=0.05)
    assert stains(out, ring)[1] == pytest.approx(1.8 * stains(field, ring)[1], rel=0.05)
    corner = (slice(0, 6), slice(0, 6))  # glass: no stain to rescale
    assert np.abs(out[corner].astype(int) - field[corner]).mean() < 3


def test_stain_swap_changes_colour_but_keeps_where_things_are():
    field = smear()
    swapped = sweep.stain_rescaled(field, haematoxylin=1.0, eosin=1.0, swap=True)
    nucleus = (slice(20, 28), slice(28, 36))
    # The nucleus changes colour (haematoxylin's blue-violet becomes eosin's pink: more red than blue) ...
    assert field[nucleus][..., 2].mean() > field[nucleus][..., 0].mean()
    assert swapped[nucleus][..., 0].mean() > swapped[nucleus][..., 2].mean()
    # ... while the lightness map keeps its structure: the nucleus, the ring and the glass stay where they were.
    assert np.corrcoef(luminance(field).ravel(), luminance(swapped).ravel())[0, 1] > 0.8
