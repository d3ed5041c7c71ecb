"""GAN checkpoints: the EMA generator with what sampling needs, and the full training state for ``--resume``.

A generator checkpoint (``generator.pt``) holds the network config (classes, attribute vocabulary, sizes), the crop
settings its training crops were cut with (so real cells can be cut the same way for comparison), the attribute
combinations seen per class in training (the sampler draws from them, so a generated cell never carries an attribute
combination no real cell of its class had), and the training record (data, reduction, steps, minutes). Weights are
float16. The training state (``last.pt``) holds both networks, the EMA copy and the optimisers in float32. Both are
saved and loaded by :mod:`leukolens.models.checkpoint` (kinds ``gan`` and ``gan-training``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from leukolens.data.cells import CropConfig
from leukolens.io.common import LeukolensError
from leukolens.models.checkpoint import envelope_sections, load_checkpoint, save_checkpoint, with_weights
from leukolens.models.gan import UNKNOWN_CODE, GanConfig, GanModels, Generator
from leukolens.models.preprocess import Preprocess


def generator_preprocess(image_size: int, crop_mode: str, context: float) -> Preprocess:
    """The crops a GAN learns from (and real cells are cut like for comparison): ``image_size`` px, no margin, pixels
    scaled to -1..1 (mean and std 0.5)."""
    crop = CropConfig(input_size=image_size, context=float(context), cache_margin=1.0, mode=crop_mode)
    return Preprocess.for_crops(crop, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@dataclass
class GanCheckpoint:
    """The EMA generator and what sampling needs: saved and loaded by :mod:`leukolens.models.checkpoint`."""

    kind: ClassVar[str] = "gan"

    config: GanConfig
    state_dict: dict[str, torch.Tensor]  # the EMA generator's
    crop_mode: str  # "image" (whole single-cell images) or "box" (windows around boxes)
    context: float  # the window side as a multiple of the box's longer side
    attribute_pool: list[dict] = field(default_factory=list)  # per class: {"codes": [[...]], "counts": [...]}
    train: dict = field(default_factory=dict)

    @property
    def preprocess(self) -> Preprocess:
        return generator_preprocess(self.config.image_size, self.crop_mode, self.context)

    def build(self) -> Generator:
        """The generator with these weights, in eval mode."""
        return with_weights(Generator(self.config), self.state_dict)

    def to_envelope(self) -> dict:
        # the preprocessing holds crop_mode and context
        return envelope_sections(self, {"attribute_pool": self.attribute_pool})

    @classmethod
    def from_envelope(cls, envelope: dict) -> GanCheckpoint:
        crop = Preprocess.from_dict(envelope["preprocess"]).crop
        return cls(
            config=GanConfig.from_dict(envelope["config"]),
            state_dict=envelope["state_dict"],
            crop_mode=crop.mode,
            context=float(crop.context),
            attribute_pool=envelope["inference"].get("attribute_pool") or [],
            train=envelope.get("train") or {},
        )


@dataclass
class GanTrainingState:
    """Both networks, the EMA copy and the optimisers (in ``extra``), for ``--resume``."""

    kind: ClassVar[str] = "gan-training"

    config: GanConfig
    state_dict: dict[str, torch.Tensor]  # of :class:`GanModels`
    extra: dict = field(default_factory=dict)  # optimisers, step, history

    def to_envelope(self) -> dict:
        return envelope_sections(self, {})

    @classmethod
    def from_envelope(cls, envelope: dict) -> GanTrainingState:
        return cls(GanConfig.from_dict(envelope["config"]), envelope["state_dict"], envelope.get("extra") or {})


def attribute_pool(labels: np.ndarray, attributes: np.ndarray, num_classes: int) -> list[dict]:
    """The attribute code combinations of each class's training cells, with how often each occurs."""
    pool = []
    for index in range(num_classes):
        rows = attributes[labels == index]
        if rows.size == 0:
            pool.append({"codes": [], "counts": []})
            continue
        unique, counts = np.unique(rows, axis=0, return_counts=True)
        pool.append({"codes": unique.astype(int).tolist(), "counts": counts.astype(int).tolist()})
    return pool


def conditions_for(
    pool: list[dict], class_index: int, n: int, config: GanConfig, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class labels ``[n]`` and attribute codes ``[n, attributes]`` (None for a GAN without attributes) for
    ``n`` cells of one class, the codes drawn from the class's training combinations by frequency."""
    labels = torch.full((n,), class_index, dtype=torch.long)
    if not config.attributes:
        return labels, None
    entry = pool[class_index] if class_index < len(pool) else {"codes": []}
    if not entry["codes"]:
        return labels, torch.full((n, len(config.attributes)), UNKNOWN_CODE, dtype=torch.long)
    rng = np.random.default_rng(seed)
    counts = np.asarray(entry["counts"], dtype=float)
    chosen = rng.choice(len(counts), size=n, p=counts / counts.sum())
    return labels, torch.tensor(np.asarray(entry["codes"])[chosen], dtype=torch.long).view(n, -1)


def save_gan(checkpoint: GanCheckpoint, path: str | Path) -> Path:
    return save_checkpoint(checkpoint, path, half=True)


def load_gan(path: str | Path) -> GanCheckpoint:
    """``load_checkpoint(path, kind="gan")``.

    Raises:
        LeukolensError: missing, unreadable, not a leukolens GAN generator, or another format version.
    """
    return load_checkpoint(path, kind="gan")


def save_training_state(models: GanModels, path: str | Path, *, extra: dict) -> Path:
    return save_checkpoint(GanTrainingState(models.config, models.state_dict(), extra), path, half=False)


def load_training_state(path: str | Path) -> tuple[GanConfig, dict[str, torch.Tensor], dict]:
    """Config, state dict of :class:`GanModels`, and the extra record (optimisers, step, history)."""
    state = load_checkpoint(path, kind="gan-training")
    return state.config, state.state_dict, state.extra


def class_index(config: GanConfig, name: str) -> int:
    """A class's index, with a clear error naming the classes the GAN knows."""
    if name not in config.classes:
        raise LeukolensError(f"the GAN has no class {name!r}; it knows {', '.join(config.classes)}")
    return config.classes.index(name)
