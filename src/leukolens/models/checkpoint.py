"""Checkpoints that carry everything needed to use the weights: preprocessing travels with them.

A cell-model checkpoint holds the network config (backbone, classes, attribute heads), the crop config, the input
normalisation, the stain reference (if any), the attribute schema's name, the fitted atypicality scorer, the
metrics it reached, and the training config. Weights are stored in float16 (halving the file) and loaded back as
float32. Files are written atomically.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from leukolens.data.cells import CropConfig
from leukolens.models.backbones import SPECS
from leukolens.models.cellnet import CellNet, CellNetConfig
from leukolens.models.serialize import read_payload, write_payload

FORMAT = "leukolens-cellnet/1"


@dataclass
class CellCheckpoint:
    """A cell model and what it needs to be used."""

    config: CellNetConfig
    crop: CropConfig
    state_dict: dict[str, torch.Tensor]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    schema: str | None = None
    stain: dict | None = None  # {"method": "reinhard" | "macenko", "reference": {...}}
    # The training cells' own colour statistics (Reinhard), whatever ``stain`` is: lets a user match images from
    # another microscope or stain to what the model was trained on (``Predictor(match_stain=True)``).
    training_stain: dict | None = None
    atypicality: dict | None = None
    metrics: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # e.g. optimizer state for --resume

    def build(self) -> CellNet:
        """The network with these weights, in eval mode."""
        model = CellNet(self.config, pretrained=False)
        state = {k: v.float() if v.is_floating_point() else v for k, v in self.state_dict.items()}
        state.setdefault("temperatures", model.temperatures)  # checkpoints from before calibration existed
        model.load_state_dict(state)
        return model.eval()


def from_model(model: CellNet, crop: CropConfig, **kwargs) -> CellCheckpoint:
    spec = SPECS[model.config.backbone]
    return CellCheckpoint(model.config, crop, model.state_dict(), spec.mean, spec.std, **kwargs)


def save_checkpoint(checkpoint: CellCheckpoint, path: str | Path, *, half: bool = True) -> Path:
    payload = {
        "format": FORMAT,
        "config": checkpoint.config.as_dict(),
        "crop": asdict(checkpoint.crop),
        "mean": list(checkpoint.mean),
        "std": list(checkpoint.std),
        "schema": checkpoint.schema,
        "stain": checkpoint.stain,
        "training_stain": checkpoint.training_stain,
        "atypicality": checkpoint.atypicality,
        "metrics": checkpoint.metrics,
        "train": checkpoint.train,
        "extra": checkpoint.extra,
    }
    return write_payload(path, payload, checkpoint.state_dict, half=half)


def load_checkpoint(path: str | Path) -> CellCheckpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        LeukolensError: missing, unreadable, or not a leukolens cell model.
    """
    payload = read_payload(path, format=FORMAT, missing="checkpoint not found", kind="cell-model")
    return CellCheckpoint(
        config=CellNetConfig.from_dict(payload["config"]),
        crop=CropConfig(**payload["crop"]),
        state_dict=payload["state_dict"],
        mean=tuple(payload["mean"]),
        std=tuple(payload["std"]),
        schema=payload.get("schema"),
        stain=payload.get("stain"),
        training_stain=payload.get("training_stain"),
        atypicality=payload.get("atypicality"),
        metrics=payload.get("metrics") or {},
        train=payload.get("train") or {},
        extra=payload.get("extra") or {},
    )
