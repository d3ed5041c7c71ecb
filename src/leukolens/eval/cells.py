"""Evaluating the cell model: run it over cached crops, then score class and attributes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from leukolens.data.augment import VIEWS, dihedral, to_input
from leukolens.data.cells import IGNORE, CellSample, cell_samples, load_crops, single_cell_images
from leukolens.eval.metrics import (
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
)
from leukolens.models.cellnet import AttributeSpec, CellNet
from leukolens.models.checkpoint import CellCheckpoint


@dataclass
class CellPredictions:
    class_probabilities: np.ndarray  # [cells, classes]
    attribute_probabilities: dict[str, np.ndarray]  # name -> [cells, values]
    embeddings: np.ndarray  # [cells, features]
    class_logits: np.ndarray  # [cells, classes]
    attribute_features: np.ndarray  # [cells, heads * 2 * hidden]: what each attribute head pooled
    attribute_logits: dict[str, np.ndarray]  # name -> [cells, values]


@torch.inference_mode()
def run_model(
    model: CellNet,
    crops: np.ndarray,
    *,
    input_size: int,
    mean,
    std,
    margin: float,
    batch_size: int = 64,
    views: int = VIEWS,
    progress: Callable | None = None,
) -> CellPredictions:
    """The model's outputs for ``uint8`` crops ``[n, size, size, 3]``.

    Class and attribute probabilities (and logits) are the mean over the first ``views`` flips and quarter turns of
    each crop; the embedding and the attribute heads' features are the upright crop's, the space the atypicality
    and blast scorers were fitted in."""
    model.eval()
    class_probabilities, logits, embeddings, head_features = [], [], [], []
    attributes: dict[str, list] = {name: [] for name in model.attribute_heads}
    attribute_logits: dict[str, list] = {name: [] for name in model.attribute_heads}
    starts = range(0, len(crops), batch_size)
    for start in progress(starts) if progress else starts:
        batch = crops[start : start + batch_size]
        outputs = []
        for view in range(max(1, views)):
            images = to_input(torch.from_numpy(dihedral(batch, view)), input_size, mean, std, margin=margin)
            outputs.append(model(images.contiguous(memory_format=torch.channels_last)))
        output = outputs[0]
        logits.append(np.mean([o.class_logits.numpy() for o in outputs], 0))
        class_probabilities.append(np.mean([o.class_logits.softmax(-1).numpy() for o in outputs], 0))
        embeddings.append(output.embedding.numpy())
        if output.attribute_features:
            head_features.append(torch.cat(list(output.attribute_features.values()), dim=1).numpy())
        for name in output.attribute_logits:
            attributes[name].append(np.mean([o.attribute_logits[name].softmax(-1).numpy() for o in outputs], 0))
            attribute_logits[name].append(np.mean([o.attribute_logits[name].numpy() for o in outputs], 0))
    width = len(model.config.classes)
    return CellPredictions(
        np.concatenate(class_probabilities) if class_probabilities else np.zeros((0, width)),
        {name: np.concatenate(parts) for name, parts in attributes.items() if parts},
        np.concatenate(embeddings) if embeddings else np.zeros((0, 0)),
        np.concatenate(logits) if logits else np.zeros((0, width)),
        np.concatenate(head_features) if head_features else np.zeros((len(crops), 0)),
        {name: np.concatenate(parts) for name, parts in attribute_logits.items() if parts},
    )


def run_checkpoint(
    model: CellNet, checkpoint: CellCheckpoint, crops: np.ndarray, *, margin: float, batch_size: int = 64,
    views: int = VIEWS,
) -> CellPredictions:
    """:func:`run_model` at the input size and normalisation ``checkpoint`` stores (the model built from it)."""
    return run_model(
        model,
        crops,
        input_size=checkpoint.crop.input_size,
        mean=checkpoint.mean,
        std=checkpoint.std,
        margin=margin,
        batch_size=batch_size,
        views=views,
    )


def cell_metrics(
    predictions: CellPredictions,
    samples: list[CellSample],
    *,
    classes: tuple[str, ...],
    attributes: tuple[AttributeSpec, ...] = (),
) -> dict:
    """Class accuracy, balanced accuracy, macro-F1, confusion matrix and calibration; per-attribute accuracy and
    macro-F1 over the cells where the attribute is annotated, and their mean."""
    labels = np.array([s.label for s in samples])
    predicted = predictions.class_probabilities.argmax(1)
    result = {
        "cells": len(samples),
        "class": {
            "accuracy": accuracy(labels, predicted),
            "balanced_accuracy": balanced_accuracy(labels, predicted, num_classes=len(classes)),
            "macro_f1": macro_f1(labels, predicted, num_classes=len(classes)),
            "ece": expected_calibration_error(predictions.class_probabilities, labels),
            "confusion": confusion_matrix(labels, predicted, len(classes)).tolist(),
            "names": list(classes),
        },
        "attributes": {},
    }
    for i, attribute in enumerate(attributes):
        targets = np.array([s.attributes[i] for s in samples])
        known = targets != IGNORE
        if not known.any():
            continue
        probabilities = predictions.attribute_probabilities[attribute.name][known]
        guess = probabilities.argmax(1)
        result["attributes"][attribute.name] = {
            "accuracy": accuracy(targets[known], guess),
            "macro_f1": macro_f1(targets[known], guess, num_classes=len(attribute.values)),
            "ece": expected_calibration_error(probabilities, targets[known]),
            "cells": int(known.sum()),
        }
    if result["attributes"]:
        result["mean_attribute_accuracy"] = float(np.mean([a["accuracy"] for a in result["attributes"].values()]))
        result["mean_attribute_macro_f1"] = float(np.mean([a["macro_f1"] for a in result["attributes"].values()]))
    return result


def human_agreement(data: Path) -> dict[str, float]:
    """Per-attribute agreement between WBCAtt's two annotators (its re-annotation against the main labels).

    Empty when the data set has no ``wbcatt/`` folder with the re-annotation file.
    """
    from leukolens.io.common import ProblemLog
    from leukolens.io.wbcatt import read_wbcatt_rows

    folder = Path(data) / "wbcatt"
    second = folder / "re-annotation_pbc_attr_reannotations.csv"
    if not second.is_file():
        return {}
    log = ProblemLog()
    first = {r.img_name: r for p in sorted(folder.glob("pbc_attr_v1_*.csv")) for r in read_wbcatt_rows(p, log=log)}
    pairs = [(first[r.img_name], r) for r in read_wbcatt_rows(second, log=log) if r.img_name in first]
    if not pairs:
        return {}
    names = list(pairs[0][0].attributes)
    return {n: float(np.mean([a.attributes[n] == b.attributes[n] for a, b in pairs])) for n in names} | {
        "_images": len(pairs)
    }


def evaluate_checkpoint(
    checkpoint_path: str | Path | None,
    data: str | Path,
    *,
    split: str = "test",
    confusion_png: str | Path | None = None,
    agreement: bool = True,
    batch_size: int = 64,
    views: int = VIEWS,
) -> dict:
    """Every cell-model number on one split of a data set: class, attributes, calibration, atypicality; each cell
    read in ``views`` flips and quarter turns, as a prediction reads it."""
    from leukolens.io import ProblemLog, read_dataset
    from leukolens.io.common import LeukolensError
    from leukolens.models.atypicality import AtypicalityScorer, select_features
    from leukolens.models.checkpoint import load_checkpoint
    from leukolens.models.weights import default_checkpoint

    path = Path(checkpoint_path) if checkpoint_path else default_checkpoint()
    checkpoint = load_checkpoint(path)
    model = checkpoint.build().to(memory_format=torch.channels_last)
    dataset = read_dataset(data, log=ProblemLog())
    classes, attributes = checkpoint.config.classes, checkpoint.config.attributes
    missing = [c.label for c in dataset.cells() if c.label not in classes]
    samples = cell_samples(
        dataset,
        classes=classes,
        attributes=attributes,
        split=None if split == "all" else split,
        whole_image=checkpoint.crop.mode == "image" and single_cell_images(dataset),
    )
    if not samples:
        raise LeukolensError(f"{data}: no cells of the model's classes in split {split!r}")
    stain = checkpoint.preprocess.stain_normalizer()
    crops = load_crops(samples, size=checkpoint.crop.input_size, context=checkpoint.crop.context, stain=stain)
    predictions = run_checkpoint(model, checkpoint, crops, margin=1.0, batch_size=batch_size, views=views)
    report = {
        "checkpoint": str(path),
        "data": str(data),
        "split": split,
        "views": views,
        "cells_not_in_model_classes": len(missing),
        **cell_metrics(predictions, samples, classes=classes, attributes=attributes),
    }
    if checkpoint.atypicality:
        scorer = AtypicalityScorer.from_dict(checkpoint.atypicality)
        scores = scorer.score(select_features(predictions.embeddings, predictions.attribute_features, scorer.features))
        report["atypicality"] = {
            "threshold": scorer.threshold,
            "flagged_share": float((scores > scorer.threshold).mean()),
        }
    if agreement:
        report["human_agreement"] = human_agreement(Path(data))
    if confusion_png:
        from leukolens.eval.metrics import save_confusion_png

        save_confusion_png(
            np.array(report["class"]["confusion"]), list(classes), confusion_png, title=f"{Path(data).name} {split}"
        )
    return report


def format_report(report: dict) -> str:
    """The evaluation as text: class metrics, then each attribute beside the human ceiling."""
    c = report["class"]
    lines = [
        f"{report['data']} [{report['split']}]: {report['cells']:,} cells",
        f"class: accuracy {c['accuracy']:.4f}, balanced accuracy {c['balanced_accuracy']:.4f}, "
        f"macro-F1 {c['macro_f1']:.4f}, ECE {c['ece']:.4f}",
    ]
    if report["attributes"]:
        human = report.get("human_agreement") or {}
        lines.append(f"{'attribute':<28}{'accuracy':>10}{'macro-F1':>10}{'human':>8}")
        for name, a in report["attributes"].items():
            ceiling = f"{human[name]:.3f}" if name in human else "-"
            lines.append(f"{name:<28}{a['accuracy']:>10.4f}{a['macro_f1']:>10.4f}{ceiling:>8}")
        mean_human = np.mean([v for k, v in human.items() if not k.startswith("_")]) if human else None
        lines.append(
            f"{'mean':<28}{report['mean_attribute_accuracy']:>10.4f}"
            f"{report['mean_attribute_macro_f1']:>10.4f}"
            f"{'' if mean_human is None else format(mean_human, '.3f'):>8}"
        )
        if human:
            lines.append(f"(human: agreement of WBCAtt's two annotators on {human['_images']:,} re-annotated images)")
    if "atypicality" in report:
        lines.append(
            f"atypicality: {report['atypicality']['flagged_share']:.1%} of these cells flagged "
            f"'atypical, review' (threshold {report['atypicality']['threshold']:.3f})"
        )
    return "\n".join(lines)
