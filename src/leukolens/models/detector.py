"""A CenterNet-style detector for whole smear fields: objects as points (Zhou et al. 2019, "Objects as Points").

Blood cells are round blobs of fairly uniform size per class, which suits a detector that finds each cell's centre
as a peak of a per-class heatmap and reads the box size there. No anchors and no NMS: a peak is a local maximum in
a 3x3 window.

- Backbone: ImageNet-pretrained EfficientNet-Lite0 (or MobileNetV2) from the wheels in :mod:`backbones`, tapped at
  strides 4, 8, 16 and 32 (the 1280-channel head is dropped).
- Neck: a light FPN, top-down, depthwise-separable convolutions, down to the output stride (4 by default).
- Heads: ``heatmap`` (one channel per class, logits), ``size`` (box width and height in output cells), ``offset``
  (the sub-cell position of the centre).

Checkpoints (:class:`DetectorCheckpoint`) carry the config and class names, the preprocessing (input size, letterbox,
normalisation, stain reference), the score threshold for counting, and the metrics reached, so loading one needs
nothing else; :mod:`leukolens.models.checkpoint` saves and loads them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from leukolens.io.common import LeukolensError
from leukolens.models.backbones import SPECS, build_backbone
from leukolens.models.checkpoint import envelope_sections, load_checkpoint, records, save_checkpoint, with_weights
from leukolens.models.preprocess import Preprocess, PreprocessFields, StainReference, stored_stain

HEATMAP_PRIOR = 0.1  # initial heatmap probability, so the focal loss starts small (CenterNet's -2.19 bias)


@dataclass(frozen=True)
class DetectorConfig:
    """The network: classes, backbone, neck width, output stride."""

    classes: tuple[str, ...]
    backbone: str = "efficientnet_lite0"
    neck_channels: int = 64
    stride: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        if self.stride not in (4, 8):
            raise ValueError(f"output stride must be 4 or 8, got {self.stride}")

    def as_dict(self) -> dict:
        return {**asdict(self), "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, values: dict) -> DetectorConfig:
        return cls(**{**values, "classes": tuple(values["classes"])})


# ------------------------------------------------------------------------------------------------------ network
def _separable(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class _Taps(nn.Module):
    """The backbone's feature maps at strides 4, 8, 16, 32."""

    def __init__(self, name: str, pretrained: bool):
        super().__init__()
        features = build_backbone(name, pretrained=pretrained)
        if name == "efficientnet_lite0":
            model = features.model
            self.stem = nn.Sequential(model.conv_stem, model.bn1)
            blocks = model.blocks
            # blocks: 0 s2 16ch, 1 s4 24, 2 s8 40, 3 s16 80, 4 s16 112, 5 s32 192, 6 s32 320
            self.stages = nn.ModuleList([blocks[0:2], blocks[2:3], blocks[3:5], blocks[5:7]])
            self.channels = (24, 40, 112, 320)
        elif name == "mobilenet_v2":
            layers = features.features
            self.stem = layers[0]
            # features: 1-3 -> s4 24ch, 4-6 -> s8 32, 7-13 -> s16 96, 14-17 -> s32 320 (18, the 1280 head, dropped)
            self.stages = nn.ModuleList([layers[1:4], layers[4:7], layers[7:14], layers[14:18]])
            self.channels = (24, 32, 96, 320)
        else:
            raise LeukolensError(f"unknown detector backbone {name!r}: use one of {', '.join(SPECS)}")

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(images)
        taps = []
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
        return taps  # [batch, c_i, h / 2^(i+2), w / 2^(i+2)] for i = 0..3


class _Head(nn.Sequential):
    def __init__(self, channels: int, outputs: int, bias: float = 0.0):
        super().__init__(_separable(channels, channels), nn.Conv2d(channels, outputs, 1))
        nn.init.constant_(self[-1].bias, bias)


@dataclass
class DetectorOutput:
    heatmap: torch.Tensor  # [batch, classes, h, w] logits
    size: torch.Tensor  # [batch, 2, h, w] box width, height in output cells
    offset: torch.Tensor  # [batch, 2, h, w] centre offset within the cell, in cells


class CenterNet(nn.Module):
    def __init__(self, config: DetectorConfig, *, pretrained: bool = True):
        super().__init__()
        self.config = config
        self.taps = _Taps(config.backbone, pretrained)
        c = config.neck_channels
        self.lateral = nn.ModuleList([nn.Conv2d(ch, c, 1) for ch in self.taps.channels])
        self.smooth = nn.ModuleList([_separable(c, c) for _ in self.taps.channels[:-1]])
        self.heatmap = _Head(c, len(config.classes), bias=float(np.log(HEATMAP_PRIOR / (1 - HEATMAP_PRIOR))))
        self.size = _Head(c, 2)
        self.offset = _Head(c, 2)

    @property
    def first_level(self) -> int:
        """Index of the tap at the output stride (0 for stride 4, 1 for stride 8)."""
        return {4: 0, 8: 1}[self.config.stride]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The neck's map at the output stride ``[batch, neck_channels, h, w]``, which the three heads read (and
        pseudo-labelling compares with class prototypes)."""
        taps = self.taps(images)
        x = self.lateral[-1](taps[-1])
        for level in range(len(taps) - 2, self.first_level - 1, -1):  # top-down to the output stride
            lateral = self.lateral[level](taps[level])
            x = F.interpolate(x, size=lateral.shape[-2:], mode="nearest") + lateral
            x = self.smooth[level](x)
        return x

    def heads(self, features: torch.Tensor) -> DetectorOutput:
        return DetectorOutput(self.heatmap(features), F.relu(self.size(features)), self.offset(features))

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        return self.heads(self.features(images))


class PeakOutputs(nn.Module):
    """The network with decoding's heavy part inside: heatmap probabilities at 3x3 peaks (zero elsewhere), sizes
    and offsets. What ONNX export and :func:`decode` use."""

    def __init__(self, model: CenterNet):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        out = self.model(images)
        heat = torch.sigmoid(out.heatmap)
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).to(heat.dtype)
        return peaks, out.size, out.offset


class FieldNetwork(nn.Module):
    """:class:`PeakOutputs` that also does the input's conversion: ``uint8`` canvases ``[batch, h, w, 3]`` in,
    so that scaling and normalisation run inside ONNX Runtime rather than in numpy (about 15 ms a field saved)."""

    def __init__(self, model: CenterNet, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.peaks = PeakOutputs(model)
        self.register_buffer("scale", 1 / (255 * torch.tensor(std).view(1, 3, 1, 1)))
        self.register_buffer("shift", -torch.tensor(mean).view(1, 3, 1, 1) / torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, canvases: torch.Tensor):
        images = canvases.permute(0, 3, 1, 2).float() * self.scale + self.shift  # [batch, 3, h, w]
        return self.peaks(images)


# ------------------------------------------------------------------------------------------------------ decode
@dataclass
class Detections:
    """The cells found in one input: boxes ``[n, 4]`` xyxy in input pixels, scores ``[n]``, class indices ``[n]``."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def decode(
    peaks: np.ndarray,
    size: np.ndarray,
    offset: np.ndarray,
    *,
    stride: int,
    top_k: int = 300,
    threshold: float = 0.01,
) -> list[Detections]:
    """Boxes from peak heatmaps ``[batch, classes, h, w]``, sizes and offsets ``[batch, 2, h, w]``.

    The ``top_k`` strongest peaks above ``threshold`` of each image become boxes centred at the peak cell plus its
    offset, sized by the size head, in input pixels (cell ``(i, j)`` covers pixels ``stride * j .. stride * (j +
    1)``, so its centre plus offset is ``stride * (j + offset)``).
    """
    batch, classes, height, width = peaks.shape
    results = []
    for b in range(batch):
        flat = peaks[b].reshape(-1)  # [classes * h * w]
        k = min(top_k, flat.size)
        candidates = np.argpartition(-flat, k - 1)[:k] if k < flat.size else np.arange(flat.size)
        candidates = candidates[flat[candidates] > threshold]
        candidates = candidates[np.argsort(-flat[candidates], kind="stable")]
        label, rest = np.divmod(candidates, height * width)
        y, x = np.divmod(rest, width)
        cx = (x + offset[b, 0, y, x]) * stride
        cy = (y + offset[b, 1, y, x]) * stride
        w, h = size[b, 0, y, x] * stride, size[b, 1, y, x] * stride
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
        results.append(Detections(boxes.reshape(-1, 4), flat[candidates].astype(np.float32), label.astype(np.int64)))
    return results


# ------------------------------------------------------------------------------------------------------ checkpoint
@dataclass
class DetectorCheckpoint(PreprocessFields):
    """A detector and everything needed to use it: saved and loaded by :mod:`leukolens.models.checkpoint`."""

    kind: ClassVar[str] = "detector"

    config: DetectorConfig
    state_dict: dict[str, torch.Tensor]
    preprocess: Preprocess  # fields letterboxed to input_size, normalised, stain-normalised first when it says so
    score_threshold: float = 0.3  # detections at or above this count as cells (counts, analyze)
    metrics: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # optimiser state etc. for --resume

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    # The fields before the preprocessing record, as properties (input_size: the longer side of a field; mean,
    # std: from PreprocessFields)
    @property
    def stain(self) -> dict:
        """The stain reference applied to every field first, in its stored form (empty: none)."""
        return stored_stain(self.preprocess.stain) or {}

    def build(self) -> CenterNet:
        """The network with these weights, in eval mode."""
        return with_weights(CenterNet(self.config, pretrained=False), self.state_dict)

    def to_envelope(self) -> dict:
        return envelope_sections(self, {"score_threshold": self.score_threshold})

    @classmethod
    def from_envelope(cls, envelope: dict) -> DetectorCheckpoint:
        return cls(
            config=DetectorConfig.from_dict(envelope["config"]),
            state_dict=envelope["state_dict"],
            preprocess=Preprocess.from_dict(envelope["preprocess"]),
            score_threshold=float(envelope["inference"]["score_threshold"]),
            **records(envelope),
        )


def checkpoint_from_model(
    model: CenterNet, *, input_size: int = 512, stain: dict | None = None, **kwargs
) -> DetectorCheckpoint:
    """A checkpoint of ``model`` for fields letterboxed to ``input_size``, normalised as its backbone expects.

    Args:
        stain: the stored stain reference every field is normalised to (``{"method", "reference"}``; empty: none).
        kwargs: the other :class:`DetectorCheckpoint` fields (score_threshold, metrics, train, extra).
    """
    spec = SPECS[model.config.backbone]
    preprocess = Preprocess.for_fields(
        input_size, mean=spec.mean, std=spec.std, stain=StainReference.from_dict(stain or {})
    )
    return DetectorCheckpoint(model.config, model.state_dict(), preprocess, **kwargs)


def save_detector(checkpoint: DetectorCheckpoint, path: str | Path, *, half: bool = True) -> Path:
    """Write atomically; float weights in float16 when ``half`` (the shipped file stays small)."""
    return save_checkpoint(checkpoint, path, half=half)


def load_detector(path: str | Path) -> DetectorCheckpoint:
    """``load_checkpoint(path, kind="detector")``.

    Raises:
        LeukolensError: missing, unreadable, not a leukolens detector, or another format version.
    """
    return load_checkpoint(path, kind="detector")
