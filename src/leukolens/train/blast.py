"""Fit the blast scorer of a cell checkpoint from folders of real blasts (``leukolens train blast``).

The cell network is not trained here: it reads the example blasts, normal training cells and normal validation
cells, and :func:`leukolens.models.blast.fit_blast_scorer` fits the small combination on its outputs::

    >>> from leukolens.train.blast import TrainBlastConfig, fit_blast
    >>> report = fit_blast(TrainBlastConfig(checkpoint="cellnet.pt", examples=("blasts/",), data="pbc/"))

Cells are read as ``predict cells`` reads them (a single-cell image whole, the checkpoint's crop and stain), so the
example embeddings stored in the checkpoint compare with what a user's cells give. The normal data set's ``train``
split gives the normal side of the prototype margin (``bank_size`` cells) and, from the cells left over, normal
cells the combination learns to keep low (``negatives_size``); its ``val`` split sets the threshold. Normal cells
from other microscopes (``normal_examples``) join those negatives, so that "from another microscope" is not taken
for "blast". A couple of thousand cells: about a minute on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from leukolens.data.cells import CellSample, cell_samples, crop_cell, load_crops, load_image, single_cell_images
from leukolens.errors import LeukolensError
from leukolens.eval.cells import run_checkpoint
from leukolens.io import ProblemLog, read_dataset
from leukolens.models.atypicality import AtypicalityScorer, select_features
from leukolens.models.blast import BlastFitConfig, BlastScorer, CellScores, example_images, fit_blast_scorer
from leukolens.models.cellnet import CellNet
from leukolens.models.checkpoint import CellCheckpoint, load_checkpoint, save_checkpoint


@dataclass(frozen=True)
class TrainBlastConfig:
    """Where the blast scorer's cells come from and where it is written."""

    checkpoint: str  # the cell model to fit a scorer for
    examples: tuple[str, ...]  # folders of real blast images (single cells)
    data: str = "../shared/data/pbc"  # normal cells with train and val splits (the cell model's training domain)
    normal_examples: tuple[str, ...] = ()  # folders of non-blast cells from other microscopes
    out: str | None = None  # where to write the checkpoint (None: over the checkpoint itself)
    bank_size: int = 1000  # normal training cells stored as the prototypes' normal side
    negatives_size: int = 800  # further training cells the combination is fitted against
    seed: int = 0
    fit: BlastFitConfig = field(default_factory=BlastFitConfig)


@dataclass
class BlastFitReport:
    """What :func:`fit_blast` did: the scorer, where it was written, and unreadable files skipped."""

    scorer: BlastScorer
    path: Path
    skipped: list[tuple[str, str]]

    def summary(self) -> str:
        fitted = self.scorer.fitted
        weights = ", ".join(f"{name} {w:.2f}" for name, w in zip(self.scorer.scores, self.scorer.weights))
        negatives = ", ".join(f"{share:.0%}" for share in fitted["negatives_called_blast"])
        return (
            f"blast scorer: {fitted['examples']} examples, {fitted['normals']} normal prototypes, "
            f"negatives {fitted['negatives']}; weights {weights}; threshold {self.scorer.threshold:.3f} calls "
            f"{fitted['validation_called_blast']:.1%} of {fitted['validation']} validation cells blast, "
            f"{fitted['examples_called_blast_left_out']:.0%} of the examples (each left out of the prototypes), "
            f"negatives {negatives}" + self._rates()
        )

    def _rates(self) -> str:
        rates = self.scorer.call_rates
        if rates is None:
            return ""
        return (f"; call rates for the blast % adjustment: sensitivity (TPR) {rates.true_positive_rate:.3f} "
                f"({rates.blasts_called}/{rates.blasts} examples), false-positive rate (FPR) "
                f"{rates.false_positive_rate:.3f} ({rates.normals_called}/{rates.normals} validation cells)")


# ------------------------------------------------------------------------------------------------------ reading cells
def image_crops(
    paths: Sequence[Path], checkpoint: CellCheckpoint, *, errors: list[tuple[str, str]]
) -> tuple[np.ndarray, list[Path]]:
    """Crops ``[n, size, size, 3]`` of single-cell image files, read whole as ``predict cells`` reads them;
    unreadable files are recorded in ``errors`` and left out."""
    size, context = checkpoint.crop.input_size, checkpoint.crop.context
    stain = checkpoint.preprocess.stain_normalizer()
    draft = (size, size) if checkpoint.crop.mode == "image" else None
    crops, kept = [], []
    for path in paths:
        try:
            image = load_image(path, draft=draft)
            crop = crop_cell(image, (0.0, 0.0, float(image.width), float(image.height)), size, context)
        except LeukolensError as error:
            errors.append((str(path), str(error)))
            continue
        crops.append(stain(crop) if stain is not None else crop)
        kept.append(path)
    return (np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)), kept


def scores_of_crops(
    model: CellNet, checkpoint: CellCheckpoint, crops: np.ndarray, sources: Sequence[str]
) -> CellScores:
    """The cell model's outputs for ``crops`` as the blast scorer reads them."""
    output = run_checkpoint(model, checkpoint, crops, margin=1.0)
    atypicality = None
    if checkpoint.atypicality:
        scorer = AtypicalityScorer.from_dict(checkpoint.atypicality)
        atypicality = scorer.score(select_features(output.embeddings, output.attribute_features, scorer.features))
    return CellScores(output.attribute_probabilities, output.embeddings, atypicality, tuple(sources))


def _normal_samples(data: Path, checkpoint: CellCheckpoint, split: str) -> list[CellSample]:
    dataset = read_dataset(data, log=ProblemLog())
    samples = cell_samples(dataset, classes=checkpoint.config.classes, split=split,
                           whole_image=single_cell_images(dataset))
    if not samples:
        raise LeukolensError(f"{data}: no cells of the model's classes in its {split!r} split")
    return samples


def _subset(cells: CellScores, keep: np.ndarray) -> CellScores:
    return CellScores(
        {name: p[keep] for name, p in cells.attribute_probabilities.items()},
        cells.embeddings[keep],
        None if cells.atypicality is None else cells.atypicality[keep],
        tuple(cells.sources[i] for i in keep),
    )


# ------------------------------------------------------------------------------------------------------ fitting
def fit_blast_for(
    checkpoint: CellCheckpoint, config: TrainBlastConfig, *, log: Callable[[str], None] = print
) -> tuple[BlastScorer, list[tuple[str, str]]]:
    """The blast scorer of ``checkpoint`` fitted as ``config`` says, and the unreadable files skipped.

    Raises:
        LeukolensError: an example folder is missing or holds no readable image, or the normal data has no cells.
    """
    model = checkpoint.build().to(memory_format=torch.channels_last)
    skipped: list[tuple[str, str]] = []

    def folder_scores(folders: Sequence[str], what: str) -> CellScores:
        crops, kept = image_crops(example_images(folders, what=what), checkpoint, errors=skipped)
        if not kept:
            raise LeukolensError(f"{what} {', '.join(folders)}: none of the images could be read")
        return scores_of_crops(model, checkpoint, crops, [str(p) for p in kept])

    examples = folder_scores(config.examples, "blast examples")
    others = folder_scores(config.normal_examples, "normal examples") if config.normal_examples else None
    stain = checkpoint.preprocess.stain_normalizer()
    size, context = checkpoint.crop.input_size, checkpoint.crop.context
    train = _normal_samples(Path(config.data), checkpoint, "train")
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(train))[: config.bank_size + config.negatives_size]
    train = [train[i] for i in order]
    validation = _normal_samples(Path(config.data), checkpoint, "val")
    log(f"blast scorer: reading {len(examples)} examples, {len(train)} training and {len(validation)} validation "
        "cells")
    crops = load_crops(train, size=size, context=context, stain=stain)
    train_scores = scores_of_crops(model, checkpoint, crops, [str(s.image) for s in train])
    bank = np.arange(min(config.bank_size, len(train)))
    rest = np.arange(len(bank), len(train))
    crops = load_crops(validation, size=size, context=context, stain=stain)
    validation_scores = scores_of_crops(model, checkpoint, crops, [str(s.image) for s in validation])
    negatives = [_subset(train_scores, rest if len(rest) else bank)]
    if others is not None:
        negatives.append(others)
    scorer = fit_blast_scorer(
        examples=examples,
        normals=_subset(train_scores, bank),
        negatives=negatives,
        validation=validation_scores,
        head_values={a.name: a.values for a in checkpoint.config.attributes},
        config=config.fit,
    )
    return scorer, skipped


def fit_blast(config: TrainBlastConfig, *, log: Callable[[str], None] = print) -> BlastFitReport:
    """Fit the blast scorer of ``config.checkpoint`` and write the checkpoint with it to ``config.out`` (over the
    checkpoint itself when None); the network's weights are left as they are."""
    source = Path(config.checkpoint)
    checkpoint = load_checkpoint(source)
    scorer, skipped = fit_blast_for(checkpoint, config, log=log)
    checkpoint.blast = scorer.as_dict()
    path = save_checkpoint(checkpoint, config.out or source)
    return BlastFitReport(scorer, path, skipped)
