"""GAN checkpoints: the EMA generator with what sampling needs, and the full training state for ``--resume``.

A generator checkpoint (``generator.pt``) holds the network config (classes, attribute vocabulary, sizes), the crop
settings its training crops were cut with (so real cells can be cut the same way for comparison), the attribute
combinations seen per class in training (the sampler draws from them, so a generated cell never carries an attribute
combination no real cell of its class had), and the training record (data, reduction, steps, minutes). Weights are
float16. The training state (``last.pt``) holds both networks, the EMA copy and the optimisers in float32. Both are
saved and loaded by :mod:`leukolens.models.checkpoint` (kinds ``gan`` and ``gan-training``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import torch

from leukolens.data.cells import CropConfig
from leukolens.io.common import LeukolensError
from leukolens.models.checkpoint import envelope_sections, load_checkpoint, save_checkpoint, with_weights
from leukolens.models.gan import UNKNOWN_CODE, GanConfig, GanModels, Generator, sample_images
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


# ------------------------------------------------------------------------------------------------------ judged
class CellJudge(Protocol):
    """What reads generated cells for :func:`sample_accepted`: the cell model (``eval.gan.Judge``) or a probe."""

    def class_probabilities(self, crops: np.ndarray) -> np.ndarray:
        """Class probabilities ``[n, classes]`` of ``uint8`` crops ``[n, s, s, 3]``."""


@dataclass
class AcceptedCells:
    """Generated cells of one class that the judge accepted, and how many were drawn to get them."""

    crops: np.ndarray  # [accepted, size, size, 3] uint8
    labels: np.ndarray  # [accepted]
    codes: np.ndarray | None  # [accepted, attributes], None for a GAN without attributes
    probabilities: np.ndarray  # [accepted]: the judge's probability of the class asked for
    drawn: int  # cells drawn up to and including the last one accepted
    accepted: int

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drawn if self.drawn else 0.0


MAX_DRAWS_PER_CELL = 50  # default: a class stops after this many draws per cell wanted
ROUND_LIMIT = 512  # most cells drawn in one round: bounds memory when the judge's input is large


def round_seeds(seed: int, class_index: int, round_index: int) -> tuple[int, int]:
    """Seeds for one round's conditions and latents, derived from ``seed`` so that a run is reproducible."""
    conditions, latents = np.random.SeedSequence([seed % 2**63, class_index, round_index]).generate_state(2)
    return int(conditions), int(latents)


def sample_accepted(
    generator: Generator,
    attribute_pool: list[dict],
    class_index: int,
    n: int,
    config: GanConfig,
    *,
    judge: CellJudge,
    min_confidence: float,
    seed: int = 0,
    max_draws: int,
    truncation: float = 0.0,
) -> AcceptedCells:
    """Up to ``n`` generated cells of one class that the judge assigns to that class (its most probable class) with
    probability at least ``min_confidence``, drawn in rounds until ``n`` are accepted or ``max_draws`` are drawn.

    Each round's conditions and latents come from seeds derived from ``seed``, the class and the round, and the
    round sizes only from what was accepted before, so the same arguments give the same cells. ``drawn`` counts the
    cells up to the ``n``-th accepted one (the rest of the last round is not looked at), so ``accepted / drawn`` is
    the acceptance rate.

    Raises:
        LeukolensError: ``min_confidence`` outside 0..1 or ``max_draws`` below 1.
    """
    if not 0 <= min_confidence <= 1:
        raise LeukolensError(f"the minimum confidence must be between 0 and 1, got {min_confidence}")
    if max_draws < 1:
        raise LeukolensError(f"the most cells to draw must be at least 1, got {max_draws}")
    size = config.image_size
    crops, labels, codes, probabilities = [], [], [], []
    drawn = accepted = round_index = 0
    while accepted < n and drawn < max_draws:
        needed = n - accepted
        # The first round draws what is needed; later ones what the rate so far says is needed, with a fifth more;
        # at least 32, so that a low rate does not mean many small rounds.
        wanted = needed if drawn == 0 else math.ceil(needed * drawn / max(accepted, 1) * 1.2)
        count = min(max(wanted, 32), ROUND_LIMIT, max_draws - drawn)
        condition_seed, latent_seed = round_seeds(seed, class_index, round_index)
        round_labels, round_codes = conditions_for(attribute_pool, class_index, count, config, seed=condition_seed)
        images = sample_images(generator, round_labels, round_codes, seed=latent_seed, truncation=truncation).numpy()
        probability = judge.class_probabilities(images)  # [count, classes]
        confident = probability[:, class_index] >= min_confidence
        passed = np.flatnonzero((probability.argmax(1) == class_index) & confident)
        if len(passed) >= needed:
            passed = passed[:needed]
            drawn += int(passed[-1]) + 1
        else:
            drawn += count
        accepted += len(passed)
        crops.append(images[passed])
        labels.append(round_labels.numpy()[passed])
        if round_codes is not None:
            codes.append(round_codes.numpy()[passed])
        probabilities.append(probability[passed, class_index])
        round_index += 1
    if not crops:  # n < 1: nothing drawn
        crops, labels, probabilities = [np.zeros((0, size, size, 3), np.uint8)], [np.zeros(0, np.int64)], [np.zeros(0)]
        codes = [np.zeros((0, len(config.attributes)), np.int64)] if config.attributes else []
    return AcceptedCells(np.concatenate(crops), np.concatenate(labels), np.concatenate(codes) if codes else None,
                         np.concatenate(probabilities), drawn, accepted)



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
