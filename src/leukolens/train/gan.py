"""Training the conditional cell GAN on CPU: cached small crops, hinge loss, DiffAugment, an EMA generator, a time
budget, atomic checkpoints and ``--resume``.

Checkpoints in ``out``: ``last.pt`` (both networks, the EMA generator and the optimisers, float32, for resuming)
and ``generator.pt`` (the EMA generator only, float16, with everything ``leukolens generate`` needs: classes,
attribute vocabulary, the attribute combinations seen per class, crop settings and the training record).
``preview.png`` shows a few samples of every class, rewritten at each checkpoint.

With ``rare`` and ``keep`` the GAN trains on the reduced (imbalanced) training set of the rare-class protocol
(``leukolens balance``): the rare classes' dropped cells are never seen.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from leukolens.data.cells import CellSample, load_crops
from leukolens.data.imbalance import class_sampling_weights, selection_digest, split_cells
from leukolens.io import ProblemLog, read_dataset
from leukolens.io.common import LeukolensError
from leukolens.losses.adversarial import (
    auxiliary_loss,
    diff_augment,
    hinge_discriminator_loss,
    hinge_generator_loss,
    mode_seeking_loss,
)
from leukolens.models.cellnet import AttributeSpec
from leukolens.models.gan import GanConfig, GanModels, sample_images, trainable
from leukolens.models.gan_checkpoint import (
    GanCheckpoint,
    attribute_pool,
    conditions_for,
    load_training_state,
    save_gan,
    save_training_state,
)
from leukolens.train.loop import past, progress


@dataclass
class GanDataConfig:
    """The cells a GAN learns from: the data set, how cells are cut, which conditions, how classes are drawn."""

    data: str
    crop: str = "auto"  # image (whole single-cell images), box (windows around boxes), auto
    context: float = 2.0  # window around a box, as a multiple of its longer side (box crops)
    attributes: bool = True  # condition on the data set's attributes when it has them
    class_power: float = 0.75  # 0: cells drawn uniformly, 1: classes equally often (see class_sampling_weights)
    rare: tuple[str, ...] = ()  # classes reduced to ``keep`` of their training cells (the rare-class protocol)
    keep: float = 1.0
    reduction_seed: int = 0
    train_split: str = "train"
    cache_dir: str = ".cache/leukolens"


@dataclass
class GanModelConfig:
    """The two networks (with the data's classes and attributes they make a :class:`GanConfig`)."""

    image_size: int = 64
    latent_dim: int = 96
    condition_dim: int = 96
    g_channels: int = 16
    d_channels: int = 16
    discriminator: str = "resnet"  # resnet, projected (heads on frozen ImageNet features) or vision-aided (both)
    feature_size: int = 128  # projected: crops resized to this before the frozen backbone


@dataclass
class GanOptimConfig:
    """How long and how fast the GAN trains, and what its losses weigh."""

    batch_size: int = 32
    steps: int = 0  # stop after this many steps (0: only the time budget stops it)
    max_minutes: float = 30.0  # time budget (0: none; then ``steps`` must be set)
    lr_generator: float = 1e-4  # the two time-scale rule: the discriminator learns 4x faster (docs/gan.md)
    lr_discriminator: float = 4e-4
    betas: tuple[float, float] = (0.0, 0.99)
    ema_decay: float = 0.999
    policy: tuple[str, ...] = ("color", "translation", "cutout", "dihedral")
    aux_weight: float = 0.5  # AC-GAN class and attribute loss beside the hinge loss (0: the projection alone)
    mode_seeking: float = 1.0  # MSGAN term against cells of one condition all alike (0: off)
    seed: int = 0


@dataclass
class TrainGanConfig(GanOptimConfig, GanModelConfig, GanDataConfig):
    """A GAN training run: its data, model and optimisation parts, where checkpoints go and how often.

    One flat constructor (``TrainGanConfig(data=..., steps=...)``) over the three parts; each function below takes
    the part it reads (:func:`gan_model_config` the model part, :func:`train_step` the optimisation part).
    """

    out: str = "out/gan"
    checkpoint_minutes: float = 3.0
    threads: int = 0  # torch threads (0: leave torch's default)


@dataclass
class GanData:
    """The crops a GAN trains on and their conditions."""

    crops: np.ndarray  # uint8 [n, size, size, 3]
    labels: np.ndarray  # [n]
    attributes: np.ndarray  # [n, attributes], IGNORE (-100) where not known
    classes: tuple[str, ...]
    attribute_specs: tuple[AttributeSpec, ...]
    context: float
    mode: str
    samples: list[CellSample] = field(default_factory=list)
    digest: str = ""


def load_gan_data(config: TrainGanConfig, progress: Callable | None = None) -> GanData:
    """The (possibly reduced) training cells of ``config.data`` as cached crops at the GAN's size."""
    dataset = read_dataset(config.data, log=ProblemLog())
    cells = split_cells(
        dataset, split=config.train_split, crop=config.crop, context=config.context, attributes=config.attributes,
        rare=config.rare, keep=config.keep, reduction_seed=config.reduction_seed,
    )
    crops = load_crops(cells.samples, size=config.image_size, context=cells.context, cache_dir=Path(config.cache_dir),
                       progress=progress)
    return GanData(crops, cells.labels, cells.attribute_codes, cells.classes, cells.attributes, cells.context,
                   cells.mode, cells.samples, selection_digest(cells.samples))


def to_gan_input(crops: np.ndarray) -> torch.Tensor:
    """uint8 ``[batch, size, size, 3]`` -> float ``[batch, 3, size, size]`` in [-1, 1]."""
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1


@dataclass
class GanBatch:
    real: torch.Tensor  # [batch, 3, size, size] in [-1, 1]
    labels: torch.Tensor  # [batch] class indices
    attributes: torch.Tensor | None  # [batch, attributes] value codes, IGNORE where unknown; None: unconditioned


def gan_batches(data: GanData, config: TrainGanConfig, *, rng: np.random.Generator) -> Iterator[GanBatch]:
    """Endless batches of the real crops, drawn with replacement with ``rng``, each class weighted by
    ``class_power`` (:func:`class_sampling_weights`)."""
    weights = class_sampling_weights(data.labels, config.class_power)
    while True:
        index = rng.choice(len(data.labels), size=config.batch_size, replace=True, p=weights)
        yield GanBatch(
            to_gan_input(data.crops[index]),
            torch.from_numpy(data.labels[index]),
            torch.from_numpy(data.attributes[index]) if data.attribute_specs else None,
        )


def train_step(
    models: GanModels,
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    batch: GanBatch,
    step: int,
    *,
    config: GanOptimConfig,
    generator: torch.Generator,
) -> dict[str, float]:
    """One discriminator update and one generator update on a batch of real crops (step ``step``, 0-based);
    returns the loss parts."""
    g_optimizer, d_optimizer = optimizers
    real, labels, attributes = batch.real, batch.labels, batch.attributes
    batch = len(real)
    latent_dim = models.config.latent_dim
    with torch.no_grad():
        fake = models.generator(torch.randn(batch, latent_dim, generator=generator), labels, attributes)
    both = diff_augment(torch.cat([real, fake]), policy=config.policy, generator=generator)
    scores, class_logits, attribute_logits = models.discriminator(
        both, labels.repeat(2), None if attributes is None else attributes.repeat(2, 1), auxiliary=True
    )
    d_parts = hinge_discriminator_loss(scores[:batch], scores[batch:])
    d_total = d_parts["total"]
    aux_real = torch.zeros(())
    if config.aux_weight:  # the auxiliary heads learn from real cells only
        aux_real = auxiliary_loss(class_logits[:batch], [a[:batch] for a in attribute_logits], labels, attributes)
        d_total = d_total + config.aux_weight * aux_real
    d_optimizer.zero_grad(set_to_none=True)
    d_total.backward()
    d_optimizer.step()

    latents = torch.randn(batch, latent_dim, generator=generator)
    if config.mode_seeking:  # pairs: the second half repeats the first half's conditions with other latents
        half = batch // 2
        labels = torch.cat([labels[:half], labels[:half]])
        attributes = None if attributes is None else torch.cat([attributes[:half], attributes[:half]])
        latents = latents[: 2 * half]
    fake = models.generator(latents, labels, attributes)
    d_trainable = trainable(models.discriminator)  # not a projected discriminator's frozen backbone
    for parameter in d_trainable:
        parameter.requires_grad_(False)
    fake_scores, class_logits, attribute_logits = models.discriminator(
        diff_augment(fake, policy=config.policy, generator=generator), labels, attributes, auxiliary=True
    )
    g_loss = hinge_generator_loss(fake_scores)
    aux_fake, spread = torch.zeros(()), torch.zeros(())
    g_total = g_loss
    if config.aux_weight:
        aux_fake = auxiliary_loss(class_logits, attribute_logits, labels, attributes)
        g_total = g_total + config.aux_weight * aux_fake
    if config.mode_seeking:
        spread = mode_seeking_loss(fake[:half], fake[half:], latents[:half], latents[half:])
        g_total = g_total + config.mode_seeking * spread
    g_optimizer.zero_grad(set_to_none=True)
    g_total.backward()
    g_optimizer.step()
    for parameter in d_trainable:
        parameter.requires_grad_(True)
    # A short warm-up of the average: early on the generator changes too fast for a 0.999 average to follow.
    models.update_ema(min(config.ema_decay, (1 + step) / (10 + step)))
    return {
        "d_real": d_parts["real"].item(),
        "d_fake": d_parts["fake"].item(),
        "g": g_loss.item(),
        "real_score": scores[:batch].mean().item(),
        "fake_score": scores[batch:].mean().item(),
        "aux_real": aux_real.item(),
        "aux_fake": aux_fake.item(),
        "mode_seeking": spread.item(),
    }


class RunningLosses:
    """Running averages (factor 0.98) of the loss parts of each step: on the progress bar every 50 steps, into
    ``history`` and the log every 200."""

    def __init__(self, bar: tqdm, history: list[dict], *, started: float, log: Callable[[str], None]):
        self.bar, self.history, self.started, self.log, self.values = bar, history, started, log, {}

    def add(self, step: int, parts: dict[str, float]) -> None:
        for name, value in parts.items():
            self.values[name] = 0.98 * self.values.get(name, value) + 0.02 * value
        self.bar.update(1)
        if step % 50 == 0:
            self.bar.set_postfix({k: f"{v:.2f}" for k, v in self.values.items() if k in ("d_real", "d_fake", "g")})
        if step % 200 == 0:
            minutes = (time.time() - self.started) / 60
            rounded = {k: round(v, 4) for k, v in self.values.items()}
            self.history.append({"step": step, "minutes": round(minutes, 2), **rounded})
            self.log(f"step {step} ({minutes:.1f} min): " + ", ".join(f"{k} {v:.3f}" for k, v in self.values.items()))


def finished(step: int, config: GanOptimConfig, deadline: float | None) -> bool:
    """Whether the step limit or the time budget (``deadline``) has ended training."""
    return bool(config.steps and step >= config.steps) or past(deadline)


def train_one_epoch(
    models: GanModels,
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    batches: Iterator[GanBatch],
    step: int,
    *,
    config: GanOptimConfig,
    generator: torch.Generator,
    losses: RunningLosses,
    deadline: float | None,
    checkpoint_at: float,
) -> int:
    """The GAN's epoch: steps on ``batches`` from step ``step`` until a checkpoint is due (time ``checkpoint_at``)
    or training is :func:`finished`; returns the step reached. A GAN has no passes over its data, so the stretch
    between two checkpoints stands in for one."""
    models.generator.train()
    models.discriminator.train()
    while not finished(step, config, deadline):
        parts = train_step(models, optimizers, next(batches), step, config=config, generator=generator)
        step += 1
        losses.add(step, parts)
        if time.time() > checkpoint_at:
            break
    return step


def gan_model_config(config: GanModelConfig, data: GanData) -> GanConfig:
    """The networks of ``config`` for the classes and attributes of ``data``."""
    return GanConfig(
        data.classes,
        data.attribute_specs,
        image_size=config.image_size,
        latent_dim=config.latent_dim,
        condition_dim=config.condition_dim,
        g_channels=config.g_channels,
        d_channels=config.d_channels,
        discriminator=config.discriminator,
        feature_size=config.feature_size,
    )


def gan_optimizers(models: GanModels, config: GanOptimConfig) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for the generator and for the discriminator, each at its own learning rate."""
    return (
        torch.optim.Adam(models.generator.parameters(), lr=config.lr_generator, betas=config.betas),
        torch.optim.Adam(trainable(models.discriminator), lr=config.lr_discriminator, betas=config.betas),
    )


def train_gan(config: TrainGanConfig, *, resume: bool = False, log: Callable[[str], None] = print) -> Path:
    """Train a conditional GAN; returns the path of ``generator.pt`` (the EMA generator)."""
    if not config.steps and not config.max_minutes:
        raise LeukolensError("give a time budget (--max-minutes) or a number of steps (--steps)")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    out = Path(config.out)
    data = load_gan_data(config, progress=progress("caching crops"))
    counts = np.bincount(data.labels, minlength=len(data.classes))
    log(
        f"training on {len(data.labels):,} cells at {config.image_size} px: "
        + ", ".join(f"{c} {n}" for c, n in zip(data.classes, counts))
        + (f"; conditioned on {len(data.attribute_specs)} attributes" if data.attribute_specs else "")
    )
    if (counts == 0).any():
        missing = [c for c, n in zip(data.classes, counts) if n == 0]
        log(f"note: no training cells of {', '.join(missing)}: the GAN cannot learn them")
    gan_config = gan_model_config(config, data)
    models = GanModels(gan_config)
    g_optimizer, d_optimizer = gan_optimizers(models, config)
    step, minutes_before, history = 0, 0.0, []
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    if resume and (out / "last.pt").is_file():
        saved_config, state_dict, extra = load_training_state(out / "last.pt")
        if saved_config != gan_config:
            raise LeukolensError(f"{out / 'last.pt'} was trained with other settings; resume with the same options")
        models.load_state_dict(state_dict)
        g_optimizer.load_state_dict(extra["g_optimizer"])
        d_optimizer.load_state_dict(extra["d_optimizer"])
        step, minutes_before, history = extra["step"], extra["minutes"], extra["history"]
        rng = np.random.default_rng(config.seed + step)
        generator = torch.Generator().manual_seed(config.seed + step)
        log(f"resuming after step {step} ({minutes_before:.1f} minutes so far)")
    pool = attribute_pool(data.labels, data.attributes, len(data.classes))
    record = {**asdict(config), "cells": int(len(data.labels)), "class_counts": counts.tolist(),
              "selection_digest": data.digest}
    started = time.time() - 60 * minutes_before
    deadline = started + 60 * config.max_minutes if config.max_minutes else None
    bar = tqdm(total=config.steps or None, initial=step, desc="gan", disable=None, file=sys.stderr, leave=False)
    losses = RunningLosses(bar, history, started=started, log=log)
    batches = gan_batches(data, config, rng=rng)

    def save() -> None:
        minutes = (time.time() - started) / 60
        extra = {"g_optimizer": g_optimizer.state_dict(), "d_optimizer": d_optimizer.state_dict(), "step": step,
                 "minutes": minutes, "history": history}
        save_training_state(models, out / "last.pt", extra=extra)
        record.update(steps=step, minutes=round(minutes, 2))
        checkpoint = GanCheckpoint(gan_config, models.ema.state_dict(), data.mode, data.context, pool, record)
        save_gan(checkpoint, out / "generator.pt")
        _save_preview(models, data.classes, pool, out / "preview.png")

    while True:
        step = train_one_epoch(
            models, (g_optimizer, d_optimizer), batches, step, config=config, generator=generator, losses=losses,
            deadline=deadline, checkpoint_at=time.time() + 60 * config.checkpoint_minutes,
        )
        save()
        if finished(step, config, deadline):
            break
    if past(deadline) and not (config.steps and step >= config.steps):
        log(f"time budget of {config.max_minutes} minutes reached")
    bar.close()
    log(f"{step} steps in {(time.time() - started) / 60:.1f} minutes; generator: {out / 'generator.pt'}")
    return out / "generator.pt"


def _save_preview(models: GanModels, classes: tuple[str, ...], pool: dict, path: Path, per_class: int = 8) -> None:
    from leukolens.eval.gan import image_grid, save_grid

    rows = []
    for index in range(len(classes)):
        labels, attributes = conditions_for(pool, index, per_class, models.config, seed=index)
        rows.append(sample_images(models.ema, labels, attributes, seed=index).numpy())
    save_grid(image_grid(rows, row_titles=list(classes)), path)
