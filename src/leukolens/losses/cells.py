"""The cell model's loss: class cross-entropy plus one cross-entropy per attribute head."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leukolens.data.cells import IGNORE
from leukolens.models.cellnet import CellOutput


def cell_loss(
    output: CellOutput,
    labels: torch.Tensor,
    attribute_targets: torch.Tensor,
    attribute_names: tuple[str, ...],
    *,
    label_smoothing: float = 0.0,
    attribute_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Named loss parts and their weighted ``total``.

    Args:
        labels: class indices ``[batch]``.
        attribute_targets: value codes ``[batch, attributes]``; :data:`IGNORE` where not applicable, unknown or not
            annotated, so that head learns nothing from that cell.
    """
    parts = {"class": F.cross_entropy(output.class_logits, labels, label_smoothing=label_smoothing)}
    attribute_losses = []
    for i, name in enumerate(attribute_names):
        targets = attribute_targets[:, i]  # [batch]
        if (targets != IGNORE).any():
            loss = F.cross_entropy(
                output.attribute_logits[name], targets, ignore_index=IGNORE, label_smoothing=label_smoothing
            )
            parts[f"attribute/{name}"] = loss
            attribute_losses.append(loss)
    parts["attributes"] = (
        torch.stack(attribute_losses).mean() if attribute_losses else labels.new_zeros((), dtype=torch.float)
    )
    parts["total"] = parts["class"] + attribute_weight * parts["attributes"]
    return parts
