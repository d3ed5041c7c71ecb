"""Pseudo-labels for sparsely annotated fields: a teacher's confident cells outside the annotated region.

Outside a field's annotated region the heatmap loss is masked (an unlabelled cell there is not a negative), so on
its own the detector learns nothing from most of a sparsely annotated field. A slowly updated copy of the detector
(the teacher, an exponential moving average of the student's weights, :class:`~leukolens.train.ema.ModelEMA`) looks
at the same training window; its peaks that are

- above a confidence ``threshold``,
- outside the annotated region (inside, the real labels rule),
- optionally of low class entropy (the teacher is sure *which* cell it is: ``max_entropy``), and
- optionally close to their class prototype (cosine similarity of the neck feature at the peak to a running mean of
  the features at labelled cells of that class: ``min_prototype_similarity``),

become extra targets, trained with a down-weighted loss (``weight``) on the heatmap around each pseudo-label and
on its size and offset. Everywhere else outside the region the heatmap stays masked: a cell the teacher missed is
still not taught as background. The filters follow the ideas of the LLD paper for sparse labels (confidence and
entropy thresholds, a down-weighted pseudo-label loss, a prototype similarity term); each is an option whose
effect is measured in ``benchmarks/sparse.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from leukolens.losses.detection import DetectionTargets, centernet_targets, detection_loss
from leukolens.models.detector import DetectorOutput


@dataclass(frozen=True)
class PseudoLabelConfig:
    """How pseudo-labels are made and weighted."""

    threshold: float = 0.5  # teacher peak probability for a pseudo-label
    weight: float = 0.5  # of the pseudo-label loss, relative to the real labels' loss
    momentum: float = 0.999  # of the teacher's moving average (warmed up: see ModelEMA)
    warmup_steps: int = 100  # no pseudo-labels before this step: the teacher first learns from the real labels
    max_entropy: float = 0.0  # nats; when > 0, drop peaks whose class distribution is more uncertain
    min_prototype_similarity: float = 0.0  # when > 0, drop peaks whose feature is less similar to the prototype
    prototype_momentum: float = 0.9
    min_size: float = 2.0  # input pixels: a peak whose box is thinner is no cell


@dataclass
class PseudoLabels:
    """Pseudo-labels of a batch: per image, boxes ``[n, 4]`` xyxy in input pixels, class indices ``[n]``."""

    boxes: list[np.ndarray]
    labels: list[np.ndarray]

    @property
    def count(self) -> int:
        return int(sum(len(b) for b in self.labels))


def class_entropy(heat: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the class distribution at every cell: heat ``[batch, classes, h, w]`` probabilities,
    normalised over classes -> ``[batch, h, w]``. 0 when one class holds all the mass; log(classes) when even."""
    share = heat / heat.sum(dim=1, keepdim=True).clamp(min=1e-8)
    return -(share * share.clamp(min=1e-8).log()).sum(dim=1)


def select_pseudo_labels(
    teacher: DetectorOutput,
    outside: torch.Tensor,
    *,
    stride: int,
    config: PseudoLabelConfig,
    taught: torch.Tensor | None = None,
    features: torch.Tensor | None = None,
    prototypes: torch.Tensor | None = None,
) -> PseudoLabels:
    """The teacher's confident peaks outside the annotated regions.

    Args:
        teacher: the teacher's outputs on the batch (heatmap logits).
        outside: ``[batch, 1, h, w]`` 1 on output cells outside every annotated region of a sparse field (0 on fully
            annotated fields: they need no pseudo-labels).
        taught: ``[batch, classes]`` 1 where the field teaches the class (pseudo-labels only for those).
        features, prototypes: the teacher's neck features ``[batch, c, h, w]`` and unit class prototypes
            ``[classes, c]``, for the prototype filter.
    """
    heat = torch.sigmoid(teacher.heatmap)  # [batch, classes, h, w]
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    keep = (peaks >= config.threshold) & (outside > 0)
    if taught is not None:
        keep &= taught[:, :, None, None] > 0
    if config.max_entropy > 0:
        keep &= (class_entropy(heat) <= config.max_entropy)[:, None]
    if config.min_prototype_similarity > 0 and features is not None and prototypes is not None:
        unit = F.normalize(features, dim=1)  # [batch, c, h, w]
        similarity = torch.einsum("bchw,kc->bkhw", unit, prototypes)  # [batch, classes, h, w]
        keep &= similarity >= config.min_prototype_similarity
    boxes, labels = [], []
    size, offset = teacher.size, teacher.offset
    for b in range(heat.shape[0]):
        label, y, x = (t.numpy() for t in torch.nonzero(keep[b], as_tuple=True))
        cx = (x + offset[b, 0, y, x].numpy()) * stride
        cy = (y + offset[b, 1, y, x].numpy()) * stride
        w, h = size[b, 0, y, x].numpy() * stride, size[b, 1, y, x].numpy() * stride
        ok = (w >= config.min_size) & (h >= config.min_size)
        found = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).reshape(-1, 4)
        boxes.append(found[ok].astype(np.float32))
        labels.append(label[ok].astype(np.int64))
    return PseudoLabels(boxes, labels)


def update_prototypes(
    prototypes: torch.Tensor,
    features: torch.Tensor,
    boxes: list[np.ndarray],
    labels: list[np.ndarray],
    *,
    stride: int,
    momentum: float,
) -> torch.Tensor:
    """Running means (unit length) of the features ``[batch, c, h, w]`` at the centre cells of labelled boxes, per
    class ``[classes, c]``; a class with no prototype yet (all zeros) takes its first mean outright."""
    height, width = features.shape[-2:]
    out = prototypes.clone()
    for k in range(prototypes.shape[0]):
        picked = []
        for b, (field_boxes, field_labels) in enumerate(zip(boxes, labels)):
            for x1, y1, x2, y2 in np.asarray(field_boxes).reshape(-1, 4)[np.asarray(field_labels) == k]:
                ix = min(max(int((x1 + x2) / 2 / stride), 0), width - 1)
                iy = min(max(int((y1 + y2) / 2 / stride), 0), height - 1)
                picked.append(features[b, :, iy, ix])
        if not picked:
            continue
        mean = F.normalize(torch.stack(picked).mean(dim=0), dim=0)
        fresh = out[k].abs().sum() == 0
        out[k] = mean if fresh else F.normalize(momentum * out[k] + (1 - momentum) * mean, dim=0)
    return out


def pseudo_label_loss(
    output: DetectorOutput,
    pseudo: PseudoLabels,
    outside: torch.Tensor,
    *,
    stride: int,
    taught: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The detection loss of the student against the pseudo-labels, on the heatmap only around each pseudo-label
    (its Gaussian) and outside the annotated regions; normalised by the number of pseudo-labels."""
    targets: DetectionTargets = centernet_targets(
        pseudo.boxes,
        pseudo.labels,
        num_classes=output.heatmap.shape[1],
        output_size=tuple(output.heatmap.shape[-2:]),
        stride=stride,
    )
    support = (targets.heatmap > 0).float() * outside  # [batch, classes, h, w]
    if taught is not None:
        support = support * taught[:, :, None, None]
    return detection_loss(output, targets, annotated=support)
