"""Training the cell model on CPU: cached crops, class-balanced sampling, early stopping, atomic checkpoints.

Crops are decoded once and kept in memory (and on disk in a cache folder), so an epoch costs only the network.
Each epoch ends with a validation pass; the best epoch (class accuracy plus mean attribute accuracy) is kept as
``best.pt``, the latest as ``last.pt`` with the optimiser state for ``--resume``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from leukolens.data.augment import AugmentConfig, augment
from leukolens.data.cells import CropConfig, cell_samples, image_context, load_crops, single_cell_images
from leukolens.eval.cells import cell_metrics, run_model
from leukolens.io import ProblemLog, read_dataset
from leukolens.io.common import LeukolensError
from leukolens.losses.cells import cell_loss
from leukolens.models.backbones import SPECS
from leukolens.models.cellnet import AttributeSpec, CellNet, CellNetConfig
from leukolens.models.checkpoint import from_model, load_checkpoint, save_checkpoint
from leukolens.records import Dataset
from leukolens.train.resume import restore_run


@dataclass
class TrainCellsConfig:
    data: str
    out: str = "out/cells"
    backbone: str = "efficientnet_lite0"
    input_size: int = 160
    context: float = 2.0
    crop: str = "auto"  # image (whole single-cell images), box (windows around boxes), auto (image when possible)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr: float = 5e-4
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    attribute_weight: float = 1.0
    balanced: bool = True
    patience: int = 3
    freeze_blocks: int = 2  # stem and the first blocks keep their ImageNet weights: faster, and enough for edges
    max_minutes: float = 0.0  # stop after this long (0: no limit)
    exclude: tuple[str, ...] = ()  # classes held out of training (leave-one-class-out)
    train_split: str = "train"
    val_split: str = "val"
    cache_dir: str = ".cache/leukolens"
    stain: str = "none"  # stain normalisation of every crop: none, reinhard or macenko
    atypicality_method: str = "knn"
    atypicality_features: str = "embedding"
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    extra_data: tuple[str, ...] = ()  # more data sets (other microscopes), typed into one vocabulary
    freeze_norm: bool = False  # keep every batch-norm layer's ImageNet statistics: no one microscope's statistics


def training_cells(config: TrainCellsConfig):
    """The classes, attribute heads, schema name, crop rule and train/val cells of a training run.

    With one data set, its own classes and crop rule; with ``extra_data``, the typed white cells of every data set
    in one vocabulary (:mod:`leukolens.data.domains`), cut around their boxes the same way whatever the microscope.
    """
    dataset = read_dataset(config.data, log=ProblemLog())
    unknown = set(config.exclude) - set(dataset.classes.names)
    if not config.extra_data:
        if unknown:
            raise LeukolensError(f"--exclude names classes not in the data set: {sorted(unknown)}")
        classes, attributes = model_targets(dataset, config.exclude)
        crop = crop_config(dataset, config)
        split_samples = {
            split: cell_samples(
                dataset,
                classes=classes,
                attributes=attributes,
                split=split,
                exclude=config.exclude,
                whole_image=crop.mode == "image",
            )
            for split in (config.train_split, config.val_split)
        }
        schema = dataset.schema.name if dataset.schema else None
    else:
        from dataclasses import replace

        from leukolens.data.domains import WBC_CLASSES, typed_cells

        schema_source = dataset if dataset.schema else None
        attributes = model_targets(schema_source, ())[1] if schema_source else ()
        cells = [c for path in (config.data, *config.extra_data) for c in typed_cells(path, attributes=attributes)]
        present = {WBC_CLASSES[c.sample.label] for c in cells if c.split == config.train_split}
        classes = tuple(c for c in WBC_CLASSES if c in present and c not in config.exclude)
        crop = CropConfig(input_size=config.input_size, context=config.context, mode="box")
        split_samples = {
            split: [
                replace(c.sample, label=classes.index(WBC_CLASSES[c.sample.label]))
                for c in cells
                if c.split == split and WBC_CLASSES[c.sample.label] in classes
            ]
            for split in (config.train_split, config.val_split)
        }
        schema = dataset.schema.name if dataset.schema else None
    train_samples, val_samples = split_samples[config.train_split], split_samples[config.val_split]
    if not train_samples or not val_samples:
        raise LeukolensError(
            f"{config.data}: needs cells in both the {config.train_split!r} and "
            f"{config.val_split!r} splits (see `leukolens data split`)"
        )
    return classes, attributes, schema, crop, train_samples, val_samples


def model_targets(dataset: Dataset, exclude: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[AttributeSpec, ...]]:
    classes = tuple(c for c in dataset.classes.names if c not in exclude)
    attributes = tuple(AttributeSpec(a.name, a.values) for a in dataset.schema) if dataset.schema else ()
    return classes, attributes


def crop_config(dataset: Dataset, config: TrainCellsConfig) -> CropConfig:
    """Whole images for single-cell image sets (``crop`` auto or image), windows around boxes otherwise."""
    mode = config.crop
    if mode == "auto":
        mode = "image" if single_cell_images(dataset) else "box"
    context = image_context(dataset) if mode == "image" else config.context
    return CropConfig(input_size=config.input_size, context=round(context, 3), mode=mode)


def _freeze(model: CellNet, blocks: int, *, norm: bool = False) -> None:
    """Keep the stem and the first ``blocks`` backbone stages fixed (weights and batch-norm statistics); with
    ``norm``, every batch-norm layer keeps its ImageNet statistics (its scale and shift still train), so that the
    network carries no one microscope's colour statistics."""
    if norm:
        norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        model._frozen_modules = norms
        for module in norms:
            module.eval()
    if blocks <= 0:
        return
    inner = getattr(model.backbone, "model", None)
    if inner is not None:  # timm EfficientNet
        frozen = [inner.conv_stem, inner.bn1, *inner.blocks[:blocks]]
    else:  # torchvision MobileNetV2: features[0] is the stem
        frozen = list(model.backbone.features[: blocks + 1])
    for module in frozen:
        module.eval()
        for parameter in module.parameters():
            parameter.requires_grad = False
    model._frozen_modules = [*getattr(model, "_frozen_modules", []), *frozen]  # re-applied after every .train()


def _train_mode(model: CellNet) -> None:
    model.train()
    for module in getattr(model, "_frozen_modules", []):
        module.eval()


def _balanced_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An epoch of indices drawn with probability inversely proportional to class frequency."""
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    return rng.choice(len(labels), size=len(labels), replace=True, p=weights / weights.sum())


def train_one_epoch(
    model,
    optimizer,
    scheduler,
    crops,
    samples,
    config: TrainCellsConfig,
    rng,
    generator,
    attribute_names,
    mean,
    std,
    progress: Callable | None,
    deadline: float | None,
) -> dict:
    """One pass over the training crops; returns the mean of each loss part."""
    _train_mode(model)
    labels = np.array([s.label for s in samples])
    order = _balanced_order(labels, rng) if config.balanced else rng.permutation(len(samples))
    attribute_targets = torch.tensor([s.attributes for s in samples], dtype=torch.long).view(len(samples), -1)
    totals: dict[str, float] = {}
    steps = range(0, len(order) - config.batch_size + 1, config.batch_size)
    bar = progress(steps) if progress else steps
    for step, start in enumerate(bar):
        index = order[start : start + config.batch_size]
        images = augment(torch.from_numpy(crops[index]), config.augment, config.input_size, mean, std, generator)
        output = model(images.contiguous(memory_format=torch.channels_last))
        parts = cell_loss(
            output,
            torch.from_numpy(labels[index]),
            attribute_targets[index],
            attribute_names,
            label_smoothing=config.label_smoothing,
            attribute_weight=config.attribute_weight,
        )
        optimizer.zero_grad(set_to_none=True)
        parts["total"].backward()
        optimizer.step()
        scheduler.step()
        for name in ("total", "class", "attributes"):
            totals[name] = totals.get(name, 0.0) + parts[name].item()
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{totals['total'] / (step + 1):.3f}")
        if deadline is not None and time.time() > deadline:
            break
    return {name: value / max(1, step + 1) for name, value in totals.items()}


def _last_epoch_within_budget(config: TrainCellsConfig, history: list[dict], epoch: int) -> int:
    """The last epoch (1-based) that the time budget leaves room for, at the pace of the epochs so far."""
    if not config.max_minutes or not history:
        return config.epochs
    per_epoch = history[-1]["minutes"] / len(history)
    room = int((config.max_minutes - history[-1]["minutes"]) / per_epoch) if per_epoch > 0 else config.epochs
    return max(epoch + 1, min(config.epochs, epoch + 1 + room))


def _progress(description: str):
    return lambda iterable: tqdm(iterable, desc=description, leave=False, disable=None, file=sys.stderr)


def train_cells(config: TrainCellsConfig, *, resume: bool = False, log: Callable[[str], None] = print) -> Path:
    """Train a cell model; returns the path of the best checkpoint."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    out = Path(config.out)
    classes, attributes, schema, crop, train_samples, val_samples = training_cells(config)
    log(
        f"training on {len(train_samples):,} cells, validating on {len(val_samples):,}; {len(classes)} classes, "
        f"{len(attributes)} attribute heads; input {config.input_size} px"
    )
    cache = Path(config.cache_dir)
    stain, stain_stored = _stain(config, train_samples, crop)
    train_crops = load_crops(
        train_samples,
        size=crop.cache_size,
        context=crop.cache_context,
        stain=stain,
        cache_dir=cache,
        progress=_progress("caching train crops"),
    )
    val_crops = load_crops(
        val_samples,
        size=crop.cache_size,
        context=crop.cache_context,
        stain=stain,
        cache_dir=cache,
        progress=_progress("caching val crops"),
    )
    spec = SPECS[config.backbone]
    model = CellNet(CellNetConfig(classes, attributes, config.backbone), pretrained=True)
    _freeze(model, config.freeze_blocks, norm=config.freeze_norm)
    model = model.to(memory_format=torch.channels_last)
    backbone_params = [p for p in model.backbone.parameters() if p.requires_grad]
    head_params = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    optimizer = torch.optim.AdamW(
        [{"params": backbone_params, "lr": config.backbone_lr}, {"params": head_params, "lr": config.lr}],
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = len(train_samples) // config.batch_size
    total_steps = max(1, steps_per_epoch * config.epochs)
    warmup = min(100, total_steps // 10)

    horizon = [total_steps]  # shortened when a time budget will end training early, so the decay still ends

    def schedule(step: int) -> float:  # linear warm-up, then cosine decay to the horizon
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, horizon[0] - warmup))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start_epoch, best_score, stale, history = 0, -1.0, 0, []
    if resume and (out / "last.pt").is_file():
        last = load_checkpoint(out / "last.pt")
        start_epoch, best_score, history = restore_run(model, optimizer, scheduler, last.state_dict, last.extra)
        stale = last.extra["stale"]
        rng = np.random.default_rng(config.seed + start_epoch)
        log(f"resuming after epoch {start_epoch} (best score so far {best_score:.4f})")
    started = time.time() - 60 * (history[-1]["minutes"] if history else 0.0)  # a resumed run keeps its clock
    deadline = started + 60 * config.max_minutes if config.max_minutes else None
    attribute_names = tuple(a.name for a in attributes)
    for epoch in range(start_epoch, config.epochs):
        losses = train_one_epoch(
            model,
            optimizer,
            scheduler,
            train_crops,
            train_samples,
            config,
            rng,
            generator,
            attribute_names,
            spec.mean,
            spec.std,
            _progress(f"epoch {epoch + 1}"),
            deadline,
        )
        predictions = run_model(
            model, val_crops, input_size=crop.input_size, mean=spec.mean, std=spec.std, margin=crop.eval_margin
        )
        metrics = cell_metrics(predictions, val_samples, classes=classes, attributes=attributes)
        score = metrics["class"]["accuracy"] + metrics.get("mean_attribute_accuracy", 0.0)
        history.append(
            {
                "epoch": epoch + 1,
                "minutes": round((time.time() - started) / 60, 2),
                **losses,
                "val_accuracy": metrics["class"]["accuracy"],
                "val_mean_attribute_accuracy": metrics.get("mean_attribute_accuracy"),
            }
        )
        improved = score > best_score
        log(
            f"epoch {epoch + 1}/{config.epochs}: loss {losses['total']:.3f}, val accuracy "
            f"{metrics['class']['accuracy']:.4f}, mean attribute accuracy "
            f"{metrics.get('mean_attribute_accuracy', float('nan')):.4f}{' (best)' if improved else ''}"
        )
        stale = 0 if improved else stale + 1
        train_record = {**asdict(config), "history": history, "train_cells": len(train_samples)}
        if improved:
            best_score = score
            save_checkpoint(
                from_model(
                    model,
                    crop,
                    schema=schema,
                    stain=stain_stored,
                    metrics={"val": metrics},
                    train=train_record,
                ),
                out / "best.pt",
            )
        extra = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "best_score": best_score,
            "stale": stale,
            "history": history,
        }
        save_checkpoint(from_model(model, crop, train=train_record, extra=extra), out / "last.pt", half=False)
        last_epoch = _last_epoch_within_budget(config, history, epoch)
        horizon[0] = max(scheduler.last_epoch + 1, last_epoch * steps_per_epoch)
        if stale >= config.patience:
            log(f"no improvement for {stale} epochs: stopping early")
            break
        if epoch + 1 >= last_epoch:
            if last_epoch < config.epochs:
                log(f"the time budget of {config.max_minutes} minutes allows no further epoch")
            break
    return out / "best.pt"


def _stain(config: TrainCellsConfig, samples, crop: CropConfig):
    """The stain normaliser and its stored form, fitted on a typical training crop; (None, None) for ``none``."""
    if config.stain == "none":
        return None, None
    from leukolens.data.stain import fit_reference, normalizer_from_reference

    plain = load_crops(samples[:: max(1, len(samples) // 64)], size=crop.cache_size, context=crop.cache_context)
    means = plain.reshape(len(plain), -1, 3).mean(axis=1)
    typical = plain[int(np.argmin(np.linalg.norm(means - means.mean(axis=0), axis=1)))]
    stored = {"method": config.stain, "reference": fit_reference(config.stain, typical)}
    return normalizer_from_reference(stored), stored


def training_stain_reference(crops: np.ndarray, *, count: int = 64) -> dict:
    """Reinhard colour statistics of (up to ``count`` evenly spaced) training crops ``[n, size, size, 3]``, in the
    stored form of :func:`leukolens.data.stain.normalizer_from_reference`."""
    from leukolens.data.stain import reinhard_fit

    chosen = crops[:: max(1, len(crops) // count)]
    mosaic = np.concatenate(list(chosen), axis=0)  # [cells * size, size, 3]: one image, statistics over all
    return {"method": "reinhard", "reference": reinhard_fit(mosaic).as_dict()}


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of ``targets`` (a 1-D search, log-spaced)."""

    def nll(t: float) -> float:
        scaled = logits / t
        scaled = scaled - scaled.max(axis=1, keepdims=True)
        log_probabilities = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
        return float(-log_probabilities[np.arange(len(targets)), targets].mean())

    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 61))
    best = min(grid, key=nll)
    fine = best * np.exp(np.linspace(-0.06, 0.06, 25))
    return float(min(fine, key=nll))


def fit_atypicality(path: Path, config: TrainCellsConfig, *, log: Callable[[str], None] = print) -> dict:
    """After training: calibrate each head's probabilities with a temperature fitted on validation cells, fit the
    atypicality scorer on the training cells and set its threshold on validation; store both in the checkpoint."""
    from leukolens.data.cells import IGNORE
    from leukolens.models.atypicality import fit_scorer, select_features

    checkpoint = load_checkpoint(path)
    model = checkpoint.build().to(memory_format=torch.channels_last)
    model.temperatures.fill_(1.0)  # fit on the raw logits
    attributes = checkpoint.config.attributes
    _, _, _, _, train_samples, val_samples = training_cells(config)
    stain = None
    if checkpoint.stain:
        from leukolens.data.stain import normalizer_from_reference

        stain = normalizer_from_reference(checkpoint.stain)
    features = {}
    training_crops = None
    for split, samples in ((config.train_split, train_samples), (config.val_split, val_samples)):
        crops = load_crops(
            samples,
            size=checkpoint.crop.cache_size,
            context=checkpoint.crop.cache_context,
            stain=stain,
            cache_dir=Path(config.cache_dir),
        )
        if split == config.train_split:
            training_crops = crops
        output = run_model(
            model,
            crops,
            input_size=checkpoint.crop.input_size,
            mean=checkpoint.mean,
            std=checkpoint.std,
            margin=checkpoint.crop.eval_margin,
        )
        features[split] = (
            select_features(output.embeddings, output.attribute_features, config.atypicality_features),
            np.array([s.label for s in samples]),
        )
        if split == config.val_split:
            temperatures = [fit_temperature(output.class_logits, features[split][1])]
            for i, attribute in enumerate(attributes):
                targets = np.array([s.attributes[i] for s in samples])
                known = targets != IGNORE
                logits = output.attribute_logits[attribute.name][known]
                temperatures.append(fit_temperature(logits, targets[known]) if known.any() else 1.0)
    scorer = fit_scorer(
        *features[config.train_split],
        method=config.atypicality_method,
        which=config.atypicality_features,
        seed=config.seed,
    )
    threshold = scorer.calibrate(features[config.val_split][0])
    checkpoint.atypicality = scorer.as_dict()
    checkpoint.training_stain = training_stain_reference(training_crops)
    checkpoint.state_dict["temperatures"] = torch.tensor(temperatures)
    save_checkpoint(checkpoint, path)
    log(f"calibration: class temperature {temperatures[0]:.2f}, attribute temperatures "
        + ", ".join(f"{t:.2f}" for t in temperatures[1:]))
    log(
        f"atypicality ({config.atypicality_method} on {config.atypicality_features}): threshold {threshold:.3f} "
        "flags 5% of validation cells"
    )
    return checkpoint.atypicality
