"""Batch transforms for cell crops, on tensors: what smears vary in, and nothing they do not.

A cell has no up or down, so flips and 90-degree rotations are free. Microscopes differ in zoom a little (small
scale changes), and stains and cameras differ in colour (stain jitter in the haematoxylin-eosin optical-density
space, plus brightness, contrast and saturation). Everything takes ``uint8`` crops ``[batch, size, size, 3]`` and
returns normalised ``float`` inputs ``[batch, 3, input_size, input_size]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Ruifrok & Johnston's stain vectors (rows: haematoxylin, eosin, residual) in optical density space.
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / _RGB_FROM_HED.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)


@dataclass(frozen=True)
class AugmentConfig:
    flips: bool = True
    rotations: bool = True
    scale: tuple[float, float] = (0.8, 1.0)  # side of the random crop, as a share of the cached crop
    stain_sigma: float = 0.05  # HED jitter: each stain scaled by 1 +- sigma and shifted by +- sigma
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1


def to_input(crops: torch.Tensor, input_size: int, mean, std, *, margin: float = 1.0) -> torch.Tensor:
    """The evaluation transform: centre crop away the cache ``margin``, resize, normalise."""
    images = crops.permute(0, 3, 1, 2).float() / 255  # [batch, 3, size, size]
    size = images.shape[-1]
    if size != input_size:
        side = round(size / margin)
        offset = (size - side) // 2
        images = images[..., offset : offset + side, offset : offset + side]
        images = F.interpolate(images, size=(input_size, input_size), mode="bilinear", antialias=True,
                               align_corners=False)
    return normalize(images, mean, std)


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    mean = torch.tensor(mean, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def hed_jitter(images: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Perturb stain amounts (Tellez et al. 2018): images in [0, 1], ``[batch, 3, h, w]``."""
    batch = images.shape[0]
    density = -torch.log(images.clamp(min=1 / 255))  # optical density
    hed = torch.einsum("bchw,cd->bdhw", density, _HED_FROM_RGB)
    alpha = 1 + (torch.rand(batch, 3, 1, 1, generator=generator) * 2 - 1) * sigma
    beta = (torch.rand(batch, 3, 1, 1, generator=generator) * 2 - 1) * sigma
    density = torch.einsum("bdhw,dc->bchw", hed * alpha + beta, _RGB_FROM_HED)
    return torch.exp(-density).clamp(0, 1)


def augment(
    crops: torch.Tensor, config: AugmentConfig, input_size: int, mean, std, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The training transform: geometry per sample, then colour per sample, then normalisation."""
    images = crops.permute(0, 3, 1, 2).float() / 255  # [batch, 3, size, size]
    batch, size = images.shape[0], images.shape[-1]
    out = torch.empty(batch, 3, input_size, input_size)
    low, high = config.scale
    for i in range(batch):
        side = int(size * (low + (high - low) * torch.rand(1, generator=generator).item()))
        x = int(torch.randint(0, size - side + 1, (1,), generator=generator))
        y = int(torch.randint(0, size - side + 1, (1,), generator=generator))
        patch = images[i : i + 1, :, y : y + side, x : x + side]
        patch = F.interpolate(patch, size=(input_size, input_size), mode="bilinear", antialias=True,
                              align_corners=False)
        if config.flips and torch.rand(1, generator=generator).item() < 0.5:
            patch = patch.flip(-1)
        if config.rotations:
            patch = torch.rot90(patch, int(torch.randint(0, 4, (1,), generator=generator)), dims=(-2, -1))
        out[i] = patch[0]
    if config.stain_sigma:
        out = hed_jitter(out, config.stain_sigma, generator)
    out = colour_jitter(out, config.brightness, config.contrast, config.saturation, generator)
    return normalize(out.clamp(0, 1), mean, std)


def colour_jitter(
    images: torch.Tensor, brightness: float, contrast: float, saturation: float, generator: torch.Generator
) -> torch.Tensor:
    """Scale brightness, contrast and saturation of each image ``[batch, 3, h, w]`` by its own random factor in
    ``1 +- amount`` (drawn in that order; an amount of 0 draws nothing)."""

    def factors(amount: float) -> torch.Tensor:
        return 1 + (torch.rand(len(images), 1, 1, 1, generator=generator) * 2 - 1) * amount

    if brightness:
        images = images * factors(brightness)
    if contrast:
        level = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - level) * factors(contrast) + level
    if saturation:
        gray = images.mean(dim=1, keepdim=True)
        images = (images - gray) * factors(saturation) + gray
    return images
