"""Training the cell model on CPU: cached crops, class-balanced sampling, early stopping, atomic checkpoints.

Crops are decoded once and kept in memory (and on disk in a cache folder), so an epoch costs only the network.
Each epoch ends with a validation pass; the best epoch (class accuracy plus mean attribute accuracy) is kept as
``best.pt``, the latest as ``last.pt`` with the optimiser state for ``--resume``. Under ``torchrun
--nproc_per_node=N`` the same run is shared by N processes (:mod:`leukolens.train.distributed`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from leukolens.data.augment import AugmentConfig, augment
from leukolens.data.cells import CropConfig, cell_samples, image_context, load_crops, single_cell_images
from leukolens.eval.cells import cell_metrics, run_checkpoint, run_model
from leukolens.io import ProblemLog, read_dataset
from leukolens.io.common import LeukolensError
from leukolens.losses.cells import cell_loss
from leukolens.models.backbones import SPECS
from leukolens.models.cellnet import AttributeSpec, CellNet, CellNetConfig, add_mix_style
from leukolens.models.checkpoint import from_model, load_checkpoint, save_checkpoint
from leukolens.records import Dataset
from leukolens.train.distributed import (
    SINGLE,
    Ranks,
    all_cores,
    broadcast,
    cleanup,
    main_first,
    mean_over_ranks,
    setup,
    unwrap,
    wrap,
)
from leukolens.train.ema import ModelEMA, WeightAverage
from leukolens.train.loop import (
    Batches,
    MeanLosses,
    freeze,
    last_epoch_within_budget,
    optimisation_step,
    past,
    progress,
    train_mode,
    warmup_cosine,
)
from leukolens.train.resume import restore_run
from leukolens.train.unlabelled import UnlabelledBatch, pseudo_label_loss, unlabelled_batches


@dataclass
class CellDataConfig:
    """What a cell model learns from: the data sets, how cells are cut, stained and augmented, the splits."""

    data: str
    extra_data: tuple[str, ...] = ()  # more data sets (other microscopes), typed into one vocabulary
    exclude: tuple[str, ...] = ()  # classes held out of training (leave-one-class-out)
    context: float = 2.0
    crop: str = "auto"  # image (whole single-cell images), box (windows around boxes), auto (image when possible)
    stain: str = "none"  # stain normalisation of every crop: none, reinhard or macenko
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    balanced: bool = True  # class-balanced sampling of each epoch
    train_split: str = "train"
    val_split: str = "val"
    cache_dir: str = ".cache/leukolens"
    # Data sets whose boxed white cells are used without their types, for self-training (train/unlabelled.py),
    # and which of their sources (a field's domain.source; empty: all).
    unlabelled_data: tuple[str, ...] = ()
    unlabelled_sources: tuple[str, ...] = ()


@dataclass
class CellModelConfig:
    """The network trained and the atypicality scorer fitted after it."""

    backbone: str = "efficientnet_lite0"
    input_size: int = 160
    freeze_blocks: int = 2  # stem and the first blocks keep their ImageNet weights: faster, and enough for edges
    freeze_norm: bool = False  # keep every batch-norm layer's ImageNet statistics: no one microscope's statistics
    input_norm: str = "dataset"  # "per-cell": each crop standardised by its own colour statistics (CellNet)
    mix_style: float = 0.0  # probability of mixing feature styles across a batch (MixStyle; models/cellnet.py)
    atypicality_method: str = "knn"
    atypicality_features: str = "embedding"


@dataclass
class CellOptimConfig:
    """How long and how fast the cell model trains."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr: float = 5e-4
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    attribute_weight: float = 1.0
    patience: int = 3
    max_minutes: float = 0.0  # stop after this long (0: no limit)
    seed: int = 0
    # Self-training on unlabelled cells: the teacher's confidence a target needs, the weight of that loss, and the
    # teacher's momentum. 0.8 rather than FixMatch's 0.95: label smoothing keeps this model's top probabilities low.
    pseudo_threshold: float = 0.8
    pseudo_weight: float = 1.0
    teacher_momentum: float = 0.999
    # Weight averaging: the checkpoint holds the uniform average of the weights over this last share of the planned
    # steps (0: off; train/ema.py WeightAverage). Validation, and so the best epoch, reads the average.
    average_weights: float = 0.0


@dataclass
class TrainCellsConfig(CellOptimConfig, CellModelConfig, CellDataConfig):
    """A cell-model training run: its data, model and optimisation parts, and where checkpoints go.

    One flat constructor (``TrainCellsConfig(data=..., epochs=...)``) over the three parts; each function below
    takes the part it reads (:func:`training_cells` the data part, :func:`train_one_epoch` the optimisation part).
    """

    out: str = "out/cells"


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
        freeze(model, norms, weights=False)
    if blocks <= 0:
        return
    inner = getattr(model.backbone, "model", None)
    if inner is not None:  # timm EfficientNet
        frozen = [inner.conv_stem, inner.bn1, *inner.blocks[:blocks]]
    else:  # torchvision MobileNetV2: features[0] is the stem
        frozen = list(model.backbone.features[: blocks + 1])
    freeze(model, frozen)


def _balanced_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An epoch of indices drawn with probability inversely proportional to class frequency."""
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    return rng.choice(len(labels), size=len(labels), replace=True, p=weights / weights.sum())


@dataclass
class CellBatch:
    images: torch.Tensor  # [batch, 3, input_size, input_size], augmented and normalised, channels-last
    labels: torch.Tensor  # [batch] class indices
    attributes: torch.Tensor  # [batch, attributes] value indices, IGNORE where unknown


def cell_batches(
    crops: np.ndarray,
    samples: list,
    config: TrainCellsConfig,
    *,
    rng: np.random.Generator,
    generator: torch.Generator,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    ranks: Ranks = SINGLE,
) -> Batches[CellBatch]:
    """An epoch of augmented batches of the cached ``crops`` ``[n, s, s, 3]`` of ``samples``: class-balanced (or
    shuffled) with ``rng``, augmented with ``generator``; a last partial batch is dropped. Under several processes,
    this rank's part of each global batch (``rng`` must then draw the same order on every rank)."""
    labels = np.array([s.label for s in samples])
    attribute_targets = torch.tensor([s.attributes for s in samples], dtype=torch.long).view(len(samples), -1)
    starts = range(0, len(samples) - config.batch_size + 1, config.batch_size)
    ranks.per_rank(config.batch_size)  # a batch that does not divide among the processes fails here, not mid-epoch

    def make():
        order = _balanced_order(labels, rng) if config.balanced else rng.permutation(len(samples))
        for index in ranks.batches(order, config.batch_size):
            images = augment(torch.from_numpy(crops[index]), config.augment, config.input_size, mean, std, generator)
            yield CellBatch(
                images.contiguous(memory_format=torch.channels_last),
                torch.from_numpy(labels[index]),
                attribute_targets[index],
            )

    return Batches(len(starts), make)


def train_one_epoch(
    model: CellNet,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[CellBatch],
    epoch: int,
    *,
    scheduler,
    config: CellOptimConfig,
    deadline: float | None = None,
    unlabelled: Iterator[UnlabelledBatch] | None = None,
    teacher: ModelEMA | None = None,
    average: WeightAverage | None = None,
) -> dict[str, float]:
    """One pass over ``batches`` (epoch ``epoch``, 0-based), one step each; returns the mean of each loss part.

    With ``unlabelled`` batches and a ``teacher``, each step also learns the teacher's confident types of unlabelled
    cells (:func:`leukolens.train.unlabelled.pseudo_label_loss`), and the teacher follows the model. With
    ``average``, the weight average takes in each step. ``model`` may be wrapped in DistributedDataParallel."""
    train_mode(model)
    attribute_names = tuple(a.name for a in unwrap(model).config.attributes)
    names = ("total", "class", "attributes") + (("pseudo", "pseudo_share") if unlabelled is not None else ())
    losses = MeanLosses(batches, names)
    for batch in batches:
        parts = cell_loss(
            model(batch.images),
            batch.labels,
            batch.attributes,
            attribute_names,
            label_smoothing=config.label_smoothing,
            attribute_weight=config.attribute_weight,
        )
        if unlabelled is not None:
            parts.update(pseudo_label_loss(model, teacher.module, next(unlabelled), threshold=config.pseudo_threshold))
            parts["total"] = parts["total"] + config.pseudo_weight * parts["pseudo"]
        optimisation_step(optimizer, scheduler, parts["total"])
        if teacher is not None:
            teacher.update(unwrap(model))
        if average is not None:
            average.update(unwrap(model))
        losses.add(parts)
        if past(deadline):
            break
    return losses.means()


def _last_epoch_within_budget(config: CellOptimConfig, history: list[dict], epoch: int) -> int:
    return last_epoch_within_budget(config.epochs, config.max_minutes, history, epoch)


def build_cell_model(config: CellModelConfig, classes: tuple[str, ...], attributes: tuple) -> CellNet:
    """A cell network on an ImageNet backbone, its first stages (and with ``freeze_norm`` its statistics) fixed."""
    model = CellNet(
        CellNetConfig(classes, attributes, config.backbone, input_norm=config.input_norm), pretrained=True
    )
    if config.mix_style > 0:
        add_mix_style(model, config.mix_style)
    _freeze(model, config.freeze_blocks, norm=config.freeze_norm)
    return model.to(memory_format=torch.channels_last)


def cell_optimizer(model: CellNet, config: CellOptimConfig) -> torch.optim.Optimizer:
    """AdamW with the backbone at ``backbone_lr`` and the heads at ``lr``."""
    backbone_params = [p for p in model.backbone.parameters() if p.requires_grad]
    head_params = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    return torch.optim.AdamW(
        [{"params": backbone_params, "lr": config.backbone_lr}, {"params": head_params, "lr": config.lr}],
        weight_decay=config.weight_decay,
    )


def train_cells(config: TrainCellsConfig, *, resume: bool = False, log: Callable[[str], None] = print) -> Path:
    """Train a cell model; returns the path of the best checkpoint.

    Under ``torchrun --nproc_per_node=N`` every process calls this: they share each global batch, rank 0 alone
    validates, logs and writes the checkpoints (:mod:`leukolens.train.distributed`)."""
    ranks = setup()
    try:
        return _train_cells(config, ranks, resume=resume, log=ranks.log(log))
    finally:
        cleanup(ranks)


def _train_cells(config: TrainCellsConfig, ranks: Ranks, *, resume: bool, log: Callable[[str], None]) -> Path:
    ranks.per_rank(config.batch_size)  # a batch that does not divide among the processes: say so first
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)  # the epochs' order: the same on every rank
    generator = torch.Generator().manual_seed(ranks.seed(config.seed))  # augmentation: each rank its own
    out = Path(config.out)
    classes, attributes, schema, crop, train_samples, val_samples = training_cells(config)
    log(
        f"training on {len(train_samples):,} cells, validating on {len(val_samples):,}; {len(classes)} classes, "
        f"{len(attributes)} attribute heads; input {config.input_size} px"
    )
    stain, stain_stored = _stain(config, train_samples, crop)
    with main_first():  # rank 0 fills the crop cache, the others read it
        train_crops, val_crops = (
            load_crops(
                samples,
                size=crop.cache_size,
                context=crop.cache_context,
                stain=stain,
                cache_dir=Path(config.cache_dir),
                progress=progress(f"caching {name} crops"),
            )
            for name, samples in (("train", train_samples), ("val", val_samples))
        )
    spec = SPECS[config.backbone]
    model = build_cell_model(config, classes, attributes)
    with main_first():
        unlabelled, teacher = _self_training(config, crop, model, rng=rng, generator=generator, log=log, ranks=ranks)
    optimizer = cell_optimizer(model, config)
    steps_per_epoch = len(train_samples) // config.batch_size
    # Linear warm-up, then cosine decay to the horizon, shortened when a time budget will end training early.
    schedule, horizon = warmup_cosine(max(1, steps_per_epoch * config.epochs))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start_epoch, best_score, stale, history = 0, -1.0, 0, []
    def average_start() -> int:  # the last ``average_weights`` share of the steps the schedule now ends at
        return round(horizon[0] * (1 - config.average_weights))

    average = WeightAverage(model, start=max(1, average_start())) if config.average_weights > 0 else None
    if resume and (out / "last.pt").is_file():
        last = load_checkpoint(out / "last.pt")
        start_epoch, best_score, history = restore_run(model, optimizer, scheduler, last.state_dict, last.extra)
        stale = last.extra["stale"]
        if average is not None and "average" in last.extra:
            average.restore(last.extra["average"])
        rng = np.random.default_rng(config.seed + start_epoch)
        log(f"resuming after epoch {start_epoch} (best score so far {best_score:.4f})")
    started = time.time() - 60 * (history[-1]["minutes"] if history else 0.0)  # a resumed run keeps its clock
    deadline = started + 60 * config.max_minutes if config.max_minutes else None
    trained = wrap(model, ranks)  # DistributedDataParallel under several processes; ``model`` is its network
    for epoch in range(start_epoch, config.epochs):
        batches = cell_batches(train_crops, train_samples, config, rng=rng, generator=generator, mean=spec.mean,
                               std=spec.std, ranks=ranks)
        epoch_started = time.time()
        losses = train_one_epoch(trained, optimizer, progress(f"epoch {epoch + 1}")(batches), epoch,
                                 scheduler=scheduler, config=config, deadline=deadline, unlabelled=unlabelled,
                                 teacher=teacher, average=average)
        losses = mean_over_ranks(losses)
        train_seconds = time.time() - epoch_started
        if not ranks.is_main:  # rank 0 validates and writes; the others take its decisions
            horizon[0], stop = broadcast(None)
            if stop:
                break
            continue
        # The network validated and kept: the weight average once it has begun, else the model itself.
        kept = average.module if average is not None else model
        with all_cores(ranks):
            # One view, not the several a prediction averages (VIEWS): validation runs every epoch.
            predictions = run_model(kept, val_crops, input_size=crop.input_size, mean=spec.mean, std=spec.std,
                                    margin=crop.eval_margin, views=1)
        metrics = cell_metrics(predictions, val_samples, classes=classes, attributes=attributes)
        score = metrics["class"]["accuracy"] + metrics.get("mean_attribute_accuracy", 0.0)
        history.append(
            {
                "epoch": epoch + 1,
                "minutes": round((time.time() - started) / 60, 2),
                "train_seconds": round(train_seconds, 1),  # this epoch's steps alone
                "steps": scheduler.last_epoch,
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
                    kept,
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
            **({"average": average.state()} if average is not None else {}),
        }
        save_checkpoint(from_model(model, crop, train=train_record, extra=extra), out / "last.pt", half=False)
        last_epoch = _last_epoch_within_budget(config, history, epoch)
        horizon[0] = max(scheduler.last_epoch + 1, last_epoch * steps_per_epoch)
        if average is not None and not average.averaged:  # a time budget that shortens the run moves its start
            average.start = max(average.steps + 1, average_start())
        stop = stale >= config.patience or epoch + 1 >= last_epoch
        if stale >= config.patience:
            log(f"no improvement for {stale} epochs: stopping early")
        elif stop and last_epoch < config.epochs:
            log(f"the time budget of {config.max_minutes} minutes allows no further epoch")
        broadcast((horizon[0], stop))
        if stop:
            break
    return out / "best.pt"


def _self_training(config: TrainCellsConfig, crop: CropConfig, model: CellNet, *, rng, generator, log,
                   ranks: Ranks = SINGLE):
    """The endless unlabelled batches and the teacher of self-training, or (None, None) without unlabelled data.

    The teacher starts as the ImageNet-initialised model and follows it (a resumed run starts it afresh). Under
    several processes each rank draws its own part of each unlabelled batch, with its own order."""
    if not config.unlabelled_data:
        return None, None
    from leukolens.data.domains import white_cells

    samples = [c for path in config.unlabelled_data for c in white_cells(path, sources=config.unlabelled_sources)]
    if not samples:
        raise LeukolensError(
            f"--unlabelled-data {' '.join(config.unlabelled_data)}: no white cells"
            + (f" in sources {', '.join(config.unlabelled_sources)}" if config.unlabelled_sources else "")
        )
    crops = load_crops(samples, size=crop.cache_size, context=crop.cache_context, cache_dir=Path(config.cache_dir),
                       progress=progress("caching unlabelled crops"))
    log(f"self-training on {len(samples):,} unlabelled white cells")
    spec = SPECS[config.backbone]
    if ranks.distributed:
        rng = np.random.default_rng(ranks.seed(config.seed) + 1)  # apart from the epochs' order, which all share
    batches = unlabelled_batches(crops, config.augment, input_size=crop.input_size, margin=crop.eval_margin,
                                 batch_size=ranks.per_rank(config.batch_size), rng=rng, generator=generator,
                                 mean=spec.mean, std=spec.std)
    return batches, ModelEMA(model, momentum=config.teacher_momentum)


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
    stain = checkpoint.preprocess.stain_normalizer()
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
        # One view: the atypicality features are the upright crop's anyway, and the temperatures scale each view.
        output = run_checkpoint(model, checkpoint, crops, margin=checkpoint.crop.eval_margin, views=1)
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
    roots = [Path(d).resolve() for d in (config.data, *config.extra_data)]
    sources = [next((str(r) for r in roots if Path(s.image).resolve().is_relative_to(r)), "") for s in val_samples]
    threshold = scorer.calibrate(features[config.val_split][0], groups=sources)
    checkpoint.atypicality = scorer.as_dict()
    checkpoint.training_stain = training_stain_reference(training_crops)
    checkpoint.state_dict["temperatures"] = torch.tensor(temperatures)
    save_checkpoint(checkpoint, path)
    log(f"calibration: class temperature {temperatures[0]:.2f}, attribute temperatures "
        + ", ".join(f"{t:.2f}" for t in temperatures[1:]))
    log(
        f"atypicality ({config.atypicality_method} on {config.atypicality_features}): threshold {threshold:.3f} "
        f"flags at most 5% of any training data set's validation cells ({len(set(sources))} data sets)"
    )
    return checkpoint.atypicality
