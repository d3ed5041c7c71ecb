"""A cell model on cells from one microscope: accuracy, balanced accuracy, per-class recall, share flagged atypical.

The measure that matters for a lab with its own microscope is this one on a domain the model never trained on
(leave one domain out); see ``benchmarks/cell_domains.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leukolens.data.augment import VIEWS
from leukolens.data.cells import CellSample, load_crops
from leukolens.eval.cells import CellPredictions, run_checkpoint


def evaluate_cells(
    checkpoint,
    samples: list[CellSample],
    truth: list[str],
    *,
    groups: list[str] | None = None,
    cache_dir: Path | None = None,
    views: int = VIEWS,
) -> dict:
    """Scores of a loaded cell checkpoint on ``samples`` whose true class names are ``truth``.

    With ``groups`` (e.g. each cell's slide), the network's normalisation is first adapted to each group's own
    cells (:func:`leukolens.models.adapt.adapt_norm`), as ``analyze`` does per sample, and each group is predicted
    with its own statistics.

    A cell is right when the model's top class is its true class among all the model's classes (a neutrophil
    called "Immature granulocyte" is wrong). Cells whose true class the model does not know are counted wrong.
    ``views``: flips and quarter turns averaged per cell, as a prediction does (:data:`leukolens.data.augment.VIEWS`).
    """
    from leukolens.models.atypicality import AtypicalityScorer, select_features

    model = checkpoint.build()
    crop = checkpoint.crop
    stain = checkpoint.preprocess.stain_normalizer()
    crops = load_crops(samples, size=crop.input_size, context=crop.context, stain=stain, cache_dir=cache_dir)
    if groups is None:
        output = run_checkpoint(model, checkpoint, crops, margin=1.0, views=views)
    else:
        output = _adapted_outputs(checkpoint, crops, groups, views)
    classes = checkpoint.config.classes
    guesses = np.array([classes[i] for i in output.class_probabilities.argmax(1)])
    truth_array = np.array(truth)
    names = sorted(set(truth))
    result = {
        "cells": len(samples),
        "accuracy": float((guesses == truth_array).mean()) if len(truth) else float("nan"),
        "per_class_recall": (recall := {c: float((guesses[truth_array == c] == c).mean()) for c in names}),
        "balanced_accuracy": float(np.mean(list(recall.values()))) if names else float("nan"),
        "per_class_cells": {c: int((truth_array == c).sum()) for c in names},
        "predicted": {c: int((guesses == c).sum()) for c in classes},
    }
    if checkpoint.atypicality:
        scorer = AtypicalityScorer.from_dict(checkpoint.atypicality)
        scores = scorer.score(select_features(output.embeddings, output.attribute_features, scorer.features))
        result["flagged_atypical"] = float((scores > scorer.threshold).mean())
    return result


def _adapted_outputs(checkpoint, crops: np.ndarray, groups: list[str], views: int) -> CellPredictions:
    """Model outputs with batch-norm statistics adapted to each group's cells, in the cells' order."""
    import torch

    from leukolens.data.augment import to_input
    from leukolens.models.adapt import adapt_norm

    crop = checkpoint.crop
    parts, order = [], []
    for group in dict.fromkeys(groups):
        index = np.array([i for i, g in enumerate(groups) if g == group])
        model = checkpoint.build()
        adapt_norm(model, to_input(torch.from_numpy(crops[index]), crop.input_size, checkpoint.mean, checkpoint.std))
        parts.append(run_checkpoint(model, checkpoint, crops[index], margin=1.0, views=views))
        order.append(index)
    inverse = np.argsort(np.concatenate(order))
    joined = {}
    for name in ("class_probabilities", "embeddings", "class_logits", "attribute_features"):
        joined[name] = np.concatenate([getattr(p, name) for p in parts])[inverse]
    for name in ("attribute_probabilities", "attribute_logits"):
        keys = getattr(parts[0], name)
        joined[name] = {k: np.concatenate([getattr(p, name)[k] for p in parts])[inverse] for k in keys}
    return CellPredictions(**joined)
