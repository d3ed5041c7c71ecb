"""A small conditional GAN for single-cell crops, sized to train on two CPU cores in under an hour.

Generator: a ResNet-style up-sampling stack (BigGAN-lite) from a latent vector to an RGB crop in [-1, 1]. It is
conditioned on the class and, optionally, on morphological attributes: each attribute value has an embedding that is
summed with the class embedding, and the condition modulates every normalisation layer (conditional GroupNorm, so a
sample never depends on the rest of its batch and the EMA copy needs no running statistics).

Discriminator: a ResNet-style down-sampling stack with spectral normalisation on every layer and a projection head
(Miyato & Koyama 2018): the score is ``linear(h) + <embed(class), h> + sum_a <embed_a(value_a), h>``. An attribute
whose value is not known (not applicable, unknown, or a class without attributes) adds nothing. Auxiliary class and
attribute heads on the same features (AC-GAN, Odena et al. 2017) let training also ask the generator for cells that
read as their condition.

The projected discriminator (:class:`ProjectedDiscriminator`; Projected GAN, Sauer et al. 2021; Vision-aided GAN,
Kumari et al. 2022) scores cells on the features of a frozen ImageNet EfficientNet-Lite0 at three depths, each read by
a small spectrally normalised head with its own projection. The frozen network already tells a nucleus from a
granule, so the discriminator learns from a few thousand cells what one trained from scratch cannot, and the
generator gets gradients that speak of such parts rather than of pixels.

Attribute codes use :data:`~leukolens.data.cells.IGNORE` (-100) for "not known", as the cell model's targets do.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from leukolens.models.cellnet import config_from_dict
from leukolens.records import AttributeSpec

UNKNOWN_CODE = -100
"""An attribute code that conditions nothing (the cell model's IGNORE)."""


@dataclass(frozen=True)
class GanConfig:
    """Everything needed to rebuild both networks (weights aside)."""

    classes: tuple[str, ...]
    attributes: tuple[AttributeSpec, ...] = ()
    image_size: int = 64
    latent_dim: int = 96
    condition_dim: int = 96
    g_channels: int = 32  # width of the generator's last stage; earlier stages are wider
    d_channels: int = 32
    discriminator: str = "resnet"  # resnet (from scratch), projected (frozen ImageNet features) or vision-aided (both)
    feature_size: int = 128  # projected: the side crops are resized to before the frozen backbone

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GanConfig:
        return config_from_dict(cls, values)

    @property
    def stages(self) -> int:
        """Up-sampling stages from 4 px: 4 for 64 px, 5 for 128 px."""
        stages = (self.image_size // 4).bit_length() - 1
        if 4 * 2**stages != self.image_size or stages < 1:
            raise ValueError(f"image_size must be 4 times a power of two (32, 64, 128), got {self.image_size}")
        return stages

    def widths(self, base: int) -> list[int]:
        """Channels per stage, widest at 4 px: base * (8, 4, 2, 1, ...) capped at 8x."""
        return [base * min(8, 2 ** (self.stages - i)) for i in range(self.stages + 1)]


class ConditionEmbedding(nn.Module):
    """Class embedding plus one embedding per attribute value; unknown attributes add zero.

    Returns the summed condition ``[batch, dim]`` and, for the projection discriminator, the same sum.
    """

    def __init__(self, config: GanConfig, dim: int):
        super().__init__()
        self.classes = nn.Embedding(len(config.classes), dim)
        self.attributes = nn.ModuleList(nn.Embedding(len(a.values), dim) for a in config.attributes)

    def forward(self, labels: torch.Tensor, attributes: torch.Tensor | None) -> torch.Tensor:
        condition = self.classes(labels)  # [batch, dim]
        if attributes is not None:
            for i, embedding in enumerate(self.attributes):
                codes = attributes[:, i]  # [batch]
                known = codes >= 0
                condition = condition + embedding(codes.clamp(min=0)) * known.unsqueeze(1).to(condition.dtype)
        return condition


class ConditionalNorm(nn.Module):
    """GroupNorm whose scale and shift come from the condition (per sample, independent of the batch)."""

    def __init__(self, channels: int, condition_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(min(8, channels // 4), channels, affine=False)
        self.scale = nn.Linear(condition_dim, channels)
        self.shift = nn.Linear(condition_dim, channels)
        nn.init.zeros_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)
        nn.init.zeros_(self.scale.bias)
        nn.init.zeros_(self.shift.bias)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        gamma = 1 + self.scale(condition)[:, :, None, None]  # [batch, channels, 1, 1]
        beta = self.shift(condition)[:, :, None, None]
        return self.norm(x) * gamma + beta


class GeneratorBlock(nn.Module):
    """norm-relu-conv-upsample-norm-relu-conv, plus an up-sampled 1x1 shortcut.

    The first convolution runs before the up-sampling, at a quarter of the cost of running it after (on a CPU the
    high-resolution convolutions are most of a step).
    """

    def __init__(self, in_channels: int, out_channels: int, condition_dim: int):
        super().__init__()
        self.norm1 = ConditionalNorm(in_channels, condition_dim)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = ConditionalNorm(out_channels, condition_dim)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(self.conv1(F.relu(self.norm1(x, condition))), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.norm2(h, condition)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class Generator(nn.Module):
    """Latent ``[batch, latent_dim]`` + class ``[batch]`` + attribute codes ``[batch, attributes]`` -> image
    ``[batch, 3, size, size]`` in [-1, 1]."""

    def __init__(self, config: GanConfig):
        super().__init__()
        self.config = config
        widths = config.widths(config.g_channels)
        self.embed = ConditionEmbedding(config, config.condition_dim)
        condition_dim = config.condition_dim + config.latent_dim  # BigGAN: the latent also modulates each block
        self.input = nn.Linear(config.latent_dim + config.condition_dim, widths[0] * 16)
        self.blocks = nn.ModuleList(
            GeneratorBlock(widths[i], widths[i + 1], condition_dim) for i in range(config.stages)
        )
        self.output = nn.Sequential(
            nn.GroupNorm(min(8, widths[-1] // 4), widths[-1]), nn.ReLU(), nn.Conv2d(widths[-1], 3, 3, padding=1)
        )

    def forward(
        self, latent: torch.Tensor, labels: torch.Tensor, attributes: torch.Tensor | None = None
    ) -> torch.Tensor:
        condition = self.embed(labels, attributes)  # [batch, condition_dim]
        h = self.input(torch.cat([latent, condition], dim=1)).view(len(latent), -1, 4, 4)
        block_condition = torch.cat([condition, latent], dim=1)
        for block in self.blocks:
            h = block(h, block_condition)
        return torch.tanh(self.output(h))


class DiscriminatorBlock(nn.Module):
    """relu-conv-relu-avgpool-conv with an avgpool-1x1 shortcut, spectrally normalised (no activation before the
    first block). The second convolution runs after the pooling, at a quarter of the cost."""

    def __init__(self, in_channels: int, out_channels: int, *, first: bool):
        super().__init__()
        self.first = first
        self.conv1 = spectral_norm(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.shortcut = spectral_norm(nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.avg_pool2d(F.relu(self.conv1(h)), 2))
        return h + self.shortcut(F.avg_pool2d(x, 2))


class Discriminator(nn.Module):
    """Image ``[batch, 3, size, size]`` + condition -> realness score ``[batch]`` (projection discriminator)."""

    def __init__(self, config: GanConfig):
        super().__init__()
        self.config = config
        widths = [3, *reversed(config.widths(config.d_channels)[:-1])]  # narrow at full size, wide at 4 px
        self.blocks = nn.Sequential(
            *(DiscriminatorBlock(widths[i], widths[i + 1], first=i == 0) for i in range(config.stages))
        )
        self.features = widths[-1]
        self.linear = spectral_norm(nn.Linear(self.features, 1))
        self.embed = ConditionEmbedding(config, self.features)
        for embedding in [self.embed.classes, *self.embed.attributes]:
            spectral_norm(embedding)
        # Auxiliary heads (AC-GAN): the class and each attribute read from the same features. Trained on real
        # cells only; the generator is asked to make cells they read as the condition (``aux_weight`` in training).
        self.class_head = spectral_norm(nn.Linear(self.features, len(config.classes)))
        self.attribute_heads = nn.ModuleList(
            spectral_norm(nn.Linear(self.features, len(a.values))) for a in config.attributes
        )

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, attributes: torch.Tensor | None = None, *,
        auxiliary: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """The realness score ``[batch]``; with ``auxiliary``, also class logits ``[batch, classes]`` and one
        ``[batch, values]`` logit tensor per attribute."""
        h = F.relu(self.blocks(images)).sum(dim=(2, 3))  # [batch, features]
        projection = (self.embed(labels, attributes) * h).sum(dim=1)  # [batch]
        score = self.linear(h).squeeze(1) + projection
        if not auxiliary:
            return score
        return score, self.class_head(h), [head(h) for head in self.attribute_heads]


PROJECTED_STAGES = (2, 4, 6)
"""EfficientNet-Lite0 blocks whose outputs the projected discriminator reads: 1/8, 1/16 and 1/32 of its input
(40, 112 and 320 channels): textures and granules, nuclear lobes, the whole cell."""


class FeatureHead(nn.Module):
    """One depth of the projected discriminator: spectrally normalised convolutions on frozen features, pooled to a
    vector ``h``, scored as ``linear(h) + <embed(condition), h>``."""

    def __init__(self, in_channels: int, width: int, config: GanConfig, *, downsample: bool):
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(in_channels, width, 1))  # mixes the frozen channels
        self.conv2 = spectral_norm(nn.Conv2d(width, width, 3, stride=2 if downsample else 1, padding=1))
        self.linear = spectral_norm(nn.Linear(width, 1))
        self.embed = ConditionEmbedding(config, width)
        for embedding in [self.embed.classes, *self.embed.attributes]:
            spectral_norm(embedding)

    def forward(self, features: torch.Tensor, labels: torch.Tensor, attributes: torch.Tensor | None):
        h = F.leaky_relu(self.conv2(F.leaky_relu(self.conv1(features), 0.2)), 0.2).mean(dim=(2, 3))  # [batch, width]
        score = self.linear(h).squeeze(1) + (self.embed(labels, attributes) * h).sum(dim=1)
        return score, h


class ProjectedDiscriminator(nn.Module):
    """Image ``[batch, 3, size, size]`` in [-1, 1] + condition -> realness score ``[batch]``: the sum of
    :class:`FeatureHead` scores on a frozen ImageNet EfficientNet-Lite0 at :data:`PROJECTED_STAGES`; the same call
    as :class:`Discriminator`, auxiliary heads included (on the heads' pooled features).

    The backbone stays frozen and in eval mode (its batch normalisation keeps ImageNet's statistics, whatever
    ``train()`` is called); gradients still flow through it to the generator."""

    def __init__(self, config: GanConfig):
        super().__init__()
        from leukolens.models.backbones import SPECS, build_backbone

        self.config = config
        self.backbone = build_backbone("efficientnet_lite0", pretrained=True).model
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)
        self.backbone.eval()
        spec = SPECS["efficientnet_lite0"]
        # [-1, 1] -> the backbone's normalised input: x * scale + shift
        mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
        self.register_buffer("scale", 0.5 / std, persistent=False)
        self.register_buffer("shift", (0.5 - mean) / std, persistent=False)
        channels = {2: 40, 4: 112, 6: 320}
        width = max(32, 2 * config.d_channels)
        self.heads = nn.ModuleList(
            FeatureHead(channels[i], width, config, downsample=i == PROJECTED_STAGES[0]) for i in PROJECTED_STAGES
        )
        self.features = width * len(PROJECTED_STAGES)
        self.class_head = spectral_norm(nn.Linear(self.features, len(config.classes)))
        self.attribute_heads = nn.ModuleList(
            spectral_norm(nn.Linear(self.features, len(a.values))) for a in config.attributes
        )

    def train(self, mode: bool = True) -> ProjectedDiscriminator:
        super().train(mode)
        self.backbone.eval()
        return self

    def frozen_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        size = self.config.feature_size
        if images.shape[-1] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        x = self.backbone.bn1(self.backbone.conv_stem(images * self.scale + self.shift))
        out = []
        for i, block in enumerate(self.backbone.blocks[: PROJECTED_STAGES[-1] + 1]):
            x = block(x)
            if i in PROJECTED_STAGES:
                out.append(x)
        return out

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, attributes: torch.Tensor | None = None, *,
        auxiliary: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        scores, pooled = zip(*(head(f, labels, attributes)
                               for head, f in zip(self.heads, self.frozen_features(images))))
        score = torch.stack(scores).sum(dim=0)
        if not auxiliary:
            return score
        h = torch.cat(pooled, dim=1)
        return score, self.class_head(h), [head(h) for head in self.attribute_heads]


class VisionAidedDiscriminator(nn.Module):
    """The ResNet discriminator and the projected one side by side (Vision-aided GAN, Kumari et al. 2022): the
    score is ``[batch, 2]``, one column each, so the hinge losses (means over every score) train each on its own
    and ask the generator to fool both. The ResNet one learns what the frozen ImageNet features are blind to
    (exact colour, pixel detail); the auxiliary heads are the ResNet one's."""

    def __init__(self, config: GanConfig):
        super().__init__()
        self.config = config
        self.resnet = Discriminator(config)
        self.projected = ProjectedDiscriminator(config)

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, attributes: torch.Tensor | None = None, *,
        auxiliary: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        vision = self.projected(images, labels, attributes)
        if not auxiliary:
            return torch.stack([self.resnet(images, labels, attributes), vision], dim=1)
        score, class_logits, attribute_logits = self.resnet(images, labels, attributes, auxiliary=True)
        return torch.stack([score, vision], dim=1), class_logits, attribute_logits


DISCRIMINATORS = ("resnet", "projected", "vision-aided")


def build_discriminator(config: GanConfig) -> nn.Module:
    if config.discriminator == "resnet":
        return Discriminator(config)
    if config.discriminator == "projected":
        return ProjectedDiscriminator(config)
    if config.discriminator == "vision-aided":
        return VisionAidedDiscriminator(config)
    raise ValueError(f"unknown discriminator {config.discriminator!r}: use {', '.join(DISCRIMINATORS)}")


def trainable(module: nn.Module) -> list[nn.Parameter]:
    """The parameters training updates (a projected discriminator's backbone is frozen)."""
    return [p for p in module.parameters() if p.requires_grad]


class GanModels(nn.Module):
    """The generator, its exponential moving average (what samples are drawn from), and the discriminator."""

    def __init__(self, config: GanConfig):
        super().__init__()
        self.config = config
        self.generator = Generator(config)
        self.discriminator = build_discriminator(config)
        self.ema = copy.deepcopy(self.generator).eval()
        for parameter in self.ema.parameters():
            parameter.requires_grad = False

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        for average, current in zip(self.ema.parameters(), self.generator.parameters()):
            average.mul_(decay).add_(current, alpha=1 - decay)
        for average, current in zip(self.ema.buffers(), self.generator.buffers()):
            average.copy_(current)


@torch.no_grad()
def sample_images(
    generator: Generator,
    labels: torch.Tensor,
    attributes: torch.Tensor | None = None,
    *,
    seed: int = 0,
    batch_size: int = 64,
    truncation: float = 0.0,
) -> torch.Tensor:
    """``uint8`` crops ``[n, size, size, 3]`` for the given classes (and attribute codes), reproducible by ``seed``.

    Args:
        truncation: when above 0, latent entries beyond this many standard deviations are redrawn (BigGAN's
            truncation trick: fewer odd samples, a little less variety).
    """
    generator.eval()
    rng = torch.Generator().manual_seed(seed)
    # All latents drawn at once, so a sample does not depend on the batch size.
    latents = torch.randn(len(labels), generator.config.latent_dim, generator=rng)
    if truncation > 0:
        outside = latents.abs() > truncation
        while outside.any():
            latents[outside] = torch.randn(int(outside.sum()), generator=rng)
            outside = latents.abs() > truncation
    out = []
    for start in range(0, len(labels), batch_size):
        codes = attributes[start : start + batch_size] if attributes is not None else None
        images = generator(latents[start : start + batch_size], labels[start : start + batch_size], codes)
        out.append(((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1))
    size = generator.config.image_size
    return torch.cat(out) if out else torch.zeros((0, size, size, 3), dtype=torch.uint8)
