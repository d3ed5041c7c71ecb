"""The conditional GAN: shapes, finite losses, gradients reaching both networks, conditioning that changes the
output, unknown attributes that condition nothing, checkpoints that round-trip, and the attribute pool."""

import numpy as np
import pytest
import torch

from leukolens.losses.adversarial import hinge_discriminator_loss, hinge_generator_loss
from leukolens.models.cellnet import AttributeSpec
from leukolens.models.gan import UNKNOWN_CODE, GanConfig, GanModels, sample_images
from leukolens.models.gan_checkpoint import (
    GanCheckpoint,
    attribute_pool,
    class_index,
    conditions_for,
    load_gan,
    save_gan,
)

HEADS = (AttributeSpec("cell_size", ("small", "big")), AttributeSpec("granularity", ("no", "yes")))


def _config(size=32, attributes=HEADS):
    return GanConfig(("A", "B", "C"), attributes, image_size=size, latent_dim=8, condition_dim=8, g_channels=4,
                     d_channels=4)


@pytest.mark.parametrize("size", [32, 64])
def test_forward_and_backward_give_finite_losses_and_gradients(size):
    models = GanModels(_config(size))
    labels = torch.tensor([0, 1, 2, 1])
    codes = torch.tensor([[0, 1], [1, UNKNOWN_CODE], [UNKNOWN_CODE, UNKNOWN_CODE], [1, 0]])
    images = models.generator(torch.randn(4, 8), labels, codes)
    assert images.shape == (4, 3, size, size)
    assert images.min() >= -1 and images.max() <= 1
    real_scores = models.discriminator(torch.rand(4, 3, size, size) * 2 - 1, labels, codes)
    fake_scores = models.discriminator(images, labels, codes)
    assert real_scores.shape == (4,)
    d_loss = hinge_discriminator_loss(real_scores, fake_scores)["total"]
    g_loss = hinge_generator_loss(fake_scores)
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    (d_loss + g_loss).backward()
    assert all(p.grad is not None for p in models.generator.input.parameters())
    assert models.discriminator.blocks[0].conv1.weight_orig.grad is not None


def test_auxiliary_heads_read_class_and_attributes_from_the_same_features():
    models = GanModels(_config(32)).eval()  # spectral norm's power iteration runs only in training mode
    labels, codes = torch.tensor([0, 2]), torch.tensor([[0, 1], [UNKNOWN_CODE, 0]])
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    score, class_logits, attribute_logits = models.discriminator(images, labels, codes, auxiliary=True)
    assert torch.equal(score, models.discriminator(images, labels, codes))  # the score does not change
    assert class_logits.shape == (2, 3)
    assert [a.shape for a in attribute_logits] == [(2, 2), (2, 2)]


def test_image_size_must_be_four_times_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        GanConfig(("A",), image_size=48).stages  # noqa: B018


def test_class_and_attributes_change_the_image_and_unknown_attributes_add_nothing():
    models = GanModels(_config())
    with torch.no_grad():  # the norm layers' modulation starts at zero: give it weight so conditions matter
        for p in models.generator.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    latent = torch.randn(1, 8)
    models.discriminator.eval()  # spectral norm's power iteration would otherwise move the weights between calls
    with torch.no_grad():
        a = models.generator(latent, torch.tensor([0]), torch.tensor([[0, 0]]))
        b = models.generator(latent, torch.tensor([1]), torch.tensor([[0, 0]]))
        c = models.generator(latent, torch.tensor([0]), torch.tensor([[1, 0]]))
        unknown = models.discriminator.embed(torch.tensor([0]), torch.tensor([[UNKNOWN_CODE, UNKNOWN_CODE]]))
        class_only = models.discriminator.embed(torch.tensor([0]), None)
    assert not torch.allclose(a, b) and not torch.allclose(a, c)
    assert torch.allclose(unknown, class_only)


def test_sampling_is_reproducible_and_uint8():
    models = GanModels(_config())
    labels = torch.tensor([0, 1, 2])
    first = sample_images(models.ema, labels, torch.zeros(3, 2, dtype=torch.long), seed=3, batch_size=2)
    again = sample_images(models.ema, labels, torch.zeros(3, 2, dtype=torch.long), seed=3)
    other = sample_images(models.ema, labels, torch.zeros(3, 2, dtype=torch.long), seed=4)
    assert first.dtype == torch.uint8 and first.shape == (3, 32, 32, 3)
    assert torch.equal(first, again) and not torch.equal(first, other)
    truncated = sample_images(models.ema, labels, torch.zeros(3, 2, dtype=torch.long), seed=3, truncation=0.5)
    assert truncated.shape == first.shape


def test_ema_follows_the_generator():
    models = GanModels(_config())
    with torch.no_grad():
        for p in models.generator.parameters():
            p.fill_(1.0)
    before = next(models.ema.parameters()).clone()
    models.update_ema(0.5)
    after = next(models.ema.parameters())
    assert torch.allclose(after, (before + 1) / 2)


def test_attribute_pool_and_conditions_draw_only_seen_combinations():
    labels = np.array([0, 0, 0, 1, 1])
    codes = np.array([[0, 1], [0, 1], [1, 0], [1, 1], [-100, -100]])
    pool = attribute_pool(labels, codes, 3)
    assert pool[0] == {"codes": [[0, 1], [1, 0]], "counts": [2, 1]}
    assert pool[2] == {"codes": [], "counts": []}
    config = _config()
    class_labels, drawn = conditions_for(pool, 0, 300, config, seed=0)
    assert class_labels.tolist() == [0] * 300
    rows = {tuple(r) for r in drawn.tolist()}
    assert rows == {(0, 1), (1, 0)}
    share = (drawn == torch.tensor([0, 1])).all(1).float().mean().item()
    assert 0.55 < share < 0.78  # drawn by frequency: 2/3
    _, none = conditions_for(pool, 2, 4, config)  # a class without attributes: all unknown
    assert (none == UNKNOWN_CODE).all()
    assert conditions_for(pool, 0, 4, _config(attributes=()))[1] is None


def test_checkpoint_round_trip(tmp_path):
    config = _config()
    models = GanModels(config)
    pool = [{"codes": [[0, 1]], "counts": [3]}, {"codes": [], "counts": []}, {"codes": [], "counts": []}]
    save_gan(GanCheckpoint(config, models.ema.state_dict(), "image", 2.5, pool, {"steps": 7}), tmp_path / "g.pt")
    loaded = load_gan(tmp_path / "g.pt")
    assert loaded.config == config and loaded.crop_mode == "image" and loaded.context == 2.5
    assert loaded.attribute_pool == pool and loaded.train["steps"] == 7
    labels = torch.tensor([0, 1])
    with torch.no_grad():
        original = models.ema(torch.zeros(2, 8), labels, torch.zeros(2, 2, dtype=torch.long))
        rebuilt = loaded.build()(torch.zeros(2, 8), labels, torch.zeros(2, 2, dtype=torch.long))
    assert torch.allclose(original, rebuilt, atol=2e-2)  # weights stored in float16
    assert class_index(loaded.config, "B") == 1
    with pytest.raises(Exception, match="no class 'Z'"):
        class_index(loaded.config, "Z")


def test_loading_something_else_is_a_clear_error(tmp_path):
    from leukolens.io.common import LeukolensError

    with pytest.raises(LeukolensError, match="not found"):
        load_gan(tmp_path / "missing.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(LeukolensError, match="not a leukolens GAN"):
        load_gan(tmp_path / "other.pt")
