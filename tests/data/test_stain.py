"""Stain normalisation: colour maths against known values, each method against a case whose answer is known."""

import time

import numpy as np
import pytest
from PIL import Image

from leukolens.data.stain import (
    LIGHT_INTENSITY,
    MacenkoReference,
    ReinhardReference,
    lab_to_rgb,
    macenko_fit,
    macenko_normalize,
    normalizer,
    normalizer_from_reference,
    reinhard_fit,
    reinhard_normalize,
    rgb_to_lab,
)
from leukolens.io.common import LeukolensError

# Two dye colours in optical density space, close to what Macenko finds on the PBC smears (Wright-Giemsa):
# a purple nuclear dye that absorbs green and red, and a pink one that absorbs more blue.
NUCLEAR = np.array([0.49, 0.85, 0.19]) / np.linalg.norm([0.49, 0.85, 0.19])
PINK = np.array([0.32, 0.64, 0.70]) / np.linalg.norm([0.32, 0.64, 0.70])


def two_stain_image(size: int = 128, seed: int = 0) -> np.ndarray:
    """Pixels mixed from the two dyes (every ratio from pure nuclear to pure pink), a quarter left as bare glass."""
    rng = np.random.default_rng(seed)
    share = rng.uniform(0, 1, (size, size, 1))  # share of the nuclear dye
    amount = rng.uniform(0.9, 2.0, (size, size, 1))
    density = amount * (share * NUCLEAR + (1 - share) * PINK)  # [size, size, 3]
    density[: size // 4] = 0  # glass
    # Inverse of the optical density the module computes, -log((I + 1) / Io).
    return np.clip(np.rint(LIGHT_INTENSITY * np.exp(-density) - 1), 0, 255).astype(np.uint8)


def smear_like(size: int = 96, seed: int = 0) -> np.ndarray:
    """A pale background with darker, varied blobs: enough structure for colour statistics."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), (242, 232, 220), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(12):
        cy, cx, radius = rng.integers(0, size, 2).tolist() + [int(rng.integers(6, 16))]
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
        colour = rng.integers((90, 40, 90), (200, 150, 200))
        image[inside] = np.clip(colour + rng.normal(0, 12, (inside.sum(), 3)), 0, 255)
    return image


# ------------------------------------------------------------------------------------------------------ colour
def test_lab_of_known_colours():
    lab = rgb_to_lab(np.array([[255, 255, 255], [255, 0, 0], [0, 0, 0]], np.uint8))
    assert lab[0] == pytest.approx([100, 0, 0], abs=1e-3)
    assert lab[1] == pytest.approx([53.24, 80.09, 67.20], abs=0.01)
    assert lab[2] == pytest.approx([0, 0, 0], abs=1e-3)


def test_lab_round_trip_within_one_level():
    # Every third level of each channel, 0 and 255 included (all 2^24 colours also come back exactly, but take
    # seconds).
    levels = np.arange(0, 256, 3, dtype=np.uint8)
    colours = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    back = lab_to_rgb(rgb_to_lab(colours))
    assert np.abs(back.astype(int) - colours).max() <= 1


# ------------------------------------------------------------------------------------------------------ Reinhard
def test_reinhard_to_its_own_reference_changes_nothing():
    image = smear_like()
    same = reinhard_normalize(image, reinhard_fit(image))
    assert np.abs(same.astype(int) - image).max() <= 1


def test_reinhard_brings_a_colour_shifted_copy_to_the_reference():
    original = smear_like()
    # Another lab's stain: bluer, darker tissue, same pale background.
    shifted = original.astype(float) * (0.85, 0.9, 1.05) + (0, 5, 0)
    shifted = np.clip(np.rint(shifted), 0, 255).astype(np.uint8)
    reference = reinhard_fit(original)
    assert np.abs(np.subtract(reinhard_fit(shifted).lab_mean, reference.lab_mean)).max() > 3  # really shifted
    normalized = reinhard_normalize(shifted, reference)
    assert reinhard_fit(normalized).lab_mean == pytest.approx(reference.lab_mean, abs=1)
    assert reinhard_fit(normalized).lab_std == pytest.approx(reference.lab_std, abs=1)


def test_reinhard_statistics_ignore_the_background_unless_there_is_nothing_else():
    image = np.full((40, 40, 3), 245, np.uint8)
    image[:20] = (150, 60, 140)  # half stained, one colour
    assert reinhard_fit(image).lab_mean == pytest.approx(tuple(rgb_to_lab(image[0, 0])), abs=1e-3)
    assert reinhard_fit(image).lab_std == pytest.approx((0, 0, 0), abs=1e-3)
    blank = np.full((40, 40, 3), 245, np.uint8)  # no stained pixel: all pixels count
    assert reinhard_fit(blank).lab_mean == pytest.approx(tuple(rgb_to_lab(blank[0, 0])), abs=1e-3)


# ------------------------------------------------------------------------------------------------------ Macenko
def test_macenko_finds_the_two_dyes():
    reference = macenko_fit(two_stain_image())
    found = np.array(reference.stain_matrix)  # [3, 2], nuclear first
    assert found[:, 0] @ NUCLEAR > 0.99
    assert found[:, 1] @ PINK > 0.99
    assert np.linalg.norm(found, axis=0) == pytest.approx([1, 1])


def test_macenko_to_its_own_reference_is_close_to_identity():
    image = two_stain_image()
    same = macenko_normalize(image, macenko_fit(image))
    assert np.abs(same.astype(int) - image).mean() < 3


def test_macenko_restains_towards_the_reference():
    reference = macenko_fit(two_stain_image(seed=0))
    # The same dyes, but the nuclear one stronger and the image re-mixed: only the amounts differ.
    faint = two_stain_image(seed=1)
    density = -np.log((faint.astype(float) + 1) / LIGHT_INTENSITY) * 0.6
    faint = np.clip(np.rint(LIGHT_INTENSITY * np.exp(-density) - 1), 0, 255).astype(np.uint8)
    assert macenko_fit(faint).max_concentrations[0] < 0.7 * reference.max_concentrations[0]
    refitted = macenko_fit(macenko_normalize(faint, reference))
    assert refitted.max_concentrations == pytest.approx(reference.max_concentrations, rel=0.05)


def test_macenko_leaves_images_it_cannot_read_unchanged():
    reference = macenko_fit(two_stain_image())
    glass = np.full((32, 32, 3), 238, np.uint8)
    one_dye = np.full((32, 32, 3), (120, 60, 150), np.uint8)
    assert macenko_normalize(glass, reference) is glass
    assert macenko_normalize(one_dye, reference) is one_dye
    with pytest.raises(LeukolensError, match="too few stained pixels"):
        macenko_fit(glass)


# ------------------------------------------------------------------------------------------------------ storing
def test_references_survive_a_plain_dict():
    image = two_stain_image()
    for reference in (reinhard_fit(image), macenko_fit(image)):
        stored = reference.as_dict()
        assert all(isinstance(v, list) for v in stored.values())  # JSON- and torch.save-friendly
        assert type(reference).from_dict(stored) == reference


@pytest.mark.parametrize(
    ("cls", "stored"),
    [
        (ReinhardReference, {"lab_mean": [1, 2], "lab_std": [1, 2, 3]}),
        (ReinhardReference, {"lab_mean": [1, 2, "x"], "lab_std": [1, 2, 3]}),
        (MacenkoReference, {"stain_matrix": [[1, 0], [0, 1]], "max_concentrations": [1, 1]}),
        (MacenkoReference, {"stain_matrix": [[1, 0], [0, 1], [0]], "max_concentrations": [1, 1]}),
        (MacenkoReference, None),
    ],
)
def test_broken_stored_references_say_what_is_wrong(cls, stored):
    with pytest.raises(LeukolensError, match="stain reference"):
        cls.from_dict(stored)


def test_normalizer_by_name():
    image = smear_like()
    assert normalizer("none", image)(image) is image
    assert np.array_equal(normalizer("reinhard", image)(image), reinhard_normalize(image, reinhard_fit(image)))
    stored = {"method": "macenko", "reference": macenko_fit(two_stain_image()).as_dict()}
    assert normalizer_from_reference(stored)(image).shape == image.shape
    with pytest.raises(LeukolensError, match="unknown stain normalisation 'vahadane'.*reinhard"):
        normalizer("vahadane", image)


def test_a_512_pixel_image_normalises_fast():
    image = np.asarray(Image.fromarray(smear_like(128)).resize((512, 512)))
    for method in ("reinhard", "macenko"):
        normalize = normalizer(method, image)
        timings = []
        for _ in range(3):  # best of three: the machine is shared
            start = time.perf_counter()
            normalize(image)
            timings.append(time.perf_counter() - start)
        assert min(timings) < 1.0, f"{method}: {min(timings):.3f} s"  # about 0.05-0.1 s on an idle machine


# ------------------------------------------------------------------------------------------------------ real smears
def test_real_smears(shared_data):
    folder = shared_data / "pbc" / "train" / "images"
    if not folder.is_dir():
        pytest.skip(f"no PBC training images at {folder}")
    paths = sorted(folder.glob("*.jpg"))
    first, last = (np.asarray(Image.open(p).convert("RGB")) for p in (paths[0], paths[-1]))

    reinhard = reinhard_fit(first)
    assert reinhard_fit(reinhard_normalize(last, reinhard)).lab_mean == pytest.approx(reinhard.lab_mean, abs=1)

    macenko = macenko_fit(first)
    matrix = np.array(macenko.stain_matrix)
    assert (matrix > 0).all() and matrix[0, 0] > matrix[0, 1]  # positive dyes; the nuclear one absorbs red more
    same = macenko_normalize(first, macenko)
    # Not exact on real smears: the part of each pixel's colour outside the two-dye plane (mostly the cream
    # background's tint) is dropped.
    assert np.abs(same.astype(int) - first).mean() < 8
    refitted = macenko_fit(macenko_normalize(last, macenko))
    assert np.sum(np.array(refitted.stain_matrix) * matrix, axis=0) == pytest.approx([1, 1], abs=0.01)
    assert refitted.max_concentrations == pytest.approx(macenko.max_concentrations, rel=0.1)
