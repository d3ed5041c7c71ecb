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
from collections.abc import Callable
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
from leukolens.models.gan import GanConfig, GanModels, sample_images
from leukolens.models.gan_checkpoint import (
    GanCheckpoint,
    attribute_pool,
    conditions_for,
    load_training_state,
    save_gan,
    save_training_state,
)


@dataclass
class TrainGanConfig:
    data: str
    out: str = "out/gan"
    image_size: int = 64
    crop: str = "auto"  # image (whole single-cell images), box (windows around boxes), auto
    context: float = 2.0  # window around a box, as a multiple of its longer side (box crops)
    attributes: bool = True  # condition on the data set's attributes when it has them
    batch_size: int = 32
    steps: int = 0  # stop after this many steps (0: only the time budget stops it)
    max_minutes: float = 30.0  # time budget (0: none; then ``steps`` must be set)
    lr_generator: float = 1e-4  # the two time-scale rule: the discriminator learns 4x faster (docs/gan.md)
    lr_discriminator: float = 4e-4
    betas: tuple[float, float] = (0.0, 0.99)
    ema_decay: float = 0.999
    class_power: float = 0.75  # 0: cells drawn uniformly, 1: classes equally often (see class_sampling_weights)
    policy: tuple[str, ...] = ("color", "translation", "cutout", "dihedral")
    aux_weight: float = 0.5  # AC-GAN class and attribute loss beside the hinge loss (0: the projection alone)
    mode_seeking: float = 1.0  # MSGAN term against cells of one condition all alike (0: off)
    latent_dim: int = 96
    condition_dim: int = 96
    g_channels: int = 16
    d_channels: int = 16
    rare: tuple[str, ...] = ()  # classes reduced to ``keep`` of their training cells (the rare-class protocol)
    keep: float = 1.0
    reduction_seed: int = 0
    train_split: str = "train"
    cache_dir: str = ".cache/leukolens"
    checkpoint_minutes: float = 3.0
    threads: int = 0  # torch threads (0: leave torch's default)
    seed: int = 0


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


def train_step(
    models: GanModels,
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    real: torch.Tensor,
    labels: torch.Tensor,
    attributes: torch.Tensor | None,
    config: TrainGanConfig,
    generator: torch.Generator,
    step: int,
) -> dict[str, float]:
    """One discriminator update and one generator update on a batch of real crops; returns the loss parts."""
    g_optimizer, d_optimizer = optimizers
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
    for parameter in models.discriminator.parameters():
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
    for parameter in models.discriminator.parameters():
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


def train_gan(config: TrainGanConfig, *, resume: bool = False, log: Callable[[str], None] = print) -> Path:
    """Train a conditional GAN; returns the path of ``generator.pt`` (the EMA generator)."""
    if not config.steps and not config.max_minutes:
        raise LeukolensError("give a time budget (--max-minutes) or a number of steps (--steps)")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    out = Path(config.out)
    data = load_gan_data(config, progress=_progress("caching crops"))
    counts = np.bincount(data.labels, minlength=len(data.classes))
    log(
        f"training on {len(data.labels):,} cells at {config.image_size} px: "
        + ", ".join(f"{c} {n}" for c, n in zip(data.classes, counts))
        + (f"; conditioned on {len(data.attribute_specs)} attributes" if data.attribute_specs else "")
    )
    if (counts == 0).any():
        missing = [c for c, n in zip(data.classes, counts) if n == 0]
        log(f"note: no training cells of {', '.join(missing)}: the GAN cannot learn them")
    gan_config = GanConfig(
        data.classes,
        data.attribute_specs,
        image_size=config.image_size,
        latent_dim=config.latent_dim,
        condition_dim=config.condition_dim,
        g_channels=config.g_channels,
        d_channels=config.d_channels,
    )
    models = GanModels(gan_config)
    g_optimizer = torch.optim.Adam(models.generator.parameters(), lr=config.lr_generator, betas=config.betas)
    d_optimizer = torch.optim.Adam(models.discriminator.parameters(), lr=config.lr_discriminator, betas=config.betas)
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
    weights = class_sampling_weights(data.labels, config.class_power)
    pool = attribute_pool(data.labels, data.attributes, len(data.classes))
    record = {**asdict(config), "cells": int(len(data.labels)), "class_counts": counts.tolist(),
              "selection_digest": data.digest}
    started = time.time() - 60 * minutes_before
    last_save = time.time()
    bar = tqdm(total=config.steps or None, initial=step, desc="gan", disable=None, file=sys.stderr, leave=False)
    running: dict[str, float] = {}

    def save() -> None:
        minutes = (time.time() - started) / 60
        extra = {"g_optimizer": g_optimizer.state_dict(), "d_optimizer": d_optimizer.state_dict(), "step": step,
                 "minutes": minutes, "history": history}
        save_training_state(models, out / "last.pt", extra=extra)
        record.update(steps=step, minutes=round(minutes, 2))
        checkpoint = GanCheckpoint(gan_config, models.ema.state_dict(), data.mode, data.context, pool, record)
        save_gan(checkpoint, out / "generator.pt")
        _save_preview(models, data.classes, pool, out / "preview.png")

    models.generator.train()
    models.discriminator.train()
    while True:
        if config.steps and step >= config.steps:
            break
        if config.max_minutes and time.time() - started > 60 * config.max_minutes:
            log(f"time budget of {config.max_minutes} minutes reached")
            break
        index = rng.choice(len(data.labels), size=config.batch_size, replace=True, p=weights)
        real = to_gan_input(data.crops[index])
        labels = torch.from_numpy(data.labels[index])
        attributes = torch.from_numpy(data.attributes[index]) if data.attribute_specs else None
        parts = train_step(models, (g_optimizer, d_optimizer), real, labels, attributes, config, generator, step)
        step += 1
        for name, value in parts.items():
            running[name] = 0.98 * running.get(name, value) + 0.02 * value
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix({k: f"{v:.2f}" for k, v in running.items() if k in ("d_real", "d_fake", "g")})
        if step % 200 == 0:
            minutes = (time.time() - started) / 60
            history.append({"step": step, "minutes": round(minutes, 2), **{k: round(v, 4) for k, v in running.items()}})
            log(f"step {step} ({minutes:.1f} min): " + ", ".join(f"{k} {v:.3f}" for k, v in running.items()))
        if time.time() - last_save > 60 * config.checkpoint_minutes:
            save()
            last_save = time.time()
    bar.close()
    save()
    log(f"{step} steps in {(time.time() - started) / 60:.1f} minutes; generator: {out / 'generator.pt'}")
    return out / "generator.pt"


def _save_preview(models: GanModels, classes: tuple[str, ...], pool: dict, path: Path, per_class: int = 8) -> None:
    from leukolens.eval.gan import image_grid, save_grid

    rows = []
    for index in range(len(classes)):
        labels, attributes = conditions_for(pool, index, per_class, models.config, seed=index)
        rows.append(sample_images(models.ema, labels, attributes, seed=index).numpy())
    save_grid(image_grid(rows, row_titles=list(classes)), path)


def _progress(description: str):
    return lambda iterable: tqdm(iterable, desc=description, leave=False, disable=None, file=sys.stderr)
