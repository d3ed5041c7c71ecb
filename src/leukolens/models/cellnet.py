"""The cell model: a pretrained backbone, a class head, and one head per morphological attribute.

Attribute-decoupled: each attribute has its own head, which pools the shared feature map its own way (a learned
spatial attention: nucleolus and chromatin look at the nucleus, cytoplasm colour at the rim) before its own
classifier. The class head pools globally. Built from any attribute schema (WBCAtt's 11, LLD's 7, or none).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TypeVar

import torch
from torch import nn

from leukolens.models.backbones import SPECS, build_backbone
from leukolens.records import AttributeSpec  # an attribute head's target; defined in records, re-exported here

ConfigT = TypeVar("ConfigT")


def config_from_dict(cls: type[ConfigT], values: dict) -> ConfigT:
    """A network config (a dataclass with ``classes`` and ``attributes``) from its stored form (``asdict``)."""
    values = dict(values)
    values["classes"] = tuple(values["classes"])
    values["attributes"] = tuple(AttributeSpec(a["name"], tuple(a["values"])) for a in values.get("attributes", ()))
    return cls(**values)


@dataclass(frozen=True)
class CellNetConfig:
    """Everything needed to rebuild the network (weights aside)."""

    classes: tuple[str, ...]
    attributes: tuple[AttributeSpec, ...] = ()
    backbone: str = "efficientnet_lite0"
    head_hidden: int = 64
    dropout: float = 0.2
    input_norm: str = "dataset"  # or "per-cell": see CellNet.forward

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> CellNetConfig:
        return config_from_dict(cls, values)


class AttentionPoolHead(nn.Module):
    """One attribute's head: reduce channels, pool with its own spatial attention, classify."""

    def __init__(self, in_channels: int, hidden: int, num_values: int, dropout: float):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU())
        self.attention = nn.Conv2d(hidden, 1, 1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, num_values))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[batch, values]`` and the pooled descriptor ``[batch, 2 * hidden]``."""
        reduced = self.reduce(features)  # [batch, hidden, h, w]
        weights = self.attention(reduced).flatten(2).softmax(dim=-1)  # [batch, 1, h*w]
        hidden = reduced.flatten(2)  # [batch, hidden, h*w]
        attended = (hidden * weights).sum(-1)  # [batch, hidden]
        pooled = torch.cat([attended, hidden.mean(-1)], dim=1)  # attention plus context
        return self.classifier(pooled), pooled


@dataclass
class CellOutput:
    class_logits: torch.Tensor  # [batch, classes]
    attribute_logits: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [batch, values]
    embedding: torch.Tensor | None = None  # [batch, features]: globally pooled backbone features
    attribute_features: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [batch, 2 * hidden]


INPUT_NORMS = ("dataset", "per-cell")


def per_cell_standardize(images: torch.Tensor) -> torch.Tensor:
    """Each image's channels brought to zero mean and unit spread over its own pixels.

    A microscope's lamp, camera and stain shift and scale each colour channel of the whole crop; dividing them out
    per crop removes that before the network sees it, while what tells cells apart (granules against cytoplasm,
    nucleus against the red cells around it) stays relative within the crop. The result has the statistics the
    ImageNet backbone expects of a normalised input.
    """
    mean = images.mean(dim=(2, 3), keepdim=True)
    spread = images.std(dim=(2, 3), keepdim=True)
    return (images - mean) / (spread + 1e-2)


MIX_STYLE_BLOCKS = (1, 2, 3)
"""EfficientNet-Lite0 stages (at 1/4, 1/8 and 1/16 of the input) whose outputs :func:`mix_styles` mixes: the early
and middle layers, where a feature map's per-channel statistics hold the image's style (stain, lamp, camera) rather
than what the cell is (Zhou et al. 2021 mix after the first three of ResNet's four stages)."""


def mix_styles(features: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """MixStyle (Zhou et al., ICLR 2021): each image's per-channel feature mean and spread replaced by a random
    mixture of its own and another image's of the batch, the content (the standardised map) kept.

    A batch that mixes microscopes thereby shows the network each cell under styles between those of the training
    microscopes, so that it learns to type cells whatever their style. Statistics are detached, as in the paper.
    """
    batch = features.shape[0]
    if batch < 2:
        return features
    mean = features.mean(dim=(2, 3), keepdim=True).detach()
    spread = (features.var(dim=(2, 3), keepdim=True) + 1e-6).sqrt().detach()
    content = (features - mean) / spread
    weight = torch.distributions.Beta(alpha, alpha).sample((batch, 1, 1, 1)).to(features)
    other = torch.randperm(batch, device=features.device)
    mixed_mean = weight * mean + (1 - weight) * mean[other]
    mixed_spread = weight * spread + (1 - weight) * spread[other]
    return content * mixed_spread + mixed_mean


def add_mix_style(model: nn.Module, probability: float) -> list:
    """Mix styles (:func:`mix_styles`) after :data:`MIX_STYLE_BLOCKS` on a share ``probability`` of training
    batches, never at prediction; returns the hook handles. A training option, not part of the network: the
    config (and so the checkpoint and the image-text model's link to it) does not change."""
    blocks = getattr(getattr(model.backbone, "model", None), "blocks", None)
    if blocks is None:
        raise ValueError(f"mix_style needs an EfficientNet backbone, not {model.config.backbone}")

    def hook(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        # the whole model's mode, not the block's: frozen early blocks stay in eval mode while the model trains
        if model.training and torch.rand(()) < probability:
            return mix_styles(output)
        return output

    return [blocks[index].register_forward_hook(hook) for index in MIX_STYLE_BLOCKS]


class CellNet(nn.Module):
    """Backbone + class head + attribute heads."""

    def __init__(self, config: CellNetConfig, *, pretrained: bool = True):
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone, pretrained=pretrained)
        channels = SPECS[config.backbone].num_features
        self.class_head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(channels, len(config.classes)))
        self.attribute_heads = nn.ModuleDict(
            {
                a.name: AttentionPoolHead(channels, config.head_hidden, len(a.values), config.dropout)
                for a in config.attributes
            }
        )
        # Temperatures that calibrate each head's probabilities, fitted on validation after training
        # (Guo et al. 2017); 1 until then. Index 0 is the class head, then the attributes in order.
        self.register_buffer("temperatures", torch.ones(1 + len(config.attributes)))

    def forward(self, images: torch.Tensor) -> CellOutput:
        if self.config.input_norm == "per-cell":
            images = per_cell_standardize(images)
        features = self.backbone(images)  # [batch, channels, h, w]
        embedding = features.mean(dim=(2, 3))  # [batch, channels]
        heads = {name: head(features) for name, head in self.attribute_heads.items()}
        return CellOutput(
            self.class_head(embedding) / self.temperatures[0],
            {name: logits / self.temperatures[i + 1] for i, (name, (logits, _)) in enumerate(heads.items())},
            embedding,
            {name: pooled for name, (_, pooled) in heads.items()},
        )
