"""Does GAN balancing help? The rare-class protocol, for any data set leukolens reads.

Keep ``keep`` (5%) of the training cells of the rare classes and all of the others (:func:`reduce_classes`, one fixed
reduction seed, so the GAN and every cell model see exactly the same reduced set), then train a cell classifier five
ways:

- ``none``: plain cross-entropy, cells drawn uniformly;
- ``class-weighted``: cross-entropy weighted by inverse class frequency;
- ``oversampling``: every class drawn equally often (rare cells repeated);
- ``gan``: GAN-generated cells added to the rare classes until each reaches the median class size, drawn uniformly;
- ``oversampling+gan``: both;
- ``gan-judged`` and ``class-weighted+gan-judged``: generated cells kept only when a judge reads them as the class
  asked for, with probability at least ``judge_confidence``, drawn as ``leukolens generate`` draws them (until the
  rare class is full or 50 cells were drawn for each one wanted). The judge must not have seen the dropped cells, so
  it is the protocol's own: the class-weighted linear probe on the reduced real training set, trained with the run's
  seed.

Each arm runs with several seeds (initialisation, order, and which GAN cells are drawn) and is scored on the full
test split: balanced accuracy, macro-F1, the recall of each rare class and their mean. Real and generated cells are
treated identically: real crops are cut at the GAN's resolution for every arm, and every model sees that resolution
up-sampled to its input size, so the arms differ only in how they balance. Nothing is chosen on the test split:
epochs and learning rates are fixed in :class:`BalanceConfig` before any run.

Two ways to train each model:

- ``probe`` (default): the ImageNet-pretrained backbone frozen, its pooled features cached once for a few dihedral
  views of every crop (real and generated), and a linear head trained on them: seconds per run.
- ``finetune``: the backbone fine-tuned end to end with the cell model's augmentation for a few epochs: minutes per
  run on a CPU.

The backbone is the ImageNet one, never the shipped cell model, which saw the dropped cells.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from leukolens.data.augment import AugmentConfig, augment, dihedral, to_input
from leukolens.data.cells import load_crops
from leukolens.data.imbalance import CellSet, class_sampling_weights, selection_digest, split_cells
from leukolens.eval.metrics import accuracy, balanced_accuracy, macro_f1, per_class_recall
from leukolens.io import ProblemLog, read_dataset
from leukolens.io.common import LeukolensError
from leukolens.models.backbones import SPECS, build_backbone

ARMS = ("none", "class-weighted", "oversampling", "gan", "oversampling+gan", "gan-judged", "class-weighted+gan-judged")


@dataclass(frozen=True)
class Arm:
    """One way to balance: loss weights, sampling, and whether generated cells join the rare classes."""

    name: str
    class_weighted: bool = False
    oversample: bool = False
    generated: bool = False
    judged: bool = False  # generated cells filtered by the protocol's judge


ARM_SPECS = {
    "none": Arm("none"),
    "class-weighted": Arm("class-weighted", class_weighted=True),
    "oversampling": Arm("oversampling", oversample=True),
    "gan": Arm("gan", generated=True),
    "oversampling+gan": Arm("oversampling+gan", oversample=True, generated=True),
    "gan-judged": Arm("gan-judged", generated=True, judged=True),
    "class-weighted+gan-judged": Arm("class-weighted+gan-judged", class_weighted=True, generated=True, judged=True),
}


@dataclass
class BalanceConfig:
    data: str
    rare: tuple[str, ...]
    gan: str | None = None  # generator.pt trained on the same reduced set (needed by the gan arms)
    keep: float = 0.05
    reduction_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[str, ...] = ARMS
    mode: str = "probe"  # probe (frozen backbone, linear head) or finetune
    image_size: int = 64  # resolution of every crop, real and generated (the GAN's, when there is one)
    crop: str = "auto"
    context: float = 2.0
    backbone: str = "efficientnet_lite0"
    input_size: int = 128  # what the backbone sees (crops up-sampled)
    generated_per_class: int = 0  # generated cells per rare class (0: up to the median class size)
    truncation: float = 0.0
    judge_confidence: float = 0.5  # the judged arms keep generated cells the judge gives at least this probability
    views: int = 4  # probe: dihedral views cached per training crop (1-8)
    epochs: int = 0  # 0: 60 for probe, 4 for finetune
    batch_size: int = 64
    lr: float = 0.0  # 0: 1e-3 for probe, 5e-4 for finetune
    weight_decay: float = 1e-4
    train_split: str = "train"
    test_split: str = "test"
    cache_dir: str = ".cache/leukolens"
    threads: int = 0

    @property
    def run_epochs(self) -> int:
        return self.epochs or (60 if self.mode == "probe" else 4)

    @property
    def run_lr(self) -> float:
        return self.lr or (1e-3 if self.mode == "probe" else 5e-4)


# ------------------------------------------------------------------------------------------------------ pieces
def class_loss_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights ``[classes]``, scaled so that the average cell weighs 1 (classes absent: 0)."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    weights = np.where(counts > 0, len(labels) / (np.maximum(counts, 1) * (counts > 0).sum()), 0.0)
    return weights


def epoch_order(labels: np.ndarray, *, oversample: bool, rng: np.random.Generator) -> np.ndarray:
    """One epoch of indices: a permutation, or (oversampling) ``len(labels)`` draws with every class equally likely."""
    if oversample:
        return rng.choice(len(labels), size=len(labels), replace=True, p=class_sampling_weights(labels, 1.0))
    return rng.permutation(len(labels))


def generated_counts(labels: np.ndarray, rare: list[int], num_classes: int, per_class: int) -> dict[int, int]:
    """How many cells to generate per rare class: ``per_class``, or enough to reach the median size of the other
    classes."""
    counts = np.bincount(labels, minlength=num_classes)
    if per_class:
        return {c: per_class for c in rare}
    common = [counts[c] for c in range(num_classes) if c not in rare and counts[c] > 0]
    target = int(np.median(common)) if common else int(counts.max())
    return {c: max(0, target - int(counts[c])) for c in rare}


@torch.inference_mode()
def crop_features(
    model: nn.Module, crops: np.ndarray, *, input_size: int, mean, std, batch_size: int = 128
) -> np.ndarray:
    """Pooled backbone features ``[n, channels]`` of ``uint8`` crops up-sampled to ``input_size``."""
    model.eval()
    out = []
    for start in range(0, len(crops), batch_size):
        images = to_input(torch.from_numpy(crops[start : start + batch_size]), input_size, mean, std)
        out.append(model(images.contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def scores(labels: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...], rare: list[int]) -> dict:
    """Balanced accuracy, macro-F1, accuracy, each class's recall, and the mean recall of the rare classes."""
    recall = per_class_recall(labels, predicted, len(classes))
    return {
        "balanced_accuracy": balanced_accuracy(labels, predicted, num_classes=len(classes)),
        "macro_f1": macro_f1(labels, predicted, num_classes=len(classes)),
        "accuracy": accuracy(labels, predicted),
        "recall": {c: float(r) for c, r in zip(classes, recall)},
        "rare_recall": float(np.nanmean([recall[i] for i in rare])),
    }


# ------------------------------------------------------------------------------------------------------ training
def train_probe(
    features: np.ndarray, labels: np.ndarray, arm: Arm, num_classes: int, config: BalanceConfig, seed: int
) -> nn.Module:
    """A linear head on frozen features ``[cells, views, d]``; each epoch draws one view per cell."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = features.mean(axis=(0, 1)), features.std(axis=(0, 1)) + 1e-6
    head = nn.Sequential(_Standardise(mean, std), nn.Linear(features.shape[-1], num_classes))
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.run_lr, weight_decay=config.weight_decay)
    weight = torch.tensor(class_loss_weights(labels, num_classes), dtype=torch.float32) if arm.class_weighted else None
    steps = config.run_epochs * math.ceil(len(labels) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.run_lr, total_steps=max(1, steps))
    x_all = torch.from_numpy(features)
    y_all = torch.from_numpy(labels)
    head.train()
    for _ in range(config.run_epochs):
        order = epoch_order(labels, oversample=arm.oversample, rng=rng)
        views = torch.from_numpy(rng.integers(0, features.shape[1], size=len(order)))
        for start in range(0, len(order), config.batch_size):
            index = torch.from_numpy(order[start : start + config.batch_size])
            x = x_all[index, views[start : start + len(index)]]
            loss = F.cross_entropy(head(x), y_all[index], weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return head.eval()


class _Standardise(nn.Module):
    def __init__(self, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class _Classifier(nn.Module):
    """Backbone + pooling + linear head, for ``finetune`` mode."""

    def __init__(self, backbone: str, num_classes: int, *, pretrained: bool = True):
        super().__init__()
        self.backbone = build_backbone(backbone, pretrained=pretrained)
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(SPECS[backbone].num_features, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images).mean(dim=(2, 3)))


def train_finetune(
    crops: np.ndarray, labels: np.ndarray, arm: Arm, num_classes: int, config: BalanceConfig, seed: int,
    progress: Callable | None = None,
) -> nn.Module:
    """The ImageNet backbone fine-tuned with a linear head on augmented crops (the cell model's augmentation)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    spec = SPECS[config.backbone]
    model = _Classifier(config.backbone, num_classes).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.run_lr, weight_decay=config.weight_decay)
    weight = torch.tensor(class_loss_weights(labels, num_classes), dtype=torch.float32) if arm.class_weighted else None
    steps = config.run_epochs * (len(labels) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.run_lr, total_steps=max(1, steps))
    transform = AugmentConfig(scale=(0.85, 1.0))
    model.train()
    for _ in range(config.run_epochs):
        order = epoch_order(labels, oversample=arm.oversample, rng=rng)
        starts = range(0, len(order) - config.batch_size + 1, config.batch_size)
        for start in progress(starts) if progress else starts:
            index = order[start : start + config.batch_size]
            images = augment(torch.from_numpy(crops[index]), transform, config.input_size, spec.mean, spec.std,
                             generator)
            logits = model(images.contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(logits, torch.from_numpy(labels[index]), weight=weight, label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


# ------------------------------------------------------------------------------------------------------ protocol
def check_gan(record: dict, cells: CellSet, config: BalanceConfig) -> None:
    """Refuse a GAN that was not trained on exactly this reduced training set (it would have seen dropped cells)."""
    trained_on = record.get("selection_digest")
    expected = selection_digest(cells.samples)
    if trained_on != expected:
        raise LeukolensError(
            f"the GAN was trained on a different training set (rare {tuple(record.get('rare', ()))}, keep "
            f"{record.get('keep')}, reduction seed {record.get('reduction_seed')}) than this protocol's (rare "
            f"{config.rare}, keep {config.keep}, reduction seed {config.reduction_seed}); train it with "
            f"`leukolens train gan --rare ... --keep ...` so that it never sees the dropped cells"
        )


def run_balance(
    config: BalanceConfig,
    *,
    log: Callable[[str], None] = print,
    backbone: nn.Module | None = None,
) -> dict:
    """Run every arm with every seed; returns per-run scores and their mean and spread per arm.

    Args:
        backbone: the feature extractor / starting point (default: the ImageNet-pretrained ``config.backbone``).
    """
    unknown = set(config.arms) - set(ARM_SPECS)
    if unknown:
        raise LeukolensError(f"unknown arms {sorted(unknown)}: use {', '.join(ARMS)}")
    if config.mode not in ("probe", "finetune"):
        raise LeukolensError(f"mode must be probe or finetune, got {config.mode!r}")
    if not config.rare:
        raise LeukolensError("name the rare classes (--rare)")
    if not 0 <= config.judge_confidence <= 1:
        raise LeukolensError(f"--judge-confidence must be between 0 and 1, got {config.judge_confidence}")
    if config.threads:
        torch.set_num_threads(config.threads)
    arms = [ARM_SPECS[a] for a in config.arms]
    generator_checkpoint = None
    image_size, crop, context = config.image_size, config.crop, config.context
    if any(a.generated for a in arms):
        if not config.gan:
            raise LeukolensError("the gan arms need a generator trained on the reduced set (--gan generator.pt)")
        from leukolens.models.gan_checkpoint import load_gan

        generator_checkpoint = load_gan(config.gan)
        image_size = generator_checkpoint.config.image_size
        crop, context = generator_checkpoint.crop_mode, generator_checkpoint.context
    dataset = read_dataset(config.data, log=ProblemLog())
    train = split_cells(dataset, split=config.train_split, crop=crop, context=context, rare=config.rare,
                        keep=config.keep, reduction_seed=config.reduction_seed)
    test = split_cells(dataset, split=config.test_split, crop=crop, context=context)
    classes = train.classes
    rare = [classes.index(c) for c in config.rare]
    if generator_checkpoint is not None:
        check_gan(generator_checkpoint.train, train, config)
        if generator_checkpoint.config.classes != classes:
            raise LeukolensError(f"the GAN's classes {generator_checkpoint.config.classes} differ from {classes}")
    cache = Path(config.cache_dir)
    train_crops = load_crops(train.samples, size=image_size, context=train.context, cache_dir=cache)
    test_crops = load_crops(test.samples, size=image_size, context=test.context, cache_dir=cache)
    train_labels, test_labels = train.labels, test.labels
    counts = np.bincount(train_labels, minlength=len(classes))
    extra = generated_counts(train_labels, rare, len(classes), config.generated_per_class)
    log(
        f"reduced training set: {len(train_labels):,} cells ("
        + ", ".join(f"{c} {n}" for c, n in zip(classes, counts))
        + f"); test {len(test_labels):,} cells; {config.mode} at {image_size} px -> {config.input_size} px"
    )
    spec = SPECS[config.backbone]
    started = time.time()
    if backbone is None:
        backbone = build_backbone(config.backbone, pretrained=True)
    backbone = backbone.to(memory_format=torch.channels_last)
    probe = config.mode == "probe"
    views = max(1, min(8, config.views))

    def features(crops: np.ndarray, views: int = 1) -> np.ndarray:  # [cells, views, d]
        if not len(crops):  # a judge that accepted nothing (only in probe mode are these features asked for)
            return np.zeros((0, views, train_features.shape[-1]), np.float32)
        return np.stack([crop_features(backbone, dihedral(crops, v), input_size=config.input_size, mean=spec.mean,
                                       std=spec.std) for v in range(views)], axis=1)

    if probe:
        train_features = features(train_crops, views)
        test_features = features(test_crops)[:, 0]
        log(f"features cached in {time.time() - started:.0f} s")

    judge_features = None
    if any(a.judged for a in arms):
        judge_features = train_features if probe else features(train_crops, views)
    runs: dict[str, list[dict]] = {a.name: [] for a in arms}
    acceptance: dict[int, dict] = {}
    for seed in config.seeds:
        generated = {}  # judged or not: (crops, labels, probe features or None)
        if any(a.generated and not a.judged for a in arms):
            crops, labels = _generate(generator_checkpoint, extra, seed, config)
            generated[False] = (crops, labels, features(crops, views) if probe else None)
        if judge_features is not None:  # the probe's own epochs and rate, whatever the arms train with
            probe_judge = train_probe(judge_features, train_labels, ARM_SPECS["class-weighted"], len(classes),
                                      replace(config, mode="probe", epochs=0, lr=0.0), seed)
            judge = _ProbeJudge(probe_judge, lambda c: features(c)[:, 0])
            crops, labels, acceptance[seed] = _generate_judged(generator_checkpoint, extra, seed, config, judge=judge,
                                                               classes=classes)
            generated[True] = (crops, labels, features(crops, views) if probe else None)
            log(f"judged cells, seed {seed}: " + ", ".join(
                f"{name} {a['accepted']} of {a['drawn']} drawn" for name, a in acceptance[seed].items()))
        for arm in arms:
            labels = train_labels
            if arm.generated:
                generated_crops, generated_labels, generated_features = generated[arm.judged]
                labels = np.concatenate([train_labels, generated_labels])
            run_started = time.time()
            if probe:
                x = np.concatenate([train_features, generated_features]) if arm.generated else train_features
                model = train_probe(x, labels, arm, len(classes), config, seed)
                with torch.no_grad():
                    predicted = model(torch.from_numpy(test_features)).argmax(1).numpy()
            else:
                crops = np.concatenate([train_crops, generated_crops]) if arm.generated else train_crops
                model = train_finetune(crops, labels, arm, len(classes), config, seed,
                                       progress=_progress(f"{arm.name} seed {seed}"))
                logits = _logits(model, test_crops, config)
                predicted = logits.argmax(1)
            result = scores(test_labels, predicted, classes, rare)
            result.update(seed=seed, seconds=round(time.time() - run_started, 1), train_cells=int(len(labels)))
            runs[arm.name].append(result)
            log(
                f"{arm.name:<18} seed {seed}: balanced accuracy {result['balanced_accuracy']:.4f}, macro-F1 "
                f"{result['macro_f1']:.4f}, rare recall {result['rare_recall']:.4f} ({result['seconds']:.0f} s)"
            )
    return {
        "config": asdict(config),
        "classes": list(classes),
        "rare": list(config.rare),
        "reduced_class_counts": counts.tolist(),
        "test_cells": int(len(test_labels)),
        "image_size": int(image_size),
        "generated_per_class": {classes[c]: n for c, n in extra.items()} if generator_checkpoint else {},
        "judge_acceptance": {str(seed): a for seed, a in acceptance.items()},
        "gan": None if generator_checkpoint is None else {
            "path": str(config.gan), "steps": generator_checkpoint.train.get("steps"),
            "minutes": generator_checkpoint.train.get("minutes"),
        },
        "minutes": round((time.time() - started) / 60, 2),
        "arms": {name: {"runs": results, **summarise(results, config.rare)} for name, results in runs.items()},
    }


def summarise(results: list[dict], rare: tuple[str, ...]) -> dict:
    """Mean and standard deviation over seeds of every score."""
    keys = ["balanced_accuracy", "macro_f1", "accuracy", "rare_recall"]
    mean = {k: float(np.mean([r[k] for r in results])) for k in keys}
    std = {k: float(np.std([r[k] for r in results])) for k in keys}
    for c in rare:
        mean[f"recall/{c}"] = float(np.mean([r["recall"][c] for r in results]))
        std[f"recall/{c}"] = float(np.std([r["recall"][c] for r in results]))
    return {"mean": mean, "std": std}


def format_balance(report: dict) -> str:
    """The arms as a markdown table: mean +- standard deviation over seeds."""
    rare = report["rare"]
    header = ["arm", "balanced accuracy", "macro-F1", *[f"recall {c}" for c in rare], "mean rare recall"]
    keys = ["balanced_accuracy", "macro_f1", *[f"recall/{c}" for c in rare], "rare_recall"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, arm in report["arms"].items():
        cells = [f"{100 * arm['mean'][k]:.1f} ± {100 * arm['std'][k]:.1f}" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _generate(checkpoint, extra: dict[int, int], seed: int, config: BalanceConfig):
    from leukolens.models.gan import sample_images
    from leukolens.models.gan_checkpoint import conditions_for

    generator = checkpoint.build()
    crops, labels = [], []
    for index, n in extra.items():
        if n <= 0:
            continue
        condition, codes = conditions_for(checkpoint.attribute_pool, index, n, checkpoint.config,
                                          seed=10_000 * seed + index)
        crops.append(sample_images(generator, condition, codes, seed=10_000 * seed + 100 + index,
                                   truncation=config.truncation).numpy())
        labels.append(condition.numpy())
    if not crops:
        size = checkpoint.config.image_size
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(crops), np.concatenate(labels)


@dataclass
class _ProbeJudge:
    """The protocol's judge for :func:`~leukolens.models.gan_checkpoint.sample_accepted`: a linear probe on the
    frozen backbone's features of the crops."""

    probe: nn.Module
    features: Callable[[np.ndarray], np.ndarray]  # uint8 crops [n, s, s, 3] -> [n, d]

    def class_probabilities(self, crops: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.probe(torch.from_numpy(self.features(crops))).softmax(-1).numpy()


def _generate_judged(checkpoint, extra: dict[int, int], seed: int, config: BalanceConfig, *, judge: _ProbeJudge,
                     classes: tuple[str, ...]):
    """Generated cells of each rare class that ``judge`` reads as that class with probability at least
    ``config.judge_confidence``, drawn as ``leukolens generate`` draws them: (crops, labels, per class accepted and
    drawn). A class stops at its count or after :data:`~leukolens.models.gan_checkpoint.MAX_DRAWS_PER_CELL` draws
    per cell wanted."""
    from leukolens.models.gan_checkpoint import MAX_DRAWS_PER_CELL, sample_accepted

    generator = checkpoint.build()
    crops, labels, acceptance = [], [], {}
    for index, n in extra.items():
        if n <= 0:
            continue
        kept = sample_accepted(generator, checkpoint.attribute_pool, index, n, checkpoint.config, judge=judge,
                               min_confidence=config.judge_confidence, seed=seed, max_draws=n * MAX_DRAWS_PER_CELL,
                               truncation=config.truncation)
        acceptance[classes[index]] = {"accepted": kept.accepted, "drawn": kept.drawn}
        crops.append(kept.crops)
        labels.append(kept.labels)
    if not crops:
        size = checkpoint.config.image_size
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64), acceptance
    return np.concatenate(crops), np.concatenate(labels), acceptance


@torch.inference_mode()
def _logits(model: nn.Module, crops: np.ndarray, config: BalanceConfig) -> np.ndarray:
    spec = SPECS[config.backbone]
    out = []
    for start in range(0, len(crops), 128):
        images = to_input(torch.from_numpy(crops[start : start + 128]), config.input_size, spec.mean, spec.std)
        out.append(model(images.contiguous(memory_format=torch.channels_last)).numpy())
    return np.concatenate(out)


def _progress(description: str):
    return lambda iterable: tqdm(iterable, desc=description, leave=False, disable=None, file=sys.stderr)
