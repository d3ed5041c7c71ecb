"""GAN checkpoints: the EMA generator with what sampling needs, and the full training state for ``--resume``.

A generator checkpoint (``generator.pt``) holds the network config (classes, attribute vocabulary, sizes), the crop
settings its training crops were cut with (so real cells can be cut the same way for comparison), the attribute
combinations seen per class in training (the sampler draws from them, so a generated cell never carries an attribute
combination no real cell of its class had), and the training record (data, reduction, steps, minutes). Weights are
float16. The training state (``last.pt``) holds both networks, the EMA copy and the optimisers in float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from leukolens.io.common import LeukolensError
from leukolens.models.gan import UNKNOWN_CODE, GanConfig, GanModels, Generator
from leukolens.models.serialize import read_payload, write_payload

FORMAT = "leukolens-gan/1"
STATE_FORMAT = "leukolens-gan-state/1"


@dataclass
class GanCheckpoint:
    config: GanConfig
    state_dict: dict[str, torch.Tensor]  # the EMA generator's
    crop_mode: str  # "image" (whole single-cell images) or "box" (windows around boxes)
    context: float  # the window side as a multiple of the box's longer side
    attribute_pool: list[dict] = field(default_factory=list)  # per class: {"codes": [[...]], "counts": [...]}
    train: dict = field(default_factory=dict)

    def build(self) -> Generator:
        """The generator with these weights, in eval mode."""
        generator = Generator(self.config)
        generator.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in self.state_dict.items()})
        return generator.eval()


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
    payload = {
        "format": FORMAT,
        "config": checkpoint.config.as_dict(),
        "crop_mode": checkpoint.crop_mode,
        "context": checkpoint.context,
        "attribute_pool": checkpoint.attribute_pool,
        "train": checkpoint.train,
    }
    return write_payload(path, payload, checkpoint.state_dict, half=True)


def load_gan(path: str | Path) -> GanCheckpoint:
    """Read a generator written by :func:`save_gan`.

    Raises:
        LeukolensError: missing, unreadable, or not a leukolens GAN generator.
    """
    payload = read_payload(
        path, format=FORMAT, missing="GAN generator not found (train one with `leukolens train gan`)", kind="GAN"
    )
    return GanCheckpoint(
        config=GanConfig.from_dict(payload["config"]),
        state_dict=payload["state_dict"],
        crop_mode=payload["crop_mode"],
        context=float(payload["context"]),
        attribute_pool=payload.get("attribute_pool") or [],
        train=payload.get("train") or {},
    )


def save_training_state(models: GanModels, path: str | Path, *, extra: dict) -> Path:
    payload = {"format": STATE_FORMAT, "config": models.config.as_dict(), "extra": extra}
    return write_payload(path, payload, models.state_dict(), half=False)


def load_training_state(path: str | Path) -> tuple[GanConfig, dict[str, torch.Tensor], dict]:
    """Config, state dict of :class:`GanModels`, and the extra record (optimisers, step, history)."""
    payload = read_payload(path, format=STATE_FORMAT, missing="no GAN training state to resume", kind="GAN state")
    return GanConfig.from_dict(payload["config"]), payload["state_dict"], payload.get("extra") or {}


def class_index(config: GanConfig, name: str) -> int:
    """A class's index, with a clear error naming the classes the GAN knows."""
    if name not in config.classes:
        raise LeukolensError(f"the GAN has no class {name!r}; it knows {', '.join(config.classes)}")
    return config.classes.index(name)
