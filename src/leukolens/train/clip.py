"""Training the image-text model on CPU: frozen towers with cached features, trained projections and temperature.

Image features are computed once per crop by the frozen image tower and kept on disk; MiniLM embeddings once per
sentence. What trains is small (two MLPs and a scalar), so an epoch over PBC takes about a second. Each cell gets a
pool of sentences (one full description in a random wording, the rest partial); each step draws one per cell,
drops duplicate sentences, and learns from the multi-positive symmetric loss. Each epoch ends with a validation
pass (class by sentences plus attribute read-out); the best epoch is kept as ``best.pt`` (with its text
prototypes), the latest as ``last.pt`` with the optimiser state for ``--resume``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from leukolens.data.captions import (
    SENTENCE_MODES,
    CaptionedCells,
    ContentCodes,
    SentencePool,
    cached_features,
    captioned_cells,
    matches_any,
    parse_combination,
    positive_matrix,
    sentence_pool,
    training_content,
)
from leukolens.data.cells import single_cell_images
from leukolens.eval.clip import attribute_accuracy, build_prototypes, classify, prototype_sentences, read_attributes
from leukolens.io import ProblemLog, read_dataset
from leukolens.io.common import LeukolensError
from leukolens.losses.contrastive import contrastive_loss
from leukolens.models.clip import (
    IMAGE_TOWERS,
    SHIPPED_CELL_MODEL,
    TEXT_TOWERS,
    ClipCheckpoint,
    ClipConfig,
    ClipModel,
    ImageTower,
    SentenceEncoder,
    build_vocabulary,
    embed_images,
    load_clip,
    save_clip,
    text_inputs,
)
from leukolens.train.loop import Batches, optimisation_step, progress, warmup_cosine
from leukolens.train.resume import restore_run


@dataclass
class ClipDataConfig:
    """What an image-text model learns from: the data set, its classes and splits, and how cells get sentences."""

    data: str
    sentences: str = "composed"  # composed, fixed (one per class) or diagnosis (one per slide diagnosis)
    classes: tuple[str, ...] = ()  # default: every class of the data set
    sentences_per_cell: int = 6
    class_probability: float = 0.5  # chance that a partial sentence names the class
    hold_out: tuple[str, ...] = ()  # combinations kept out of training, "Class|attribute=value|attribute=value"
    train_split: str = "train"
    val_split: str = "val"
    cache_dir: str = ".cache/leukolens"


@dataclass
class ClipModelConfig:
    """The two towers and the trained projections (the parts of :class:`~leukolens.models.clip.ClipConfig` that a
    run chooses; the rest comes from the data)."""

    image_tower: str = "cellnet"  # cellnet (the shipped cell model, frozen) or imagenet (plain backbone, frozen)
    cell_model: str = SHIPPED_CELL_MODEL
    text_tower: str = "minilm"  # minilm (frozen sentence encoder + MLP) or transformer (small, trained)
    embed_dim: int = 256
    hidden: int = 512
    dropout: float = 0.1


@dataclass
class ClipOptimConfig:
    """How long and how fast the projections train."""

    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    max_minutes: float = 0.0
    seed: int = 0


@dataclass
class TrainClipConfig(ClipOptimConfig, ClipModelConfig, ClipDataConfig):
    """An image-text training run: its data, model and optimisation parts, and where checkpoints go.

    One flat constructor (``TrainClipConfig(data=..., epochs=...)``) over the three parts. The loop reads none of
    them: :func:`clip_batches` takes the batch size, and :func:`train_one_epoch` its batches and optimiser.
    """

    out: str = "out/clip"


@dataclass
class _Split:
    cells: CaptionedCells
    features: np.ndarray
    held: np.ndarray  # [cells] True for cells with a held-out combination


def _prepare(config: TrainClipConfig, log: Callable[[str], None]):
    dataset = read_dataset(config.data, log=ProblemLog())
    classes = tuple(config.classes) or tuple(dataset.classes.names)
    unknown = set(classes) - set(dataset.classes.names)
    if unknown:
        raise LeukolensError(f"classes not in the data set: {sorted(unknown)}")
    if config.image_tower not in IMAGE_TOWERS:
        raise LeukolensError(f"unknown image tower {config.image_tower!r}: use one of {', '.join(IMAGE_TOWERS)}")
    if config.text_tower not in TEXT_TOWERS:
        raise LeukolensError(f"unknown text tower {config.text_tower!r}: use one of {', '.join(TEXT_TOWERS)}")
    if config.sentences not in SENTENCE_MODES:
        raise LeukolensError(f"unknown sentence mode {config.sentences!r}: use one of {', '.join(SENTENCE_MODES)}")
    schema = dataset.schema
    whole = single_cell_images(dataset)
    tower = ImageTower.for_kind(config.image_tower, cell_model=config.cell_model)
    splits = {}
    combinations = [parse_combination(t) for t in config.hold_out]
    for name, split in (("train", config.train_split), ("val", config.val_split)):
        cells = captioned_cells(dataset, classes=classes, schema=schema, split=split, whole_image=whole)
        if not len(cells):
            raise LeukolensError(f"{config.data}: no cells of {classes} in the {split!r} split")
        features = cached_features(
            tower, cells, cache_dir=Path(config.cache_dir), progress=progress(f"image features ({name})")
        )
        held = np.zeros(len(cells), dtype=bool)
        if combinations:
            held = matches_any(cells.contents, combinations)
            log(f"{name}: holding out {int(held.sum())} cells with the combinations {list(config.hold_out)}")
        splits[name] = _Split(cells, features, held)
    # Validation never sees held-out cells; training drops them after its sentence pool is drawn (train_clip).
    val = splits["val"]
    splits["val"] = _Split(val.cells.subset(~val.held), val.features[~val.held], val.held[~val.held])
    return dataset, classes, schema, tower, splits


def _prototype_classes(config: TrainClipConfig, classes: tuple[str, ...], cells: CaptionedCells) -> tuple[str, ...]:
    if config.sentences == "diagnosis":
        return tuple(sorted({d for d in cells.diagnoses if d is not None}))
    return classes


def _validate(model, encoder, split: _Split, *, config, schema, prototype_classes) -> dict:
    prototypes = build_prototypes(model, encoder, schema=schema, classes=prototype_classes, mode=config.sentences)
    images = embed_images(model, split.features)
    if config.sentences == "diagnosis":
        truth = [d for d in split.cells.diagnoses]
    else:
        truth = [dict(c)["class"] for c in split.cells.contents]
    predicted = classify(images, prototypes)
    names = prototypes["classes"]["names"]
    class_accuracy = float(np.mean([names[p] == t for p, t in zip(predicted, truth)]))
    attributes = attribute_accuracy(
        split.cells.contents, read_attributes(images, prototypes, float(model.logit_scale.detach().exp())), prototypes
    )
    score = class_accuracy + (attributes["mean"] if config.sentences == "composed" and schema else 0.0)
    return {
        "class_accuracy": class_accuracy,
        "attribute_accuracy": attributes["mean"],
        "score": score,
        "prototypes": prototypes,
    }


@dataclass
class ClipBatch:
    images: torch.Tensor  # [batch, image features] from the frozen image tower
    texts: torch.Tensor  # [sentences, 384] MiniLM embeddings or [sentences, tokens] token ids
    positive: torch.Tensor  # [batch, sentences] True where a sentence describes a cell


def _steps_per_epoch(cells: int, batch_size: int) -> int:
    return max(1, cells // batch_size)


def clip_batches(
    features: torch.Tensor,
    texts: torch.Tensor,
    pool: SentencePool,
    cell_codes: np.ndarray,
    sentence_codes: np.ndarray,
    *,
    batch_size: int,
    rng: np.random.Generator,
) -> Batches[ClipBatch]:
    """An epoch of batches of the training cells (``features`` ``[cells, image features]``), shuffled with ``rng``;
    each cell gets one of its sentences in ``pool`` (drawn with ``rng``), and a sentence drawn twice is one column,
    not its own negative. A last partial batch is dropped, unless it is the only one."""
    cells = len(cell_codes)
    steps = _steps_per_epoch(cells, batch_size)

    def make():
        order = rng.permutation(cells)
        for step in range(steps):
            chosen_cells = order[step * batch_size : (step + 1) * batch_size]
            chosen = np.array([pool.of_cell[i][rng.integers(len(pool.of_cell[i]))] for i in chosen_cells])
            sentences = np.unique(chosen)
            positive = positive_matrix(cell_codes[chosen_cells], sentence_codes[sentences])  # [batch, sentences]
            yield ClipBatch(features[chosen_cells], texts[sentences], torch.from_numpy(positive))

    return Batches(steps, make)


def train_one_epoch(
    model: ClipModel,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[ClipBatch],
    epoch: int,
    *,
    scheduler,
) -> dict[str, float]:
    """One pass over ``batches`` (epoch ``epoch``, 0-based), one step each; returns the mean of each loss part."""
    model.train()
    steps = len(batches)
    totals = {"total": 0.0, "image_to_text": 0.0, "text_to_image": 0.0}
    for batch in batches:
        parts = contrastive_loss(
            model.encode_image(batch.images), model.encode_text(batch.texts), batch.positive, model.logit_scale
        )
        optimisation_step(optimizer, scheduler, parts["total"])
        model.clamp_scale()
        for name in totals:  # each step adds its share: the sums of the recorded histories, bit for bit
            totals[name] += parts[name].item() / steps
    return totals


def train_clip(config: TrainClipConfig, *, resume: bool = False, log: Callable[[str], None] = print) -> Path:
    """Train an image-text model; returns the path of the best checkpoint."""
    started_at = time.time()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    out = Path(config.out)
    dataset, classes, schema, tower, splits = _prepare(config, log)
    timing = {"features_minutes": round((time.time() - started_at) / 60, 3)}
    train, val = splits["train"], splits["val"]
    contents = training_content(train.cells, config.sentences)
    pool = sentence_pool(
        contents,
        mode=config.sentences,
        schema=schema,
        per_cell=config.sentences_per_cell,
        seed=config.seed,
        class_probability=config.class_probability,
    )
    if train.held.any():
        # The pool is drawn over every training cell first, so the other cells' sentences (and their cached
        # embeddings) are those of a run without held-out combinations; then the held-out cells go.
        keep = np.flatnonzero(~train.held)
        used = sorted({j for i in keep for j in pool.of_cell[i]})
        position = {j: n for n, j in enumerate(used)}
        pool = SentencePool(
            [pool.texts[j] for j in used],
            [pool.contents[j] for j in used],
            [[position[j] for j in pool.of_cell[i]] for i in keep],
        )
        contents = [contents[i] for i in keep]
        train = _Split(train.cells.subset(~train.held), train.features[keep], train.held[keep])
    prototype_classes = _prototype_classes(config, classes, train.cells)
    described_classes = sorted({dict(c)["class"] for c in train.cells.contents if len(c) > 1})
    log(
        f"training on {len(train.cells):,} cells with {len(pool.texts):,} distinct sentences ({config.sentences}), "
        f"validating on {len(val.cells):,}; image tower {config.image_tower} ({train.features.shape[1]} features), "
        f"text tower {config.text_tower}"
    )
    encoder = SentenceEncoder(Path(config.cache_dir)) if config.text_tower == "minilm" else None
    vocabulary: tuple[str, ...] = ()
    if config.text_tower == "transformer":
        extra = prototype_sentences(schema=schema, classes=prototype_classes, mode=config.sentences)
        vocabulary = build_vocabulary(
            pool.texts
            + [s for texts in extra["classes"].values() for s in texts]
            + [s for values in extra["attributes"].values() for texts in values.values() for s in texts]
        )
    model_config = ClipConfig(
        image_tower=tower.config,
        image_features=int(train.features.shape[1]),
        text_tower=config.text_tower,
        embed_dim=config.embed_dim,
        hidden=config.hidden,
        dropout=config.dropout,
        vocabulary=vocabulary,
        schema=schema.name if schema else None,
        classes=tuple(prototype_classes),
        sentences=config.sentences,
    )
    encoding_started = time.time()
    texts = text_inputs(model_config, pool.texts, encoder)  # [sentences, 384] or [sentences, tokens]
    timing["sentences_minutes"] = round((time.time() - encoding_started) / 60, 3)
    codes = ContentCodes(contents + pool.contents)
    cell_codes, sentence_codes = codes.encode(contents), codes.encode(pool.contents)
    features = torch.from_numpy(train.features)

    model = ClipModel(model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = _steps_per_epoch(len(contents), config.batch_size)
    schedule, _ = warmup_cosine(steps_per_epoch * config.epochs, max_warmup=50)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start_epoch, best_score, history, spent = 0, -1.0, [], 0.0
    if resume and (out / "last.pt").is_file():
        last = load_clip(out / "last.pt")
        start_epoch, best_score, history = restore_run(model, optimizer, scheduler, last.state_dict, last.extra)
        spent = history[-1]["minutes"] if history else 0.0
        rng = np.random.default_rng(config.seed + start_epoch)
        log(f"resuming after epoch {start_epoch} (best score so far {best_score:.4f})")
    clock = time.time() - 60 * spent
    for epoch in range(start_epoch, config.epochs):
        batches = clip_batches(features, texts, pool, cell_codes, sentence_codes, batch_size=config.batch_size, rng=rng)
        totals = train_one_epoch(model, optimizer, progress(f"epoch {epoch + 1}")(batches), epoch, scheduler=scheduler)
        validation = _validate(
            model, encoder, val, config=config, schema=schema, prototype_classes=prototype_classes
        )
        minutes = round((time.time() - clock) / 60, 3)
        history.append(
            {
                "epoch": epoch + 1,
                "minutes": minutes,
                **{f"loss_{k}": v for k, v in totals.items()},
                "val_class_accuracy": validation["class_accuracy"],
                "val_attribute_accuracy": validation["attribute_accuracy"],
                "temperature": float(1 / model.logit_scale.detach().exp()),
            }
        )
        # Classes whose training cells carry attribute labels: describe states attributes only for these.
        validation["prototypes"]["described_classes"] = described_classes
        improved = validation["score"] > best_score
        log(
            f"epoch {epoch + 1}/{config.epochs}: loss {totals['total']:.3f}, val class accuracy by sentences "
            f"{validation['class_accuracy']:.4f}, attribute read-out {validation['attribute_accuracy']:.4f}, "
            f"temperature {history[-1]['temperature']:.4f}{' (best)' if improved else ''}"
        )
        train_record = {"config": asdict(config), "history": history, "timing": timing,
                        "cells": len(contents), "sentences": len(pool.texts)}
        if improved:
            best_score = validation["score"]
            save_clip(
                ClipCheckpoint(
                    model_config,
                    model.state_dict(),
                    validation["prototypes"],
                    metrics={"val": {k: v for k, v in validation.items() if k != "prototypes"}, "epoch": epoch + 1},
                    train=train_record,
                ),
                out / "best.pt",
            )
        save_clip(
            ClipCheckpoint(
                model_config,
                model.state_dict(),
                validation["prototypes"],
                train=train_record,
                extra={
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "best_score": best_score,
                    "history": history,
                },
            ),
            out / "last.pt",
            half=False,
        )
        if config.max_minutes and minutes >= config.max_minutes:
            log(f"time budget of {config.max_minutes} minutes reached")
            break
    log(f"done in {(time.time() - started_at) / 60:.1f} minutes (features included); best: {out / 'best.pt'}")
    return out / "best.pt"
