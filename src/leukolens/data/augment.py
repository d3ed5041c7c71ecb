"""Batch transforms for cell crops, on tensors: what smears vary in, and nothing they do not.

A cell has no up or down, so flips and 90-degree rotations are free. Microscopes differ in zoom a little (small
scale changes), and stains and cameras differ in colour (stain jitter in the haematoxylin-eosin optical-density
space, plus brightness, contrast and saturation). Everything takes ``uint8`` crops ``[batch, size, size, 3]`` and
returns normalised ``float`` inputs ``[batch, 3, input_size, input_size]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Ruifrok & Johnston's stain vectors (rows: haematoxylin, eosin, residual) in optical density space.
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / _RGB_FROM_HED.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)


VIEWS = 4
"""How many of a crop's flips and quarter turns a prediction averages (test-time augmentation; 1: the crop as it
is). A cell has no up or down, so each view is as good a reading as the upright one, and their mean is steadier on
a microscope the model never saw: on the six leave-one-microscope-out models, the four quarter turns typed 0.4-5.6
points more of the never-seen domain's cells than the upright crop alone, all eight views 0.4-5.8
(``docs/domains.md``). Four, not eight: each view is one more pass of the cell model, and eight cost ``analyze``
a quarter of its speed for at most a point more."""


def dihedral(crops: np.ndarray, view: int) -> np.ndarray:
    """View 0-7 of ``uint8`` crops ``[n, s, s, 3]``: ``view % 4`` quarter turns, mirrored from 4 on (0: as is)."""
    out = np.rot90(crops, view % 4, axes=(1, 2))
    return np.ascontiguousarray(out[:, :, ::-1] if view >= 4 else out)


@dataclass(frozen=True)
class AugmentConfig:
    flips: bool = True
    rotations: bool = True
    scale: tuple[float, float] = (0.8, 1.0)  # side of the random crop, as a share of the cached crop
    stain_sigma: float = 0.05  # HED jitter: each stain scaled by 1 +- sigma and shifted by +- sigma
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    # Microscope, camera and stain changes beyond jitter (0 or False: off). Each is applied to a random share of
    # the batch (``optics_share``), so that the model also sees clean cells.
    hue: float = 0.0  # hue rotated by up to +- this many turns: stains that come out bluer or pinker
    grayscale: float = 0.0  # probability of a grey image: monochrome cameras, faded stains
    blur: float = 0.0  # Gaussian of sigma up to this (input pixels): focus and cheap optics
    noise: float = 0.0  # sensor noise, standard deviation up to this (of 1.0)
    vignette: float = 0.0  # corners darkened by up to this share: uneven illumination
    jpeg: tuple[int, int] = (0, 0)  # JPEG re-encoding at a quality in this range ((0, 0): never)
    optics_share: float = 0.5


AUGMENT_PRESETS = {
    # What the PBC-only model trained with: one microscope, gentle colour changes.
    "default": AugmentConfig(),
    # For cells from microscopes, cameras and stains never trained on.
    "robust": AugmentConfig(
        scale=(0.65, 1.0),
        stain_sigma=0.15,
        brightness=0.25,
        contrast=0.25,
        saturation=0.35,
        hue=0.04,
        grayscale=0.1,
        blur=1.5,
        noise=0.03,
        vignette=0.3,
        jpeg=(30, 90),
    ),
}
"""Augmentation presets for cell crops by name (``leukolens train cells --augment``)."""


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
    out = optics(out.clamp(0, 1), config, generator)
    return normalize(out.clamp(0, 1), mean, std)


def _chosen(batch: int, probability: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(batch, generator=generator) < probability


def hue_rotate(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate each image's hue ``[batch, 3, h, w]`` by ``turns[b]`` of a full turn, about the grey axis (keeps
    luminance and saturation up to clipping)."""
    angle = (turns * 2 * torch.pi).view(-1, 1, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    k = torch.full((3, 3), 1 / 3)
    cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / 3**0.5
    eye = torch.eye(3)
    # Rodrigues' rotation about (1, 1, 1)/sqrt(3): [batch, 3, 3]
    rotation = cos * eye + sin * cross + (1 - cos) * k
    return torch.einsum("bij,bjhw->bihw", rotation, images)


def vignette(images: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """Darken each image towards its corners by up to ``strength[b]`` (radial, quadratic)."""
    h, w = images.shape[-2:]
    y = torch.linspace(-1, 1, h).view(h, 1)
    x = torch.linspace(-1, 1, w).view(1, w)
    radius = (x**2 + y**2) / 2  # 0 in the centre, 1 in the corners
    return images * (1 - strength.view(-1, 1, 1, 1) * radius)


def jpeg(images: torch.Tensor, qualities: list[int]) -> torch.Tensor:
    """Re-encode images with JPEG at the given qualities (0: leave that image as it is)."""
    from torchvision.io import decode_jpeg, encode_jpeg

    out = images.clone()
    for b, quality in enumerate(qualities):
        if quality > 0:
            encoded = encode_jpeg((images[b] * 255).round().to(torch.uint8), quality=int(quality))
            out[b] = decode_jpeg(encoded).float() / 255
    return out


def optics(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Hue, grey, blur, noise, vignetting and JPEG on images in [0, 1] ``[batch, 3, h, w]``."""
    from leukolens.data.fields import gaussian_blur

    batch, share = images.shape[0], config.optics_share
    if config.hue:
        turns = (torch.rand(batch, generator=generator) * 2 - 1) * config.hue * _chosen(batch, share, generator)
        images = hue_rotate(images, turns).clamp(0, 1)
    if config.grayscale:
        grey = _chosen(batch, config.grayscale, generator).view(-1, 1, 1, 1)
        images = torch.where(grey, images.mean(dim=1, keepdim=True).expand_as(images), images)
    if config.blur:
        sigmas = torch.rand(batch, generator=generator) * config.blur * _chosen(batch, share, generator)
        images = gaussian_blur(images, sigmas)
    if config.noise:
        level = torch.rand(batch, generator=generator) * config.noise * _chosen(batch, share, generator)
        images = images + torch.randn(images.shape, generator=generator) * level.view(-1, 1, 1, 1)
    if config.vignette:
        strength = torch.rand(batch, generator=generator) * config.vignette * _chosen(batch, share, generator)
        images = vignette(images, strength)
    low, high = config.jpeg
    if high > 0:
        chosen = _chosen(batch, share, generator)
        qualities = torch.randint(low, high + 1, (batch,), generator=generator) * chosen
        images = jpeg(images.clamp(0, 1), qualities.tolist())
    return images.clamp(0, 1)


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
