"""Self-training of the cell model on unlabelled white cells of other microscopes.

Typed cells come from a few microscopes; boxed but untyped white cells come from more (TXL-PBC's Raabin-WBC and
BCDD fields). A teacher, the exponential moving average of the model (:class:`leukolens.train.ema.ModelEMA`), types
each unlabelled cell as it would at prediction time (the crop as it is); where it is confident, that type is the
target for the model on a strongly augmented view of the same cell (FixMatch, Sohn et al. 2020, with a mean teacher,
Tarvainen and Valpola 2017). The model thus learns to type cells of those microscopes the way it types the
microscopes it has labels for, whatever the colour and blur: the augmentation is the training augmentation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from leukolens.data.augment import AugmentConfig, augment, to_input
from leukolens.models.cellnet import CellNet


@dataclass
class UnlabelledBatch:
    plain: torch.Tensor  # [batch, 3, input, input]: the teacher's view, as at prediction time
    strong: torch.Tensor  # the same cells under the training augmentation: the model's view


def unlabelled_batches(
    crops: np.ndarray,
    augment_config: AugmentConfig,
    *,
    input_size: int,
    margin: float,
    batch_size: int,
    rng: np.random.Generator,
    generator: torch.Generator,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> Iterator[UnlabelledBatch]:
    """Endless batches of the cached unlabelled ``crops`` ``[n, s, s, 3]``, reshuffled on every pass."""
    batch_size = min(batch_size, len(crops))
    while True:
        order = rng.permutation(len(crops))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chosen = torch.from_numpy(crops[order[start : start + batch_size]])
            yield UnlabelledBatch(
                to_input(chosen, input_size, mean, std, margin=margin).contiguous(memory_format=torch.channels_last),
                augment(chosen, augment_config, input_size, mean, std, generator).contiguous(
                    memory_format=torch.channels_last
                ),
            )


def pseudo_label_loss(
    model: CellNet, teacher: CellNet, batch: UnlabelledBatch, *, threshold: float
) -> dict[str, torch.Tensor]:
    """The model's cross-entropy against the teacher's confident types (``pseudo``), averaged over the whole batch
    so that a batch with few confident cells weighs little; and the share of cells confident enough
    (``pseudo_share``)."""
    with torch.no_grad():
        confidence, targets = teacher(batch.plain).class_logits.softmax(dim=1).max(dim=1)
    kept = (confidence >= threshold).float()
    logits = model(batch.strong).class_logits
    loss = (F.cross_entropy(logits, targets, reduction="none") * kept).sum() / len(targets)
    return {"pseudo": loss, "pseudo_share": kept.mean()}
