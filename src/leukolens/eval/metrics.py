"""Pure metric functions: numpy arrays in, floats or arrays out, nothing fitted, nothing remembered.

Labels are integer class indices ``[samples]``. Conventions where metrics are ambiguous:

- Per-class averages skip classes with no samples, rather than counting them as 0 or 1: balanced accuracy averages
  recall over the classes present in ``y_true``; macro-F1 averages F1 over the classes present in ``y_true`` or
  ``y_pred`` (scikit-learn's ``f1_score(average="macro", labels=present)``).
- Empty inputs raise ``ValueError``: a metric of nothing is a bug upstream, not a number.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from leukolens.io.common import atomic_write_bytes


# ------------------------------------------------------------------------------------------------------ classification
def _labels(y_true, y_pred, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Both label arrays as 1-D integers of equal, non-zero length, and the number of classes."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise ValueError(f"labels must be two 1-D arrays of equal length, got {y_true.shape} and {y_pred.shape}")
    if len(y_true) == 0:
        raise ValueError("no samples to score")
    if not (np.issubdtype(y_true.dtype, np.integer) and np.issubdtype(y_pred.dtype, np.integer)):
        raise ValueError(f"labels must be integer class indices, got {y_true.dtype} and {y_pred.dtype}")
    largest = int(max(y_true.max(), y_pred.max()))
    if num_classes is None:
        num_classes = largest + 1
    if min(y_true.min(), y_pred.min()) < 0 or largest >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got values from "
                         f"{min(y_true.min(), y_pred.min())} to {largest}")
    return y_true, y_pred, num_classes


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts ``[num_classes, num_classes]``: row = true class, column = predicted class."""
    y_true, y_pred, num_classes = _labels(y_true, y_pred, num_classes)
    pairs = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return pairs.reshape(num_classes, num_classes)


def accuracy(y_true, y_pred) -> float:
    """Share of samples predicted correctly."""
    y_true, y_pred, _ = _labels(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def per_class_recall(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Recall of each class ``[num_classes]``; ``nan`` for classes with no sample in ``y_true``."""
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(matrix) / support, np.nan)


def balanced_accuracy(y_true, y_pred, *, num_classes: int | None = None) -> float:
    """Mean recall over the classes present in ``y_true``: each class weighs the same, however rare.

    Args:
        y_true: true class indices.
        y_pred: predicted class indices.
        num_classes: the size of the label vocabulary, checked against the labels; it does not change the value,
            because absent classes are skipped.
    """
    y_true, y_pred, num_classes = _labels(y_true, y_pred, num_classes)
    return float(np.nanmean(per_class_recall(y_true, y_pred, num_classes)))


def macro_f1(y_true, y_pred, *, num_classes: int | None = None) -> float:
    """Mean F1 over the classes present in ``y_true`` or ``y_pred``.

    F1 of a class is ``2 TP / (2 TP + FP + FN)``. A class that is predicted but never true scores 0 (all its
    predictions are false positives), and so does a class that is true but never predicted; a class absent from
    both is left out of the mean. This is scikit-learn's ``f1_score(average="macro", labels=present)``.
    """
    matrix = confusion_matrix(y_true, y_pred, _labels(y_true, y_pred, num_classes)[2])
    true_positive = np.diag(matrix)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    present = (predicted + actual) > 0
    f1 = 2 * true_positive[present] / (predicted[present] + actual[present])  # 2TP + FP + FN = predicted + actual
    return float(f1.mean())


def expected_calibration_error(probabilities: np.ndarray, y_true, *, bins: int = 15) -> float:
    """Top-label ECE (Guo et al. 2017): how far confidence is from accuracy, averaged over confidence bins.

    Each sample falls in one of ``bins`` equal-width bins by its top probability (bin ``b`` holds confidences in
    ``(b / bins, (b + 1) / bins]``, the first bin also 0); the ECE is the mean over bins of ``|accuracy - mean
    confidence|`` weighted by the share of samples in the bin.

    Args:
        probabilities: class probabilities ``[samples, classes]``.
        y_true: true class indices ``[samples]``.
        bins: number of confidence bins.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_true = np.asarray(y_true)
    if probabilities.ndim != 2 or len(probabilities) != len(y_true):
        raise ValueError(f"expected probabilities [samples, classes] and labels [samples], got "
                         f"{probabilities.shape} and {y_true.shape}")
    if len(y_true) == 0:
        raise ValueError("no samples to score")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    edges = np.linspace(0, 1, bins + 1)
    # Compare against the edges themselves (not floor(confidence * bins)) so that a confidence of exactly 0.7 falls
    # in the bin that ends at 0.7 despite rounding in 0.7 * bins.
    which = np.searchsorted(edges[1:-1], confidence, side="left")  # [samples], 0 .. bins - 1
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, correct, minlength=bins) - np.bincount(which, confidence, minlength=bins))
    return float(gap.sum() / count.sum())  # sum over bins of n_b/n * |acc_b - conf_b| = sum |hits_b - conf_sum_b| / n


# ------------------------------------------------------------------------------------------------------ ranking
def auroc(scores_negative, scores_positive) -> float:
    """Area under the ROC curve: the probability that a positive scores higher than a negative, ties counting half.

    Computed from ranks (the Mann-Whitney U statistic) in ``O(n log n)``.
    """
    negative = np.asarray(scores_negative, dtype=np.float64).ravel()
    positive = np.asarray(scores_positive, dtype=np.float64).ravel()
    if len(negative) == 0 or len(positive) == 0:
        raise ValueError(f"AUROC needs negatives and positives, got {len(negative)} and {len(positive)}")
    scores = np.concatenate([negative, positive])
    if np.isnan(scores).any():
        raise ValueError("scores contain nan")
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    # Tied scores share the mean of the ranks they span: that is what makes a tie count half.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat((starts + 1 + ends) / 2, ends - starts)  # 1-based ranks
    wins = ranks[len(negative) :].sum() - len(positive) * (len(positive) + 1) / 2
    return float(wins / (len(positive) * len(negative)))


def recall_at_k(similarity: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Share of queries with at least one relevant item among their ``k`` most similar items, for each ``k``.

    Queries with no relevant item at all are skipped; if none is left, every value is ``nan``. Items with equal
    similarity keep their column order (a stable sort), so ties are broken the same way on every run. A ``k``
    larger than the number of items counts every item.

    Args:
        similarity: ``[queries, items]``, higher is more similar.
        relevant: boolean ``[queries, items]``, True where the item is a correct answer to the query.
        ks: cut-offs to report.
    """
    similarity, relevant = np.asarray(similarity), np.asarray(relevant, dtype=bool)
    if similarity.ndim != 2 or similarity.shape != relevant.shape:
        raise ValueError(f"expected similarity and relevant of equal shape [queries, items], got "
                         f"{similarity.shape} and {relevant.shape}")
    if any(int(k) < 1 for k in ks):
        raise ValueError(f"cut-offs must be positive, got {list(ks)}")
    answerable = relevant.any(axis=1)
    similarity, relevant = similarity[answerable], relevant[answerable]
    if len(similarity) == 0:
        return {int(k): float("nan") for k in ks}
    order = np.argsort(-similarity, axis=1, kind="stable")  # [queries, items], most similar first
    ranked = np.take_along_axis(relevant, order, axis=1)
    first_hit = ranked.argmax(axis=1)  # [queries] 0-based rank of the best-ranked relevant item
    return {int(k): float(np.mean(first_hit < k)) for k in ks}


# ------------------------------------------------------------------------------------------------------ picture
_BLUES = np.array([[247, 251, 255], [107, 174, 214], [8, 48, 107]], dtype=np.float64)  # white -> mid -> dark blue
_LABEL_CHARACTERS = 24  # longer class names are cut with an ellipsis


def _shade(value: float) -> tuple[int, int, int]:
    """The colour of a row share in [0, 1]: pale for 0, dark blue for 1."""
    position = value * (len(_BLUES) - 1)
    low = min(int(position), len(_BLUES) - 2)
    colour = _BLUES[low] + (_BLUES[low + 1] - _BLUES[low]) * (position - low)
    return tuple(int(round(c)) for c in colour)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def save_confusion_png(matrix: np.ndarray, class_names: Sequence[str], path: str | Path, *, title: str = "") -> None:
    """Draw a confusion matrix as a PNG: rows are true classes, columns predicted classes.

    Cells are shaded by their share of the row (so a rare class's errors show as clearly as a common one's) and
    carry the raw count; the column at the right gives each row's total. Column names are written vertically so
    that long names fit over narrow columns. The file is written atomically.

    Args:
        matrix: counts ``[classes, classes]``, row = true class.
        class_names: one name per class.
        path: the PNG to write.
        title: a line above the picture.
    """
    matrix = np.asarray(matrix)
    k = len(class_names)
    if matrix.shape != (k, k):
        raise ValueError(f"matrix of shape {matrix.shape} does not fit {k} class names")
    names = [n if len(n) <= _LABEL_CHARACTERS else n[: _LABEL_CHARACTERS - 1] + "…" for n in map(str, class_names)]
    totals = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(totals[:, None] > 0, matrix / np.maximum(totals[:, None], 1), 0.0)

    font, small, big = _font(13), _font(11), _font(15)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def width(text: str, which=font) -> int:
        return int(np.ceil(measure.textlength(text, font=which)))

    cell = max(34, max(width(str(int(v))) for v in matrix.flat) + 10) if k else 34
    pad, gap = 12, 8
    row_label_width = max([width(n) for n in names] + [0])
    column_label_height = row_label_width
    total_width = max([width(str(int(t)), small) for t in totals] + [width("n", small)]) + gap
    axis = 18  # room for the "true" / "predicted" axis titles
    title_height = 26 if title else 0
    grid_left = pad + axis + row_label_width + gap
    grid_top = pad + title_height + axis + column_label_height + gap
    canvas_width = max(grid_left + k * cell + gap + total_width, pad + width(title, big)) + pad
    canvas = Image.new("RGB", (canvas_width, grid_top + k * cell + pad), "white")
    draw = ImageDraw.Draw(canvas)
    ink, faint = (33, 33, 33), (150, 150, 150)

    if title:
        draw.text((pad, pad), title, fill=ink, font=big)
    draw.text((grid_left + k * cell / 2, pad + title_height), "predicted", fill=faint, font=small, anchor="mt")
    true_title = Image.new("RGB", (width("true", small) + 2, 16), "white")
    ImageDraw.Draw(true_title).text((1, 0), "true", fill=faint, font=small)
    canvas.paste(true_title.rotate(90, expand=True), (pad, grid_top + k * cell // 2 - true_title.width // 2))

    for i, name in enumerate(names):
        middle = grid_top + i * cell + cell / 2
        draw.text((grid_left - gap, middle), name, fill=ink, font=font, anchor="rm")
        # Column names: drawn on a strip, turned to read bottom-up, bottom-aligned to the grid.
        strip = Image.new("RGB", (column_label_height, cell), "white")
        ImageDraw.Draw(strip).text((column_label_height, cell / 2), name, fill=ink, font=font, anchor="rm")
        canvas.paste(strip.rotate(90, expand=True), (grid_left + i * cell, grid_top - gap - column_label_height))

    for i in range(k):
        for j in range(k):
            x, y = grid_left + j * cell, grid_top + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=_shade(shares[i, j]), outline=(225, 225, 225))
            count = int(matrix[i, j])
            colour = "white" if shares[i, j] > 0.5 else (ink if count else (190, 190, 190))
            draw.text((x + cell / 2, y + cell / 2), str(count), fill=colour, font=font, anchor="mm")
        draw.text((grid_left + k * cell + gap, grid_top + i * cell + cell / 2), str(int(totals[i])), fill=faint,
                  font=small, anchor="lm")
    draw.text((grid_left + k * cell + gap, grid_top - gap), "n", fill=faint, font=small, anchor="lb")

    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    atomic_write_bytes(path, buffer.getvalue())
