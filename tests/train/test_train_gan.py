"""The GAN trainer's pieces on hand-made crops: its configuration parts, batches and the loop between checkpoints."""

import dataclasses
import time

import numpy as np
import pytest
import torch

from leukolens.models.cellnet import AttributeSpec
from leukolens.models.gan import GanModels
from leukolens.train.gan import (
    GanData,
    GanDataConfig,
    GanModelConfig,
    GanOptimConfig,
    RunningLosses,
    TrainGanConfig,
    finished,
    gan_batches,
    gan_model_config,
    gan_optimizers,
    train_one_epoch,
)


def _names(config) -> set[str]:
    return {f.name for f in dataclasses.fields(config)}


def test_the_flat_config_is_its_three_parts_and_the_run_settings():
    parts = _names(GanDataConfig) | _names(GanModelConfig) | _names(GanOptimConfig)
    assert not _names(GanDataConfig) & _names(GanModelConfig) and not _names(GanModelConfig) & _names(GanOptimConfig)
    assert _names(TrainGanConfig) == parts | {"out", "checkpoint_minutes", "threads"}
    config = TrainGanConfig(data="d", image_size=32, lr_generator=3e-4, class_power=0.0)
    assert isinstance(config, GanDataConfig) and isinstance(config, GanModelConfig)
    assert (config.image_size, config.lr_generator, config.lr_discriminator, config.class_power) == (32, 3e-4, 4e-4, 0)


def _data(attributes: bool) -> GanData:
    """Four red crops of class 0 and one blue crop of class 1 (with one attribute of two values)."""
    crops = np.zeros((5, 16, 16, 3), np.uint8)
    crops[:4, ..., 0] = 255
    crops[4, ..., 2] = 255
    specs = (AttributeSpec("size", ("small", "large")),) if attributes else ()
    codes = np.array([[0], [1], [0], [1], [0]]) if attributes else np.zeros((5, 0), np.int64)
    return GanData(crops, np.array([0, 0, 0, 0, 1]), codes, ("Red", "Blue"), specs, 2.0, "image")


def test_batches_match_their_crops_and_draw_classes_by_class_power():
    data = _data(attributes=True)
    config = TrainGanConfig(data="d", batch_size=200, class_power=1.0)
    batch = next(gan_batches(data, config, rng=np.random.default_rng(0)))
    assert batch.real.shape == (200, 3, 16, 16) and batch.attributes.shape == (200, 1)
    red = batch.labels == 0
    # Red crops are red in [-1, 1]; blue ones blue; with class power 1 each class comes half the time.
    assert (batch.real[red, 0] == 1).all() and (batch.real[~red, 2] == 1).all() and (batch.real[~red, 0] == -1).all()
    assert abs(red.float().mean().item() - 0.5) < 0.1
    uniform = next(gan_batches(data, dataclasses.replace(config, class_power=0.0), rng=np.random.default_rng(0)))
    assert abs((uniform.labels == 0).float().mean().item() - 0.8) < 0.1
    assert next(gan_batches(_data(attributes=False), config, rng=np.random.default_rng(0))).attributes is None


def test_training_stops_at_the_step_limit_or_the_deadline():
    assert finished(5, GanOptimConfig(steps=5), None) and not finished(4, GanOptimConfig(steps=5), None)
    assert finished(0, GanOptimConfig(), time.time() - 1) and not finished(10**6, GanOptimConfig(), None)


class _Bar:
    def __init__(self):
        self.updates = 0

    def update(self, n):
        self.updates += n

    def set_postfix(self, values):
        pass


@pytest.mark.parametrize("attributes", [True, False])
def test_an_epoch_runs_to_the_step_limit_and_moves_both_networks_and_the_average(attributes):
    torch.manual_seed(0)
    data = _data(attributes)
    config = TrainGanConfig(data="d", image_size=16, latent_dim=8, condition_dim=8, g_channels=4, d_channels=4,
                            batch_size=4, steps=3, max_minutes=0)
    models = GanModels(gan_model_config(config, data))
    before = {name: p.detach().clone() for name, p in models.state_dict().items()}
    history, bar = [], _Bar()
    losses = RunningLosses(bar, history, started=time.time(), log=lambda _: None)
    batches = gan_batches(data, config, rng=np.random.default_rng(0))
    step = train_one_epoch(models, gan_optimizers(models, config), batches, 1, config=config,
                           generator=torch.Generator().manual_seed(0), losses=losses, deadline=None,
                           checkpoint_at=time.time() + 60)
    assert step == 3 and bar.updates == 2 and history == []
    assert set(losses.values) == {"d_real", "d_fake", "g", "real_score", "fake_score", "aux_real", "aux_fake",
                                  "mode_seeking"}
    assert all(np.isfinite(v) for v in losses.values.values())
    after = models.state_dict()
    for part in ("generator.", "discriminator.", "ema."):
        assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith(part)), part
    # A checkpoint already due ends the epoch after one step.
    due = train_one_epoch(models, gan_optimizers(models, dataclasses.replace(config, steps=10)),
                          gan_batches(data, config, rng=np.random.default_rng(0)), 3,
                          config=dataclasses.replace(config, steps=10), generator=torch.Generator(), losses=losses,
                          deadline=None, checkpoint_at=time.time() - 1)
    assert due == 4


def test_the_two_optimisers_keep_their_learning_rates():
    config = TrainGanConfig(data="d", image_size=16, latent_dim=8, condition_dim=8, g_channels=4, d_channels=4)
    models = GanModels(gan_model_config(config, _data(attributes=False)))
    g, d = gan_optimizers(models, config)
    assert [group["lr"] for group in g.param_groups] == [1e-4] and [group["lr"] for group in d.param_groups] == [4e-4]
    assert {id(p) for p in g.param_groups[0]["params"]} == {id(p) for p in models.generator.parameters()}
    assert g.param_groups[0]["betas"] == (0.0, 0.99)


@pytest.mark.parametrize("kind", ["projected", "vision-aided"])
def test_a_projected_discriminator_trains_its_heads_and_leaves_the_frozen_network_as_it_was(kind):
    torch.manual_seed(0)
    data = _data(True)
    config = TrainGanConfig(data="d", image_size=16, latent_dim=8, condition_dim=8, g_channels=4, d_channels=4,
                            batch_size=4, steps=2, max_minutes=0, discriminator=kind, feature_size=64)
    models = GanModels(gan_model_config(config, data))
    before = {name: p.detach().clone() for name, p in models.state_dict().items()}
    optimizers = gan_optimizers(models, config)
    assert all(p.requires_grad for group in optimizers[1].param_groups for p in group["params"])
    losses = RunningLosses(_Bar(), [], started=time.time(), log=lambda _: None)
    train_one_epoch(models, optimizers, gan_batches(data, config, rng=np.random.default_rng(0)), 0, config=config,
                    generator=torch.Generator().manual_seed(0), losses=losses, deadline=None,
                    checkpoint_at=time.time() + 60)
    after = models.state_dict()
    frozen = [n for n in before if ".backbone." in n]
    # weights and batch-norm statistics alike: ImageNet's, whatever train() was called
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
    projected = models.discriminator if kind == "projected" else models.discriminator.projected
    assert not projected.backbone.training
    assert all(p.requires_grad is False for p in projected.backbone.parameters())
    heads = [n for n in before if ".heads." in n]
    assert any(not torch.equal(before[n], after[n]) for n in heads)
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("generator."))
    if kind == "vision-aided":  # both discriminators learn
        assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("discriminator.resnet."))
