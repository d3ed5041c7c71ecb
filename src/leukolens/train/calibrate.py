"""Calibrate a cell model to a lab's own microscope from about a hundred labelled cells, in a minute or two on a CPU.

What changes, and why (the backbone's weights do not: a hundred cells would overfit them):
1. Batch-norm statistics are re-estimated on the lab's cells (AdaBN, Li et al. 2016): the network's normalisation
   then describes this microscope's colours and contrast, not the training microscopes'.
2. The class head is refit on the lab's cells (eight flips and turns of each) by logistic regression pulled
   towards the base head, so a class with few lab cells keeps what the base model knew. A class the base model
   does not know is learnt from the lab's cells alone (its row starts at the class's mean embedding) and reported.
3. The colour statistics for ``match_stain`` and the atypicality reference are the lab's cells: "atypical" then
   means unusual for this microscope, not "from this microscope". Its threshold is set by cross-validation over
   the lab's cells (the share of ordinary cells flagged stays near 5%).
A five-fold cross-validated accuracy of the refit head on the lab's cells is stored with the checkpoint's metrics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from leukolens.data.augment import dihedral, normalize
from leukolens.data.cells import CellSample, crop_cell, load_image
from leukolens.data.domains import canonical_class
from leukolens.errors import LeukolensError
from leukolens.io import ProblemLog, read_dataset
from leukolens.models.adapt import adapt_norm


@dataclass(frozen=True)
class CalibrateConfig:
    """How calibration adapts a base cell model; every default lives here."""

    min_cells_per_class: int = 5
    # Re-estimate batch-norm statistics on the lab's cells. None: unless the base model was trained with its
    # statistics frozen (``--freeze-norm``): its weights learnt around ImageNet's statistics, and measured on three
    # never-seen microscopes, re-estimating them then costs accuracy instead of buying it.
    adapt_norm: bool | None = None
    prior_weight: float = 1e-3  # pull of the refit head towards the base head (L2 on the weight difference)
    steps: int = 300
    lr: float = 0.05
    folds: int = 5
    flag_share: float = 0.05  # share of the lab's ordinary cells the atypicality threshold flags
    # Fine-tuning of the backbone's last stages on the lab's cells after the head is refit (0 epochs: head only).
    # The attribute heads are held to the base model's readings of the same views (distillation), so that what
    # the calibrated model says of morphology does not drift with the features. Measured with 100 cells of a
    # never-seen microscope (benchmarks/cell_domains.py): 15 epochs beat the head alone on PBC, BCCD and Chula
    # (+3.0, +8.0 and +1.4 points) in 60-81 s on 2 cores. Off by default all the same: the blast scorer's
    # examples are embeddings of the base network, so a fine-tuned model loses its blast score until the lab refits
    # it with blast examples of its own (`leukolens train blast`); the head alone keeps it.
    finetune_epochs: int = 0
    finetune_stages: int = 2  # the last stages of the backbone (and its final 1x1 convolution) that train
    finetune_lr: float = 2e-4
    finetune_batch: int = 32
    seed: int = 0


@dataclass
class CalibrationReport:
    cells: dict[str, int]
    new_classes: tuple[str, ...]
    cross_validated_accuracy: float
    base_accuracy: float  # the base model on the same cells, before calibration
    seconds: float = 0.0
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        counts = ", ".join(f"{c} {n}" for c, n in sorted(self.cells.items()))
        lines = [
            f"calibrated on {sum(self.cells.values())} cells ({counts})",
            f"base model on these cells: {self.base_accuracy:.1%}; calibrated, {self_cv(self)}",
        ]
        if self.new_classes:
            lines.append(f"learnt classes the base model did not know: {', '.join(self.new_classes)}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def self_cv(report: CalibrationReport) -> str:
    return f"cross-validated over the lab's cells: {report.cross_validated_accuracy:.1%}"


def lab_cells(path: str | Path, model_classes: tuple[str, ...]) -> tuple[list[CellSample], list[str]]:
    """The labelled cells of a folder (one subfolder per class) or any data set leukolens reads, with class names
    matched to the model's (case and common spellings ignored); classes the model lacks keep their own name."""
    log = ProblemLog()
    dataset = read_dataset(path, log=log)
    if log.problems:
        raise LeukolensError(
            f"{path}: {len(log.problems)} problem(s) in the calibration cells, first: {log.problems[0]}; "
            "fix them (see `leukolens data validate`) so that every cell counts"
        )
    by_key = {c.lower(): c for c in model_classes}
    samples, names = [], []
    single = all(len(f.cells) == 1 for f in dataset.fields)
    for field in dataset.fields:
        for cell in field.cells:
            name = by_key.get(cell.label.lower()) or canonical_class(cell.label) or cell.label
            box = (0.0, 0.0, float(field.width), float(field.height)) if single else cell.box.pixels_xyxy(field.size)
            samples.append(CellSample(field.image, box, field.size, 0))
            names.append(name)
    if not samples:
        raise LeukolensError(f"{path}: no labelled cells found")
    return samples, names


def _crops(samples: list[CellSample], size: int, context: float) -> np.ndarray:
    crops, unreadable = [], []
    for sample in samples:
        try:
            crops.append(crop_cell(load_image(sample.image), sample.box, size, context))
        except LeukolensError as error:
            unreadable.append(str(error))
    if unreadable:
        raise LeukolensError(
            f"{len(unreadable)} calibration image(s) cannot be read, first: {unreadable[0]}; remove or replace them"
        )
    return np.stack(crops)


def _views(crops: np.ndarray) -> np.ndarray:
    """The eight flips and quarter turns of each crop ``[n, s, s, 3]`` -> ``[8n, s, s, 3]``, view by view (the
    first ``n``: the crops as they are)."""
    return np.concatenate([dihedral(crops, view) for view in range(8)])


def _inputs(crops: np.ndarray, checkpoint) -> torch.Tensor:
    images = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    return normalize(images, checkpoint.mean, checkpoint.std)


@torch.inference_mode()
def _adapts_norm(config: CalibrateConfig, checkpoint) -> bool:
    if config.adapt_norm is not None:
        return config.adapt_norm
    return not checkpoint.fixed_norm_statistics


@torch.inference_mode()
def _embeddings(model, crops: np.ndarray, checkpoint, batch_size: int = 64):
    model.eval()
    embeddings, heads = [], []
    for start in range(0, len(crops), batch_size):
        output = model(_inputs(crops[start : start + batch_size], checkpoint))
        embeddings.append(output.embedding)
        if output.attribute_features:
            heads.append(torch.cat(list(output.attribute_features.values()), dim=1))
    return torch.cat(embeddings).numpy(), (torch.cat(heads).numpy() if heads else np.zeros((len(crops), 0)))


def fit_head(
    features: np.ndarray, labels: np.ndarray, weight: np.ndarray, bias: np.ndarray, config: CalibrateConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on ``features`` ``[n, d]``, class-balanced, started from and pulled towards
    the head ``weight`` ``[classes, d]``, ``bias`` ``[classes]``."""
    torch.manual_seed(config.seed)
    x = torch.from_numpy(features).float()
    y = torch.from_numpy(labels).long()
    w0, b0 = torch.from_numpy(weight).float(), torch.from_numpy(bias).float()
    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    counts = torch.bincount(y, minlength=len(w0)).float()
    class_weight = torch.where(counts > 0, counts.sum() / (counts.clamp(min=1) * (counts > 0).sum()), 0.0)
    optimizer = torch.optim.Adam([w, b], lr=config.lr)
    scale = x.norm(dim=1).mean()  # the prior's pull does not depend on the embedding's scale
    for _ in range(config.steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w.T + b, y, weight=class_weight)
        loss = loss + config.prior_weight * scale**2 * (w - w0).pow(2).sum()
        loss.backward()
        optimizer.step()
    return w.detach().numpy(), b.detach().numpy()


def _head(model) -> tuple[np.ndarray, np.ndarray]:
    linear = model.class_head[-1]
    return linear.weight.detach().numpy().copy(), linear.bias.detach().numpy().copy()


def _set_head(model, weight: np.ndarray, bias: np.ndarray) -> None:
    linear = model.class_head[-1]
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight))
        linear.bias.copy_(torch.from_numpy(bias))


def finetune(model, crops: np.ndarray, labels: np.ndarray, checkpoint, config: CalibrateConfig) -> None:
    """Train the backbone's last ``finetune_stages`` stages and the class head on the lab's cells, in place.

    ``crops`` are cut wider than the input (``CropConfig.cache_margin``) so that the robust training
    augmentation can zoom and shift as in training. Batch-norm layers keep their statistics (the model stays in
    eval mode); the attribute heads' readings are distilled from the model as it was, view by view.
    """
    import copy

    from leukolens.data.augment import AUGMENT_PRESETS, augment

    inner = getattr(model.backbone, "model", None)
    if inner is None:
        raise LeukolensError("fine-tuning in calibrate needs an EfficientNet backbone")
    teacher = copy.deepcopy(model).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trained = [*inner.blocks[-config.finetune_stages :], inner.conv_head, inner.bn2, model.class_head]
    parameters = [p for module in trained for p in module.parameters()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=config.finetune_lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    # Balanced over the classes the lab labelled; classes it did not label have no targets (weight irrelevant).
    counts = np.bincount(labels, minlength=len(model.config.classes))
    present = max(int((counts > 0).sum()), 1)
    class_weight = torch.from_numpy(len(labels) / (present * np.maximum(counts, 1))).float()
    model.eval()  # batch-norm statistics stay as they are
    images, targets = torch.from_numpy(crops), torch.from_numpy(labels).long()
    for _ in range(config.finetune_epochs):
        order = rng.permutation(len(labels))
        for start in range(0, len(order), config.finetune_batch):
            index = torch.from_numpy(order[start : start + config.finetune_batch])
            inputs = augment(images[index], AUGMENT_PRESETS["robust"], checkpoint.crop.input_size, checkpoint.mean,
                             checkpoint.std, generator)
            output = model(inputs)
            loss = torch.nn.functional.cross_entropy(output.class_logits, targets[index], weight=class_weight)
            if output.attribute_logits:
                with torch.no_grad():
                    reference = teacher(inputs).attribute_logits
                for name, logits in output.attribute_logits.items():
                    loss = loss + torch.nn.functional.kl_div(
                        logits.log_softmax(1), reference[name].softmax(1), reduction="batchmean"
                    ) / len(output.attribute_logits)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def calibrate(checkpoint, samples: list[CellSample], names: list[str], config: CalibrateConfig | None = None):
    """A copy of a loaded cell ``checkpoint`` adapted to the microscope of ``samples`` (true class ``names``).

    Returns:
        the calibrated checkpoint (save it with :func:`leukolens.models.checkpoint.save_checkpoint`) and a
        :class:`CalibrationReport`.

    Raises:
        LeukolensError: a class with fewer than ``min_cells_per_class`` cells, or unreadable images.
    """
    import copy
    import time

    from leukolens.models.atypicality import fit_scorer, select_features
    from leukolens.models.cellnet import CellNetConfig
    from leukolens.train.cells import training_stain_reference

    config = config or CalibrateConfig()
    started = time.time()
    counts = Counter(names)
    few = {c: n for c, n in counts.items() if n < config.min_cells_per_class}
    if few:
        raise LeukolensError(
            "too few calibration cells for "
            + ", ".join(f"{c} ({n})" for c, n in sorted(few.items()))
            + f": at least {config.min_cells_per_class} per class are needed; add cells or leave the class out"
        )
    base_classes = tuple(checkpoint.config.classes)
    new_classes = tuple(sorted(c for c in counts if c not in base_classes))
    classes = base_classes + new_classes
    labels = np.array([classes.index(n) for n in names])
    crop = checkpoint.crop
    crops = _crops(samples, crop.input_size, crop.context)
    views = _views(crops)  # [8 * cells, s, s, 3]
    view_labels = np.tile(labels, 8)

    model = checkpoint.build()
    base_embeddings, _ = _embeddings(model, crops, checkpoint)
    with torch.inference_mode():
        base_logits = model.class_head(torch.from_numpy(base_embeddings)).numpy()
    base_accuracy = float((base_logits.argmax(1) == labels).mean())
    notes = []
    # What moved the network's features: the blast scorer's normal and blast embeddings came from the base
    # network, so it goes when they move.
    changed = []
    if _adapts_norm(config, checkpoint):
        adapt_norm(model, _inputs(views, checkpoint))
        changed.append("new normalisation statistics")
    embeddings, head_features = _embeddings(model, views, checkpoint)
    if config.finetune_epochs > 0 and new_classes:
        notes.append("no fine-tuning: it needs every class known to the base model (learn new classes first)")
    elif config.finetune_epochs > 0:
        w, b = fit_head(embeddings, view_labels, *_head(model), config)
        _set_head(model, w, b)
        wide = _crops(samples, crop.cache_size, crop.context * crop.cache_margin)
        finetune(model, wide, labels, checkpoint, config)
        changed.append("backbone fine-tuned")
        notes.append(f"the backbone's last {config.finetune_stages} stages were fine-tuned for "
                     f"{config.finetune_epochs} epochs on these cells")
        embeddings, head_features = _embeddings(model, views, checkpoint)

    linear = model.class_head[-1]
    weight = linear.weight.detach().numpy().copy()
    bias = linear.bias.detach().numpy().copy()
    if new_classes:
        prototypes = np.stack([embeddings[view_labels == classes.index(c)].mean(0) for c in new_classes])
        scale = np.linalg.norm(weight, axis=1).mean() / np.linalg.norm(prototypes, axis=1).mean()
        weight = np.concatenate([weight, prototypes * scale])
        bias = np.concatenate([bias, np.full(len(new_classes), bias.mean())])

    # Cross-validated accuracy, folds by cell (all eight views of a cell in one fold).
    rng = np.random.default_rng(config.seed)
    fold_of_cell = rng.permutation(len(labels)) % config.folds
    fold = np.tile(fold_of_cell, 8)
    right = 0
    for k in range(config.folds):
        train, test = fold != k, fold_of_cell == k
        w, b = fit_head(embeddings[train], view_labels[train], weight, bias, config)
        first_view = embeddings[: len(labels)][test]  # the unturned view of each held-out cell
        right += int(((first_view @ w.T + b).argmax(1) == labels[test]).sum())
    w, b = fit_head(embeddings, view_labels, weight, bias, config)

    calibrated = copy.deepcopy(checkpoint)
    if changed:
        calibrated.blast = None
        if checkpoint.blast:
            notes.append(f"the blast scorer was left out (the features changed: {', '.join(changed)}): refit it "
                         "with `leukolens train blast --checkpoint` on the calibrated model")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    prefix = "class_head." + str(len(model.class_head) - 1)
    state[f"{prefix}.weight"] = torch.from_numpy(w).to(state[f"{prefix}.weight"].dtype)
    state[f"{prefix}.bias"] = torch.from_numpy(b).to(state[f"{prefix}.bias"].dtype)
    calibrated.state_dict = state
    if new_classes:
        values = checkpoint.config.as_dict()
        values["classes"] = classes
        calibrated.config = CellNetConfig.from_dict(values)

    # Atypicality: the lab's cells are the reference; the threshold flags ``flag_share`` of held-out lab cells.
    if checkpoint.atypicality:
        which = checkpoint.atypicality.get("features", "embedding")
        method = checkpoint.atypicality.get("method", "knn")
        features = select_features(embeddings, head_features, which)
        held_out_scores = []
        for k in range(config.folds):
            scorer = fit_scorer(features[fold != k], view_labels[fold != k], method=method, which=which,
                                seed=config.seed)
            held_out_scores.append(scorer.score(features[: len(labels)][fold_of_cell == k]))
        scorer = fit_scorer(features, view_labels, method=method, which=which, seed=config.seed)
        scorer.threshold = float(np.quantile(np.concatenate(held_out_scores), 1 - config.flag_share))
        calibrated.atypicality = scorer.as_dict()
    calibrated.training_stain = training_stain_reference(crops)
    report = CalibrationReport(
        cells=dict(counts),
        new_classes=new_classes,
        cross_validated_accuracy=right / len(labels),
        base_accuracy=base_accuracy,
        seconds=time.time() - started,
        notes=tuple(notes),
    )
    calibrated.metrics = {**checkpoint.metrics, "calibration": report.__dict__}
    calibrated.train = {**checkpoint.train, "calibrated_on": len(labels), "calibration_config": config.__dict__}
    return calibrated, report
