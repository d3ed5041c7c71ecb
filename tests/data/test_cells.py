"""Cell crops and batch transforms: windows computed by hand, edges, and transforms that keep what matters."""

import numpy as np
import torch
from PIL import Image

from leukolens.data.augment import AugmentConfig, augment, hed_jitter, normalize, to_input
from leukolens.data.cells import IGNORE, cell_samples, crop_cell, crop_window, load_crops
from leukolens.models.cellnet import AttributeSpec
from leukolens.records import PBC_CLASSES, WBCATT_SCHEMA, Box, Cell, Dataset, Field
from tests.conftest import make_image


def test_crop_window_by_hand():
    # A 40x20 box centred at (100, 50): the window is 2 x 40 = 80 px square around the centre.
    assert crop_window((80, 40, 120, 60), (640, 480), 2.0) == (60, 10, 140, 90)
    # A whole-image box (single-cell crop data sets) uses the whole image.
    assert crop_window((0, 0, 360, 363), (360, 363), 2.0) == (0, 0, 360, 363)


def test_crop_at_the_border_repeats_the_edge():
    pixels = np.zeros((100, 100, 3), np.uint8)
    pixels[:, :50] = (255, 0, 0)  # left half red, right half black
    crop = crop_cell(Image.fromarray(pixels), (0, 40, 20, 60), 40, 2.0)  # window x from -10 to 30
    assert crop.shape == (40, 40, 3)
    assert (crop[:, :10] == (255, 0, 0)).all()  # padded with the red edge, not black


def test_samples_mask_unknown_attributes(tmp_path):
    image = make_image(tmp_path / "a.png", (50, 50))
    cells = [
        Cell(Box((0, 0, 50, 50)), "Lymphocyte", {"cell_size": "small", "granule_type": "nil"}),
        Cell(Box((0, 0, 50, 50)), "Erythroblast", {}),
    ]
    dataset = Dataset([Field(image, 50, 50, cells, split="train")], PBC_CLASSES, WBCATT_SCHEMA)
    heads = tuple(AttributeSpec(a.name, a.values) for a in WBCATT_SCHEMA)
    first, second = cell_samples(dataset, classes=PBC_CLASSES.names, attributes=heads)
    assert first.label == 4 and first.attributes[0] == 0 and first.attributes[8] == 3  # small; nil is a value
    assert first.attributes[1] == IGNORE  # cell shape not annotated
    assert all(code == IGNORE for code in second.attributes)
    held_out = cell_samples(dataset, classes=PBC_CLASSES.names, attributes=heads, exclude=("Erythroblast",))
    assert len(held_out) == 1


def test_load_crops_reads_each_image_once_and_caches(tmp_path):
    image = make_image(tmp_path / "a.png", (60, 40), colour=(10, 20, 30))
    dataset = Dataset(
        [
            Field(
                image,
                60,
                40,
                [Cell(Box((10, 10, 30, 30)), "Basophil"), Cell(Box((30, 10, 50, 30)), "Monocyte")],
                split="train",
            )
        ],
        PBC_CLASSES,
    )
    samples = cell_samples(dataset, classes=PBC_CLASSES.names)
    crops = load_crops(samples, size=24, context=1.5, cache_dir=tmp_path / "cache")
    assert crops.shape == (2, 24, 24, 3) and (crops == (10, 20, 30)).all()
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    again = load_crops(samples, size=24, context=1.5, cache_dir=tmp_path / "cache")
    assert np.array_equal(crops, again)


def test_evaluation_transform_centre_crops_the_margin():
    crops = torch.zeros(1, 46, 46, 3, dtype=torch.uint8)
    crops[:, 3:43, 3:43] = 255  # the window without its margin is all white
    images = to_input(crops, 40, (0, 0, 0), (1, 1, 1), margin=1.15)
    assert images.shape == (1, 3, 40, 40)
    assert images.min() > 0.99


def test_hed_jitter_without_jitter_is_identity_and_with_it_changes_colour():
    images = torch.rand(2, 3, 8, 8) * 0.8 + 0.1
    assert torch.allclose(hed_jitter(images, 0.0), images, atol=1e-4)
    assert not torch.allclose(hed_jitter(images, 0.2, torch.Generator().manual_seed(1)), images, atol=1e-3)


def test_augment_output_and_geometry_only_keeps_the_colours():
    crops = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (4, 46, 46, 3), dtype=np.uint8))
    geometry_only = AugmentConfig(scale=(1.0, 1.0), stain_sigma=0, brightness=0, contrast=0, saturation=0)
    out = augment(crops, geometry_only, 46, (0, 0, 0), (1, 1, 1), torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 46, 46)
    # Flips and 90-degree turns move pixels but keep every colour.
    assert torch.allclose(out.sort(dim=-1).values.sum(), (crops.permute(0, 3, 1, 2).float() / 255).sum(), rtol=1e-4)
    full = augment(crops, AugmentConfig(), 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.Generator().manual_seed(0))
    assert full.shape == (4, 3, 32, 32) and torch.isfinite(full).all()
    assert normalize(torch.full((1, 3, 1, 1), 0.5), (0.5,) * 3, (0.25,) * 3).abs().max() == 0
