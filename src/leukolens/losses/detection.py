"""CenterNet's losses and the targets they compare against, kept outside the model.

- Targets (:func:`centernet_targets`): per class, a heatmap with an elliptical Gaussian at each box centre whose
  spread follows the box (TTFNet's choice, sigma = 0.54 * side / 6, which suits cells of different sizes better than
  one radius per box); and at each centre cell the box size and the sub-cell offset.
- Loss (:func:`detection_loss`): the penalty-reduced pixel-wise focal loss on the heatmap, normalised by the number
  of boxes; L1 on size and offset at the centre cells only. A field with no boxes gives zero size and offset loss,
  and a heatmap loss that only pushes every score down. Parts of the heatmap can be left out: a class channel a data
  set labels by another convention (``taught``), and everything outside the annotated regions of a sparsely
  annotated field (``annotated``), where an unlabelled cell is not a negative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from leukolens.models.detector import DetectorOutput

GAUSSIAN_ALPHA = 0.54


@dataclass
class DetectionTargets:
    heatmap: torch.Tensor  # [batch, classes, h, w] in [0, 1], 1 at each centre cell
    index: torch.Tensor  # [batch, max_boxes] flat index y * w + x of each centre cell
    size: torch.Tensor  # [batch, max_boxes, 2] box width, height in output cells
    offset: torch.Tensor  # [batch, max_boxes, 2] centre minus its cell's corner, in cells
    mask: torch.Tensor  # [batch, max_boxes] 1 for a real box, 0 for padding


def _draw_gaussian(heatmap: np.ndarray, cx: int, cy: int, sigma_x: float, sigma_y: float) -> None:
    """Max-merge an elliptical Gaussian peaking at 1 on cell (cx, cy) into ``heatmap`` [h, w]."""
    height, width = heatmap.shape
    rx, ry = max(1, int(3 * sigma_x)), max(1, int(3 * sigma_y))
    x0, x1 = max(0, cx - rx), min(width, cx + rx + 1)
    y0, y1 = max(0, cy - ry), min(height, cy + ry + 1)
    xs = np.arange(x0, x1) - cx
    ys = np.arange(y0, y1) - cy
    blob = np.exp(-(xs[None, :] ** 2) / (2 * sigma_x**2) - (ys[:, None] ** 2) / (2 * sigma_y**2))
    np.maximum(heatmap[y0:y1, x0:x1], blob, out=heatmap[y0:y1, x0:x1])


def centernet_targets(
    boxes: list[np.ndarray],
    labels: list[np.ndarray],
    *,
    num_classes: int,
    output_size: tuple[int, int],
    stride: int,
) -> DetectionTargets:
    """Targets for a batch: ``boxes[i]`` ``[n_i, 4]`` xyxy in input pixels, ``labels[i]`` ``[n_i]``.

    Args:
        output_size: (h, w) of the network's output.
    """
    batch = len(boxes)
    height, width = output_size
    max_boxes = max([len(b) for b in boxes] + [1])
    heatmap = np.zeros((batch, num_classes, height, width), np.float32)
    index = np.zeros((batch, max_boxes), np.int64)
    size = np.zeros((batch, max_boxes, 2), np.float32)
    offset = np.zeros((batch, max_boxes, 2), np.float32)
    mask = np.zeros((batch, max_boxes), np.float32)
    for b, (field_boxes, field_labels) in enumerate(zip(boxes, labels)):
        scaled = np.asarray(field_boxes, np.float32).reshape(-1, 4) / stride
        # Larger boxes first, so a small cell's peak drawn later is not overwritten at a shared centre cell.
        order = np.argsort(-(scaled[:, 2] - scaled[:, 0]) * (scaled[:, 3] - scaled[:, 1]), kind="stable")
        for slot, k in enumerate(order):
            x1, y1, x2, y2 = scaled[k]
            w, h = x2 - x1, y2 - y1
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            ix, iy = min(int(cx), width - 1), min(int(cy), height - 1)
            _draw_gaussian(
                heatmap[b, int(field_labels[k])],
                ix,
                iy,
                max(GAUSSIAN_ALPHA * w / 6, 0.5),
                max(GAUSSIAN_ALPHA * h / 6, 0.5),
            )
            heatmap[b, int(field_labels[k]), iy, ix] = 1.0
            index[b, slot] = iy * width + ix
            size[b, slot] = (w, h)
            offset[b, slot] = (cx - ix, cy - iy)
            mask[b, slot] = 1.0
    return DetectionTargets(
        torch.from_numpy(heatmap),
        torch.from_numpy(index),
        torch.from_numpy(size),
        torch.from_numpy(offset),
        torch.from_numpy(mask),
    )


def annotated_mask(regions: list[np.ndarray | None], *, output_size: tuple[int, int], stride: int) -> torch.Tensor:
    """``[batch, 1, h, w]``: 1 on output cells inside an annotated region (every cell of a fully annotated field,
    ``None``), 0 elsewhere: outside the regions of a sparsely annotated field, unlabelled cells are not negatives."""
    height, width = output_size
    mask = np.zeros((len(regions), 1, height, width), np.float32)
    for b, field_regions in enumerate(regions):
        if field_regions is None:
            mask[b] = 1
            continue
        for x1, y1, x2, y2 in np.asarray(field_regions, np.float32).reshape(-1, 4) / stride:
            mask[b, 0, int(np.floor(y1)) : int(np.ceil(y2)), int(np.floor(x1)) : int(np.ceil(x2))] = 1
    return torch.from_numpy(mask)


def focal_heatmap_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    taught: torch.Tensor | None = None,
    annotated: torch.Tensor | None = None,
    alpha: float = 2.0,
    beta: float = 4.0,
):
    """CenterNet's penalty-reduced focal loss, summed; divide by the number of boxes.

    Args:
        taught: ``[batch, classes]`` 1 where the field teaches the class, 0 where that channel is ignored.
        annotated: ``[batch, 1, h, w]`` 1 where the field is annotated (:func:`annotated_mask`), 0 where ignored.
    """
    probability = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1).float()
    log_p = F.logsigmoid(logits).clamp(min=np.log(1e-4))
    log_not_p = F.logsigmoid(-logits).clamp(min=np.log(1e-4))
    positive_loss = -((1 - probability) ** alpha) * log_p * positive
    negative_loss = -((1 - target) ** beta) * probability**alpha * log_not_p * (1 - positive)
    loss = positive_loss + negative_loss  # [batch, classes, h, w]
    if taught is not None:
        loss = loss * taught[:, :, None, None]
    if annotated is not None:
        loss = loss * annotated
    return loss.sum()


def _gather(feature: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Values of ``feature`` [batch, c, h, w] at flat cells ``index`` [batch, k] -> [batch, k, c]."""
    batch, channels = feature.shape[:2]
    flat = feature.view(batch, channels, -1)
    return flat.gather(2, index.unsqueeze(1).expand(-1, channels, -1)).permute(0, 2, 1)


def detection_loss(
    output: DetectorOutput,
    targets: DetectionTargets,
    *,
    size_weight: float = 0.1,
    offset_weight: float = 1.0,
    taught: torch.Tensor | None = None,
    annotated: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Named loss parts and their weighted ``total``; ``taught`` and ``annotated`` as in :func:`focal_heatmap_loss`."""
    boxes = targets.mask.sum()
    normaliser = boxes.clamp(min=1.0)
    heatmap = focal_heatmap_loss(output.heatmap, targets.heatmap, taught=taught, annotated=annotated) / normaliser
    mask = targets.mask.unsqueeze(-1)  # [batch, k, 1]
    size = (F.l1_loss(_gather(output.size, targets.index), targets.size, reduction="none") * mask).sum() / normaliser
    offset = (
        F.l1_loss(_gather(output.offset, targets.index), targets.offset, reduction="none") * mask
    ).sum() / normaliser
    total = heatmap + size_weight * size + offset_weight * offset
    return {"total": total, "heatmap": heatmap, "size": size, "offset": offset}
