"""Symmetric contrastive loss (CLIP's InfoNCE) with several positives per row.

Many cells share a sentence (every eosinophil is "an eosinophil"; a partial sentence is true of every cell that
agrees with it), so a batch's positive matrix is not the identity. Treating a duplicate as a negative would push
apart what is the same; instead each row's target is the uniform distribution over its positives (the
multi-positive InfoNCE of SupCon, Khosla et al. 2020, applied in both directions as in CLIP).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_targets(positive: torch.Tensor) -> torch.Tensor:
    """Each row of a boolean positive matrix as a distribution over its positives; rows without any are all 0."""
    positive = positive.float()
    return positive / positive.sum(dim=1, keepdim=True).clamp(min=1.0)


def multi_positive_cross_entropy(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Mean over rows that have a positive of the cross-entropy between softmax(logits) and the uniform
    distribution over that row's positives."""
    has_positive = positive.any(dim=1)
    if not has_positive.any():
        return logits.sum() * 0.0  # keeps the graph; nothing to learn from this batch
    targets = soft_targets(positive[has_positive])
    return -(targets * F.log_softmax(logits[has_positive], dim=1)).sum(dim=1).mean()


def contrastive_loss(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    positive: torch.Tensor,
    logit_scale: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Named parts of the symmetric loss and their mean ``total``.

    Args:
        image_embeddings: L2-normalised ``[images, dim]``.
        text_embeddings: L2-normalised ``[texts, dim]``.
        positive: boolean ``[images, texts]``, True where the text is true of the image.
        logit_scale: the learned log inverse temperature (a scalar; ``exp`` of it multiplies the cosines).
    """
    logits = logit_scale.exp() * image_embeddings @ text_embeddings.T  # [images, texts]
    image_to_text = multi_positive_cross_entropy(logits, positive)
    text_to_image = multi_positive_cross_entropy(logits.T, positive.T)
    return {
        "image_to_text": image_to_text,
        "text_to_image": text_to_image,
        "total": (image_to_text + text_to_image) / 2,
    }
