"""Adversarial losses and differentiable augmentation, outside the GAN models.

- Hinge loss (Lim & Ye 2017; SNGAN, BigGAN): the discriminator pushes real scores above +1 and fake scores below -1;
  the generator raises the fake scores.
- DiffAugment (Zhao et al. 2020): the same random colour, translation and cutout applied to real and fake images
  before the discriminator, differentiably, so a discriminator trained on a few hundred images does not memorise
  them, and the generator does not learn the augmentations (they sit between it and the discriminator). A cell has
  no up or down, so a random dihedral transform (flips, 90-degree rotations) joins them.
- Auxiliary classification (AC-GAN, Odena et al. 2017): cross-entropy of the discriminator's class and attribute
  heads; on real cells it trains the heads, on generated cells it asks the generator for cells of the condition.
- Mode seeking (MSGAN, Mao et al. 2019): two latents under one condition should give two different cells; the loss
  is the inverse of the images' distance over the latents' distance, so a generator that ignores its latent (every
  basophil the same basophil) pays for it.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def hinge_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """Named parts: ``real`` = mean relu(1 - D(x)), ``fake`` = mean relu(1 + D(G(z))), and their ``total``."""
    real = F.relu(1 - real_scores).mean()
    fake = F.relu(1 + fake_scores).mean()
    return {"real": real, "fake": fake, "total": real + fake}


def hinge_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """-mean D(G(z))."""
    return -fake_scores.mean()


def auxiliary_loss(
    class_logits: torch.Tensor,
    attribute_logits: list[torch.Tensor],
    labels: torch.Tensor,
    attributes: torch.Tensor | None,
) -> torch.Tensor:
    """Class cross-entropy plus the mean over attributes of their cross-entropy (codes below 0, not known, are
    ignored; an attribute with no known code in the batch adds nothing)."""
    loss = F.cross_entropy(class_logits, labels)
    if attributes is None or not attribute_logits:
        return loss
    parts = [
        F.cross_entropy(logits, attributes[:, i].clamp(min=-100), ignore_index=-100, reduction="sum")
        / (attributes[:, i] >= 0).sum().clamp(min=1)
        for i, logits in enumerate(attribute_logits)
    ]
    return loss + torch.stack(parts).mean()


def mode_seeking_loss(
    first: torch.Tensor, second: torch.Tensor, first_latents: torch.Tensor, second_latents: torch.Tensor,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``1 / (mean |G(z1) - G(z2)| / mean |z1 - z2| + eps)`` over pairs of images made under the same conditions."""
    ratio = (first - second).abs().mean() / (first_latents - second_latents).abs().mean()
    return 1 / (ratio + eps)


def diff_augment(
    images: torch.Tensor,
    *,
    policy: tuple[str, ...] = ("color", "translation", "cutout", "dihedral"),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Augment ``[batch, 3, h, w]`` images in [-1, 1] differentiably, each sample its own way.

    Policies: ``color`` (brightness +-0.5, saturation x0..2, contrast x0.5..1.5, as in DiffAugment),
    ``translation`` (shift by up to 1/8 of the side, zero-padded), ``cutout`` (a zeroed square of half the side),
    ``dihedral`` (random flip and 90-degree rotation; for square images).
    """
    for name in policy:
        if name not in _POLICIES:
            raise ValueError(f"unknown DiffAugment policy {name!r}: use {', '.join(_POLICIES)}")
        images = _POLICIES[name](images, generator)
    return images.contiguous()


def _rand(batch: int, generator: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand(batch, 1, 1, 1, generator=generator).to(device)


def _color(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    batch = len(x)
    x = x + (_rand(batch, generator, x.device) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(batch, generator, x.device) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(batch, generator, x.device) + 0.5) + mean  # contrast


def _translation(x: torch.Tensor, generator: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    batch, _, height, width = x.shape
    sx, sy = int(width * ratio + 0.5), int(height * ratio + 0.5)
    shift_x = torch.randint(-sx, sx + 1, (batch, 1, 1), generator=generator)
    shift_y = torch.randint(-sy, sy + 1, (batch, 1, 1), generator=generator)
    grid_b, grid_y, grid_x = torch.meshgrid(
        torch.arange(batch), torch.arange(height), torch.arange(width), indexing="ij"
    )  # [batch, h, w] each
    grid_x = torch.clamp(grid_x + shift_x + 1, 0, width + 1)
    grid_y = torch.clamp(grid_y + shift_y + 1, 0, height + 1)
    padded = F.pad(x, [1, 1, 1, 1])  # the border row and column are zeros: what shifts in is blank
    return padded.permute(0, 2, 3, 1)[grid_b, grid_y, grid_x].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, generator: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    batch, _, height, width = x.shape
    cut_h, cut_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    offset_x = torch.randint(0, width + (1 - cut_w % 2), (batch, 1, 1), generator=generator)
    offset_y = torch.randint(0, height + (1 - cut_h % 2), (batch, 1, 1), generator=generator)
    grid_b, grid_y, grid_x = torch.meshgrid(
        torch.arange(batch), torch.arange(cut_h), torch.arange(cut_w), indexing="ij"
    )
    grid_x = torch.clamp(grid_x + offset_x - cut_w // 2, 0, width - 1)
    grid_y = torch.clamp(grid_y + offset_y - cut_h // 2, 0, height - 1)
    mask = torch.ones(batch, height, width, dtype=x.dtype)
    mask[grid_b, grid_y, grid_x] = 0
    return x * mask.unsqueeze(1).to(x.device)


def _dihedral(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if x.shape[-1] != x.shape[-2]:
        raise ValueError("the dihedral policy needs square images")
    flips = torch.rand(len(x), generator=generator) < 0.5
    turns = torch.randint(0, 4, (len(x),), generator=generator)
    x = torch.where(flips[:, None, None, None].to(x.device), x.flip(-1), x)
    out = x
    for k in (1, 2, 3):
        out = torch.where((turns == k)[:, None, None, None].to(x.device), torch.rot90(x, k, dims=(-2, -1)), out)
    return out


_POLICIES = {"color": _color, "translation": _translation, "cutout": _cutout, "dihedral": _dihedral}
