"""Training the field detector on CPU: fields decoded once, random windows, a step budget, atomic checkpoints.

Every field is decoded and letterboxed (longer side ``input_size``) once and kept in memory. A training sample is a
random square window of a field at a random zoom, flipped and turned, with stain and colour jitter: the network is
fully convolutional, so it trains on windows and runs on whole fields. An epoch is a fixed number of steps; each
ends with a validation pass on whole fields (COCO mAP50), the best kept as ``best.pt`` (float16, with the input
size, normalisation, classes and counting threshold inside), the latest as ``last.pt`` with the optimiser for
``--resume``.

Extra data sets (``extra_data``) add their training fields; a field whose source the primary data set also has
(TXL-PBC re-annotates BCCD's images) is left out, so that no image appears twice with two different labellings and
no primary validation or test image leaks into training. ``extra_classes`` limits what the extra fields teach: TXL-PBC
boxes every red cell (23 a BCCD field in its re-annotation) where BCCD boxes about half (11.6), so with
``extra_classes=("WBC", "Platelets")`` red cells are learnt from BCCD's convention only (the extra fields' red-cell
channel is neither trained towards boxes nor away from them).

Sparse annotation (``annotated_fraction`` < 1, :mod:`leukolens.data.sparse`): the training and validation fields keep
their labels only inside a random rectangle of that share of their area. ``sparse_mode`` says how training treats
the rest: ``naive`` as background, ``masked`` not at all (the heatmap loss is masked outside the rectangle), and
``pseudo`` through the confident detections of an EMA teacher (:mod:`leukolens.losses.pseudo`). Validation judges
detections inside the rectangles only, whatever the mode.

Domain experiments: ``classes`` trains a subset of the data set's classes (e.g. WBC only), ``sources`` keeps only
the primary fields of these sources (leave-one-source-out on TXL-PBC), ``stain_norm`` normalises every field's
stain to a reference field (stored in the checkpoint, applied again at detection), and ``augment`` carries the
stain, blur, noise and zoom augmentation (presets in :data:`leukolens.data.fields.FIELD_AUGMENT_PRESETS`).

Under ``torchrun --nproc_per_node=N`` the same run is shared by N processes (:mod:`leukolens.train.distributed`):
each draws ``batch_size / N`` windows of every step with its own random stream (windows are drawn independently,
so N such parts are a batch as one process draws it), rank 0 validates and writes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from leukolens.data.augment import colour_jitter, hed_jitter, normalize
from leukolens.data.fields import (
    FieldArrays,
    FieldAugmentConfig,
    augment_field,
    degrade,
    letterbox,
    load_field_arrays,
)
from leukolens.data.sparse import SPARSE_MODES, sparsify
from leukolens.data.stain import fit_reference, normalizer_from_reference
from leukolens.eval.detection import evaluate_detections
from leukolens.io import ProblemLog, read_dataset
from leukolens.io.common import LeukolensError
from leukolens.losses.detection import annotated_mask, centernet_targets, detection_loss
from leukolens.losses.pseudo import (
    PseudoLabelConfig,
    pseudo_label_loss,
    select_pseudo_labels,
    update_prototypes,
)
from leukolens.models.backbones import SPECS
from leukolens.models.detector import (
    CenterNet,
    Detections,
    DetectorConfig,
    PeakOutputs,
    checkpoint_from_model,
    decode,
    load_detector,
    save_detector,
)
from leukolens.records import BLOOD_CELLS, Field, Vocabulary, known_vocabulary
from leukolens.train.distributed import (
    SINGLE,
    Ranks,
    all_cores,
    broadcast,
    cleanup,
    mean_over_ranks,
    setup,
    unwrap,
    wrap,
)
from leukolens.train.ema import ModelEMA
from leukolens.train.loop import (
    Batches,
    MeanLosses,
    freeze,
    optimisation_step,
    past,
    progress,
    train_mode,
    warmup_cosine,
)
from leukolens.train.resume import restore_run


@dataclass
class DetectorDataConfig:
    """What the detector learns from: the data sets, the classes each teaches, sparse labels, stain, augmentation."""

    data: str
    extra_data: tuple[str, ...] = ()
    extra_classes: tuple[str, ...] = ()  # classes the extra data teaches (empty: all); see train_detector
    # Bring each extra data set's (and source's) fields to the primary data set's white-cell size before windows
    # are cut: what `detect` does at inference from a field's red cells, so training and use see one scale.
    match_scale: bool = False
    primary_weight: float = 0.5  # share of each batch drawn from the primary data set when extra data is given
    val_fields: int = 0  # validate on at most this many primary fields (0: all)
    extra_val_fields: int = 40  # and this many from the extra data sets' val splits
    augment: FieldAugmentConfig = field(default_factory=FieldAugmentConfig)
    classes: tuple[str, ...] = ()  # train only these of the data set's classes (empty: all)
    sources: tuple[str, ...] = ()  # keep only the primary data set's fields from these sources (empty: all)
    # Leave every field of these sources out of every data set, training and validation alike: a source held out
    # entirely, as the leave-one-source-out benchmark needs (values of ``domain_key``).
    exclude_sources: tuple[str, ...] = ()
    domain_key: str = "source"  # the Domain field ``sources`` names: source, microscope, camera, magnification
    annotated_fraction: float = 1.0  # < 1: simulate sparse labels (data/sparse.py)
    sparse_mode: str = "masked"  # naive | masked | pseudo
    stain_norm: str = "none"  # none | reinhard | macenko, to the first primary training field


@dataclass
class DetectorModelConfig:
    """The network: backbone, input and output scale, neck width, what stays frozen."""

    backbone: str = "efficientnet_lite0"
    input_size: int = 512  # longer side of a field in input pixels
    stride: int = 8  # 4 is finer for platelets but trains 1.7x slower on CPU (docs/detector.md)
    neck_channels: int = 64
    freeze_blocks: int = 1  # the stem and the first block keep their ImageNet weights
    pretrained: bool = True  # ImageNet backbone weights (False in tests)


@dataclass
class DetectorOptimConfig:
    """How long and how fast the detector trains, and how pseudo-labels weigh in (sparse mode ``pseudo``)."""

    epochs: int = 20
    steps_per_epoch: int = 60
    batch_size: int = 8
    lr: float = 2e-3
    backbone_lr: float = 1e-3
    weight_decay: float = 1e-4
    max_minutes: float = 0.0  # stop after this long (0: no limit); the cosine schedule shortens to fit
    pseudo: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    seed: int = 0
    threads: int = 0  # torch threads (0: torch's default, one per core)


@dataclass
class TrainDetectorConfig(DetectorOptimConfig, DetectorModelConfig, DetectorDataConfig):
    """A detector training run: its data, model and optimisation parts, and where checkpoints go.

    One flat constructor (``TrainDetectorConfig(data=..., epochs=...)``) over the three parts; each function below
    takes the part it reads.
    """

    out: str = "out/detector"


def _freeze(model: CenterNet, blocks: int) -> None:
    freeze(model, [model.taps.stem] + ([model.taps.stages[0]] if blocks >= 1 else []))


def _every(fields: list[Field], limit: int) -> list[Field]:
    """At most ``limit`` fields, evenly spread (all when ``limit`` is 0)."""
    if not limit or len(fields) <= limit:
        return fields
    return [fields[i] for i in np.linspace(0, len(fields) - 1, limit).round().astype(int)]


def training_fields(config: TrainDetectorConfig, log: Callable[[str], None]):
    """(classes, primary train, extra train, validation sets by name)."""
    primary = read_dataset(config.data, log=ProblemLog())
    if config.classes:
        unknown = set(config.classes) - set(primary.classes.names)
        if unknown:
            raise LeukolensError(f"--classes names classes {config.data} does not have: {sorted(unknown)}")
    classes = known_vocabulary(tuple(config.classes) or primary.classes.names, "detector")
    if config.sparse_mode not in SPARSE_MODES:
        raise LeukolensError(f"unknown sparse mode {config.sparse_mode!r}: use one of {', '.join(SPARSE_MODES)}")

    def held_in(fields: list[Field]) -> list[Field]:
        return [f for f in fields if getattr(f.domain, config.domain_key) not in config.exclude_sources]

    def chosen(fields: list[Field]) -> list[Field]:
        if not config.sources:
            return held_in(fields)
        return held_in([f for f in fields if getattr(f.domain, config.domain_key) in config.sources])

    train = chosen(primary.splits.get("train", []))
    val = {Path(config.data).name: _every(chosen(primary.splits.get("val", [])), config.val_fields)}
    if not train or not next(iter(val.values())):
        raise LeukolensError(
            f"{config.data}: needs fields in both the 'train' and 'val' splits"
            + (f" from sources {', '.join(config.sources)}" if config.sources else "")
        )
    if config.annotated_fraction < 1:
        train = sparsify(train, config.annotated_fraction, mode=config.sparse_mode, seed=config.seed)
        # Validation labels are just as sparse; it judges detections inside the rectangles, whatever the mode.
        val = {n: sparsify(fs, config.annotated_fraction, mode="masked", seed=config.seed) for n, fs in val.items()}
        log(f"sparse labels: {config.annotated_fraction:.0%} of each field annotated, mode {config.sparse_mode}; "
            f"{sum(len(f.cells) for f in train):,} training boxes kept")
    sources = {f.domain.source for f in chosen(primary.fields)}  # the sources the primary set brings
    extra: list[tuple[list[Field], tuple[str, ...]]] = []  # (training fields, classes they teach) per data set
    taught_by_val: dict[str, tuple[str, ...]] = {}
    for path in config.extra_data:
        dataset, taught = _extra_dataset(path, classes, config.extra_classes)
        kept = held_in([f for f in dataset.splits.get("train", []) if f.domain.source not in sources])
        if not kept:
            log(f"{path}: no training fields left (sources held out: {', '.join(config.exclude_sources)})")
            continue
        if config.annotated_fraction < 1:
            kept = sparsify(kept, config.annotated_fraction, mode=config.sparse_mode, seed=config.seed)
        log(f"{path}: {len(kept)} training fields teaching {', '.join(taught) or 'every class'} (left out "
            f"{len(dataset.splits.get('train', [])) - len(kept)} from sources the primary data set has: "
            f"{', '.join(sorted(s for s in sources if s))})")
        extra.append((kept, taught))
        val_fields = held_in([f for f in dataset.splits.get("val", []) if f.domain.source not in sources])
        if config.annotated_fraction < 1:
            val_fields = sparsify(val_fields, config.annotated_fraction, mode="masked", seed=config.seed)
        if config.extra_val_fields and val_fields:
            name = Path(path).name
            name = f"{name} (extra)" if name in val else name  # the primary set's other sources as extra data
            val[name] = _every(val_fields, config.extra_val_fields)
            taught_by_val[name] = taught
    return classes, train, extra, val, taught_by_val


def _extra_dataset(path: str, classes, extra_classes: tuple[str, ...]):
    """An extra data set and the detector classes it teaches.

    A data set teaches only classes it has: one that boxes white cells alone (a WBC-only export of synthetic
    fields) teaches WBC, whatever ``extra_classes`` asks, since its unboxed red cells and platelets are no
    evidence of their absence. A data set that types its white cells (Chula: Neutrophil, Lymphocyte, ...) and boxes
    nothing else teaches ``WBC`` only: its cells become WBC boxes. A data set with slides but one split is split by
    slide (:mod:`leukolens.data.domains`), never by field.
    """
    import dataclasses

    from leukolens.data.domains import canonical_class, slide_splits

    dataset = read_dataset(path, log=ProblemLog())
    if set(classes.names) & set(dataset.classes.names):
        asked = tuple(extra_classes) or classes.names
        taught = tuple(c for c in asked if c in dataset.classes.names)
        return dataset, (() if taught == classes.names else taught)
    if "WBC" not in classes.names or not all(canonical_class(c) for c in dataset.classes.names):
        raise LeukolensError(f"{path}: shares no class with the detector ({', '.join(classes.names)})")
    by_slide = {}
    if len({f.split for f in dataset.fields}) <= 1:
        pairs = [(f.domain.sample_id, c.label) for f in dataset.fields for c in f.cells]
        by_slide = slide_splits([s for s, _ in pairs], [label for _, label in pairs])
    fields = [
        dataclasses.replace(
            f,
            cells=[dataclasses.replace(c, label="WBC") for c in f.cells],
            split=by_slide.get(f.domain.sample_id, f.split),
        )
        for f in dataset.fields
    ]
    return dataclasses.replace(dataset, fields=fields, classes=classes), ("WBC",)


def make_batch(
    samples: list[FieldArrays],
    config: TrainDetectorConfig,
    rng: np.random.Generator,
    generator: torch.Generator,
    mean,
    std,
) -> tuple[torch.Tensor, list[np.ndarray], list[np.ndarray], list[np.ndarray | None]]:
    """Augmented, normalised windows ``[batch, 3, window, window]`` with their boxes, labels and annotated regions
    (None for a fully annotated field)."""
    images, boxes, labels, regions = [], [], [], []
    for sample in samples:
        image, b, lab, region = augment_field(sample, config.augment, rng)
        images.append(image)
        boxes.append(b)
        labels.append(lab)
        regions.append(region)
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255  # [batch, 3, window, window]
    a = config.augment
    if a.stain_sigma:
        batch = hed_jitter(batch, a.stain_sigma, generator)
    batch = colour_jitter(batch, a.brightness, a.contrast, a.saturation, generator)
    if a.blur or a.noise or a.hue or a.grayscale:
        batch = degrade(batch.clamp(0, 1), a, generator)
    return normalize(batch.clamp(0, 1), mean, std), boxes, labels, regions


@torch.inference_mode()
def detect_arrays(
    model: CenterNet, fields: list[Field], input_size: int, mean, std, stain: Callable | None = None,
    scales: dict[str, float] | None = None,
) -> list[Detections]:
    """Detections in original pixels for whole fields, with the network in eval mode (validation); ``scales``:
    field id -> factor on ``input_size`` (the working scale of :func:`leukolens.data.fields.working_scales`)."""
    from PIL import Image

    from leukolens.data.cells import load_image

    was_training = model.training
    network = PeakOutputs(model.eval())
    out = []
    for f in fields:
        image = load_image(f.image)
        if stain is not None:
            image = Image.fromarray(stain(np.asarray(image)))
        canvas, _, box = letterbox(image, size=round(input_size * (scales or {}).get(f.id, 1.0)))
        x = normalize(torch.from_numpy(canvas).permute(2, 0, 1)[None].float() / 255, mean, std)
        peaks, size, offset = (o.numpy() for o in network(x.contiguous(memory_format=torch.channels_last)))
        found = decode(peaks, size, offset, stride=model.config.stride)[0]
        out.append(Detections(box.to_original(found.boxes), found.scores, found.labels))
    if was_training:
        train_mode(model)
    return out


def red_cell_diameter(
    fields: list[Field], detections: list[Detections], classes: Vocabulary, size: int
) -> float | None:
    """Median diameter (sqrt of width x height) of the confident red cells the detector finds wholly inside fields
    letterboxed to ``size``: the scale it learnt, which ``detect`` brings every field to (predict/scale.py)."""
    if "RBC" not in classes.names:
        return None
    rbc, found = classes.names.index("RBC"), []
    for f, d in zip(fields, detections):
        scale = size / max(f.width, f.height)
        boxes = d.boxes[(d.labels == rbc) & (d.scores >= 0.45)]
        inside = (boxes[:, 0] > 2) & (boxes[:, 1] > 2) & (boxes[:, 2] < f.width - 2) & (boxes[:, 3] < f.height - 2)
        boxes = boxes[inside]
        found.extend(np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) * scale)
    return float(np.median(found)) if found else None


def choose_threshold(fields: list[Field], detections: list[Detections], classes: Vocabulary) -> float:
    """The score threshold whose counts per field are closest to the truth (summed MAE over classes)."""
    best, best_error = 0.3, math.inf
    for threshold in np.arange(0.1, 0.71, 0.05):
        error = 0.0
        for k, name in enumerate(classes.names):
            true = np.array([sum(c.label == name for c in f.cells) for f in fields])
            found = np.array([int(((d.labels == k) & (d.scores >= threshold)).sum()) for d in detections])
            error += np.abs(found - true).mean()
        if error < best_error - 1e-9:
            best, best_error = float(round(threshold, 2)), error
    return best


@dataclass
class FieldBatch:
    images: torch.Tensor  # [batch, 3, window, window], augmented and normalised, channels-last
    boxes: list[np.ndarray]  # per window [n, 4] xyxy, input pixels
    labels: list[np.ndarray]  # per window [n] class indices
    regions: list[np.ndarray | None]  # per window its annotated rectangle (None: fully annotated)
    taught: torch.Tensor | None  # [batch, classes] 1 where the window's data set teaches the class (None: all)


def field_batches(
    pools: list[list[FieldArrays]],
    weights: list[float],
    config: TrainDetectorConfig,
    *,
    num_classes: int,
    rng: np.random.Generator,
    generator: torch.Generator,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    ranks: Ranks = SINGLE,
) -> Batches[FieldBatch]:
    """``steps_per_epoch`` batches of windows, each window's field drawn from the pools with the given weights;
    under several processes, this rank's part of each batch (drawn with this rank's ``rng``)."""
    batch_size = ranks.per_rank(config.batch_size)

    def make():
        for _ in range(config.steps_per_epoch):
            which = rng.choice(len(pools), size=batch_size, p=weights)
            samples = [pools[p][int(rng.integers(len(pools[p])))] for p in which]
            images, boxes, labels, regions = make_batch(samples, config, rng, generator, mean, std)
            taught = None
            if any(sample.taught is not None for sample in samples):
                every = np.ones(num_classes, np.float32)
                taught = torch.from_numpy(
                    np.stack([every if s.taught is None else s.taught.astype(np.float32) for s in samples])
                )
            yield FieldBatch(images.contiguous(memory_format=torch.channels_last), boxes, labels, regions, taught)

    return Batches(config.steps_per_epoch, make)


def train_one_epoch(
    model: CenterNet,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[FieldBatch],
    epoch: int,
    *,
    scheduler,
    pseudo: PseudoLabelConfig,
    teacher: dict | None = None,
    deadline: float | None = None,
) -> dict[str, float]:
    """One step per batch (epoch ``epoch``, 0-based); returns the mean of each loss part.

    ``teacher`` (sparse mode ``pseudo``): ``{"ema": ModelEMA, "prototypes": [classes, c] tensor}``, updated here.
    ``model`` may be wrapped in DistributedDataParallel.
    """
    train_mode(model)
    network = unwrap(model)
    losses = MeanLosses(batches)
    stride = network.config.stride
    for batch in batches:
        output = model(batch.images)
        output_size = tuple(output.heatmap.shape[-2:])
        targets = centernet_targets(
            batch.boxes, batch.labels, num_classes=len(network.config.classes), output_size=output_size, stride=stride
        )
        annotated = None
        if any(r is not None for r in batch.regions):  # sparsely annotated fields: the rest is not negative
            annotated = annotated_mask(batch.regions, output_size=output_size, stride=stride)
        parts = detection_loss(output, targets, taught=batch.taught, annotated=annotated)
        if teacher is not None and annotated is not None:
            parts.update(_pseudo_parts(network, teacher, batch, output, annotated, pseudo, step=scheduler.last_epoch))
            parts["total"] = parts["total"] + pseudo.weight * parts["pseudo"]
        optimisation_step(optimizer, scheduler, parts["total"], parameters=model.parameters(), max_norm=10.0)
        if teacher is not None:
            teacher["ema"].update(network)
        losses.add(parts)
        if past(deadline):
            break
    return losses.means()


def _pseudo_parts(model, teacher, batch: FieldBatch, output, annotated, pseudo: PseudoLabelConfig, *, step) -> dict:
    """The pseudo-label loss of one batch (zero before the warm-up ends or when the teacher finds nothing)."""
    stride = model.config.stride
    zero = output.heatmap.sum() * 0
    use_prototypes = pseudo.min_prototype_similarity > 0
    if step < pseudo.warmup_steps and not use_prototypes:
        return {"pseudo": zero, "pseudo_labels": torch.tensor(0.0)}
    network = teacher["ema"].module
    with torch.no_grad():
        features = network.features(batch.images)
        teacher_output = network.heads(features)
        if use_prototypes:  # labelled cells (inside the annotated regions) keep the class prototypes current
            teacher["prototypes"] = update_prototypes(
                teacher["prototypes"], features, batch.boxes, batch.labels, stride=stride,
                momentum=pseudo.prototype_momentum,
            )
    if step < pseudo.warmup_steps:
        return {"pseudo": zero, "pseudo_labels": torch.tensor(0.0)}
    outside = 1 - annotated
    found = select_pseudo_labels(
        teacher_output, outside, stride=stride, config=pseudo, taught=batch.taught, features=features,
        prototypes=teacher["prototypes"] if use_prototypes else None,
    )
    if not found.count:
        return {"pseudo": zero, "pseudo_labels": torch.tensor(0.0)}
    loss = pseudo_label_loss(output, found, outside, stride=stride, taught=batch.taught)
    return {"pseudo": loss["total"], "pseudo_labels": torch.tensor(float(found.count))}


def train_detector(config: TrainDetectorConfig, *, resume: bool = False, log: Callable[[str], None] = print) -> Path:
    """Train a detector; returns the path of the best checkpoint.

    Under ``torchrun --nproc_per_node=N`` every process calls this (``threads`` is then each process's; default
    ``cores // N``): they share each batch, rank 0 alone validates, logs and writes the checkpoints."""
    ranks = setup(threads=config.threads)
    try:
        return _train_detector(config, ranks, resume=resume, log=ranks.log(log))
    finally:
        cleanup(ranks)


def _train_detector(config: TrainDetectorConfig, ranks: Ranks, *, resume: bool, log: Callable[[str], None]) -> Path:
    ranks.per_rank(config.batch_size)  # a batch that does not divide among the processes: say so first
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    rng = np.random.default_rng(ranks.seed(config.seed))  # windows and their augmentation: each rank its own
    generator = torch.Generator().manual_seed(ranks.seed(config.seed))
    out = Path(config.out)
    classes, train, extra, val, taught_by_val = training_fields(config, log)
    if classes.names != BLOOD_CELLS.names:
        log(f"classes: {', '.join(classes.names)}")
    size = config.input_size
    stain_reference, stain = {}, None
    if config.stain_norm != "none":
        from leukolens.data.cells import load_image

        reference = np.asarray(load_image(train[0].image))
        stain_reference = {"method": config.stain_norm, "reference": fit_reference(config.stain_norm, reference)}
        stain = normalizer_from_reference(stain_reference)
        log(f"stain normalisation: {config.stain_norm} to {train[0].id}")
    scales = None
    if config.match_scale:
        from leukolens.data.fields import working_scales

        scales = working_scales(train, [fields for fields, _ in extra] + list(val.values())[1:], size=size)
        shown = sorted({round(v, 2) for v in scales.values()})
        log(f"working scale: extra fields letterboxed at {', '.join(f'{v:g}' for v in shown)} x {size} px")
    pools = [load_field_arrays(train, classes, size=size, stain=stain, progress=progress("decoding train fields"))]
    weights = [1.0]
    if extra:
        unknown = set(config.extra_classes) - set(classes.names)
        if unknown:
            raise LeukolensError(f"--extra-classes names classes the detector does not have: {sorted(unknown)}")
        total = sum(len(fields) for fields, _ in extra)
        for fields, taught in extra:
            pools.append(
                load_field_arrays(
                    fields, classes, size=size, taught=taught, stain=stain,
                    progress=progress("decoding extra fields"), scales=scales,
                )
            )
            # The extra data sets share their part of each batch in proportion to their fields.
            weights.append((1 - config.primary_weight) * len(fields) / max(1, total))
        weights[0] = config.primary_weight
    weights = list(np.array(weights) / np.sum(weights))
    log(
        f"training on {sum(len(p) for p in pools):,} fields ({', '.join(str(len(p)) for p in pools)}), validating on "
        + ", ".join(f"{name} {len(fields)}" for name, fields in val.items())
        + f"; windows {config.augment.window} px of fields at {size} px, batch {config.batch_size}"
    )
    spec = SPECS[config.backbone]
    model = CenterNet(
        DetectorConfig(classes.names, config.backbone, config.neck_channels, config.stride),
        pretrained=config.pretrained,
    )
    _freeze(model, config.freeze_blocks)
    model = model.to(memory_format=torch.channels_last)
    teacher = None
    if config.sparse_mode == "pseudo" and config.annotated_fraction < 1:
        teacher = {
            "ema": ModelEMA(model, momentum=config.pseudo.momentum),
            "prototypes": torch.zeros(len(classes), config.neck_channels),
        }
    backbone = [p for p in model.taps.parameters() if p.requires_grad]
    rest = [p for n, p in model.named_parameters() if not n.startswith("taps.")]
    optimizer = torch.optim.AdamW(
        [{"params": backbone, "lr": config.backbone_lr}, {"params": rest, "lr": config.lr}],
        weight_decay=config.weight_decay,
    )
    total_steps = max(1, config.steps_per_epoch * config.epochs)
    # Linear warm-up, then cosine decay to 2% at the horizon, shortened when the time budget will end training early.
    schedule, horizon = warmup_cosine(total_steps, floor=0.02)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start_epoch, best_score, history = 0, -1.0, []
    if resume and (out / "last.pt").is_file():
        last = load_detector(out / "last.pt")
        start_epoch, best_score, history = restore_run(model, optimizer, scheduler, last.state_dict, last.extra)
        if teacher is not None and "teacher" in last.extra:
            teacher["ema"].module.load_state_dict(last.extra["teacher"])
            teacher["ema"].updates = scheduler.last_epoch
        horizon[0] = last.extra.get("horizon", total_steps)
        rng = np.random.default_rng(ranks.seed(config.seed + start_epoch))
        log(f"resuming after epoch {start_epoch} (best score so far {best_score:.4f})")
    started = time.time() - 60 * (history[-1]["minutes"] if history else 0.0)
    deadline = started + 60 * config.max_minutes if config.max_minutes else None
    # DistributedDataParallel under several processes; ``model`` is its network. At stride 8 the stride-4 lateral
    # and its smoothing take no part.
    trained = wrap(model, ranks, unused_parameters=model.first_level > 0)
    for epoch in range(start_epoch, config.epochs):
        batches = field_batches(pools, weights, config, num_classes=len(classes), rng=rng, generator=generator,
                                mean=spec.mean, std=spec.std, ranks=ranks)
        epoch_started = time.time()
        losses = train_one_epoch(trained, optimizer, progress(f"epoch {epoch + 1}")(batches), epoch,
                                 scheduler=scheduler, pseudo=config.pseudo, teacher=teacher, deadline=deadline)
        losses = mean_over_ranks(losses)
        train_seconds = time.time() - epoch_started
        if not ranks.is_main:  # rank 0 validates and writes; the others take its decisions
            horizon[0], stop = broadcast(None)
            if stop:
                break
            continue
        train_minutes = (time.time() - started) / 60
        metrics, scores, detections = {}, [], {}
        for name, fields in val.items():
            with all_cores(ranks):
                detections[name] = detect_arrays(model, fields, size, spec.mean, spec.std, stain, scales=scales)
            metrics[name] = evaluate_detections(fields, detections[name], classes, threshold=0.3)
            scored = taught_by_val.get(name) or classes.names  # an extra data set scores only what it teaches
            scores.append(float(np.mean([metrics[name]["per_class"][c]["AP50"] or 0.0 for c in scored])))
        score = float(np.mean(scores))
        primary_name = next(iter(val))
        history.append(
            {
                "epoch": epoch + 1,
                "minutes": round((time.time() - started) / 60, 2),
                "train_minutes": round(train_minutes, 2),
                "train_seconds": round(train_seconds, 1),  # this epoch's steps alone
                "steps": scheduler.last_epoch,
                **{k: round(v, 4) for k, v in losses.items()},
                **{f"val_mAP50/{n}": round(m["mAP50"] or 0.0, 4) for n, m in metrics.items()},
                f"val_mAP/{primary_name}": round(metrics[primary_name]["mAP"] or 0.0, 4),
            }
        )
        improved = score > best_score
        log(
            f"epoch {epoch + 1}/{config.epochs} ({history[-1]['minutes']:.1f} min): loss {losses['total']:.3f}, "
            + ", ".join(
                f"{n} mAP50 {m['mAP50']:.4f} ({classes.names[0]} {m['per_class'][classes.names[0]]['AP50'] or 0:.3f})"
                for n, m in metrics.items()
            )
            + (" (best)" if improved else "")
        )
        record = {**asdict(config), "history": history}
        if improved:
            best_score = score
            threshold = choose_threshold(val[primary_name], detections[primary_name], classes)
            save_detector(
                checkpoint_from_model(
                    model, input_size=size, score_threshold=threshold, stain=stain_reference,
                    metrics={
                        "val": metrics,
                        "rbc_diameter": red_cell_diameter(val[primary_name], detections[primary_name], classes, size),
                    },
                    train=record,
                ),
                out / "best.pt",
            )
        extra_state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "best_score": best_score,
            "history": history,
            "horizon": horizon[0],
        }
        if teacher is not None:
            extra_state["teacher"] = teacher["ema"].module.state_dict()
        save_detector(
            checkpoint_from_model(model, input_size=size, stain=stain_reference, train=record, extra=extra_state),
            out / "last.pt",
            half=False,
        )
        last_epoch = config.epochs
        if config.max_minutes:
            per_epoch = history[-1]["minutes"] / len(history)
            room = int((config.max_minutes - history[-1]["minutes"]) / per_epoch) if per_epoch > 0 else 0
            last_epoch = max(epoch + 1, min(config.epochs, epoch + 1 + room))
            horizon[0] = max(scheduler.last_epoch + 1, last_epoch * config.steps_per_epoch)
        stop = epoch + 1 >= last_epoch or (deadline is not None and time.time() > deadline)
        if stop and last_epoch < config.epochs:
            log(f"the time budget of {config.max_minutes} minutes allows no further epoch")
        broadcast((horizon[0], stop))
        if stop:
            break
    return out / "best.pt"
