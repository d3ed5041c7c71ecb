"""One entry point for the image-text model: describe cells in words, embed cells and free-text queries.

    >>> from leukolens.predict import ImageTextPredictor
    >>> model = ImageTextPredictor.from_checkpoint()          # the shipped weights
    >>> model.describe_files(["cell.jpg"])[0].sentence
    'A large, round monocyte with an indented, unsegmented nucleus, ...'

Describing needs no sentence encoder (the text prototypes are stored in the checkpoint); free-text queries load
MiniLM on first use.

When the image tower's cell model holds a blast scorer (:mod:`leukolens.models.blast`), every described cell also
gets its ``blast_probability``; a suspected blast is named "blast (suspected)" in its sentence, followed by the
attributes that read blast-like (the cell model's heads), e.g. "Blast-like: large cell, loosely packed (fine)
chromatin and no granules."
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from leukolens.data.cells import crop_cell, load_image
from leukolens.errors import LeukolensError
from leukolens.eval.clip import class_probabilities, read_attributes
from leukolens.models.clip import (
    ClipCheckpoint,
    ImageTower,
    SentenceEncoder,
    embed_images,
    embed_texts,
    file_sha256,
    load_clip,
)
from leukolens.predict import weights
from leukolens.records import SCHEMAS, AttributeSchema
from leukolens.text.sentences import CLASS_KEY, class_sentence, compose

if TYPE_CHECKING:
    from leukolens.predict.cells import CellReader
    from leukolens.predict.results import CellPrediction

BLAST_NOUN = "Blast (suspected)"
"""What a suspected blast is called in its sentence, in place of the image-text model's class."""


@dataclass
class Description:
    """What the image-text model says about one cell."""

    label: str
    label_score: float
    class_scores: dict[str, float]
    attributes: dict[str, tuple[str, float]]  # name -> (value, score)
    sentence: str
    source: str = ""
    # From the cell model's blast scorer (None / False / empty without one): how blast-like, whether suspected, and
    # the morphological features that read blast-like.
    blast_probability: float | None = None
    blast_suspected: bool = False
    blast_reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        """The description as ``leukolens describe --json`` writes it (see docs/output-schema.md)."""
        from leukolens.predict.output import description_json

        return description_json(self)


def describe(
    images: np.ndarray, prototypes: dict, *, scale: float, schema: AttributeSchema | None, with_class: bool = True
) -> list[Description]:
    """The best description of each cell: the class and, per attribute, the value whose phrases match best,
    composed into one sentence, with softmax scores."""
    names = prototypes["classes"]["names"]
    probabilities = class_probabilities(images, prototypes, scale)  # [images, classes]
    attributes = read_attributes(images, prototypes, scale) if schema is not None else {}
    out = []
    for i in range(len(images)):
        best = int(probabilities[i].argmax())
        chosen = {}
        for name, probs in attributes.items():
            j = int(probs[i].argmax())
            chosen[name] = (prototypes["attributes"][name]["values"][j], float(probs[i, j]))
        if prototypes.get("mode", "composed") != "composed":
            sentence = class_sentence(names[best])  # the baseline knows one sentence per class or diagnosis
        else:
            content = ((CLASS_KEY, names[best]),) if with_class or schema is None else ()
            described = prototypes.get("described_classes")
            if described is not None and names[best] not in described:
                chosen = {}  # the model never learnt attributes for this class: say nothing rather than invent
            content += tuple((a.name, chosen[a.name][0]) for a in schema or () if a.name in chosen)
            sentence = compose(content, schema=schema)
        out.append(
            Description(
                names[best],
                float(probabilities[i, best]),
                {c: float(p) for c, p in zip(names, probabilities[i])},
                chosen,
                sentence,
            )
        )
    return out


def _join(parts: Sequence[str]) -> str:
    parts = list(parts)
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


GRANULE_DETAILS = ("granule_type", "granule_colour")
"""Said together with granularity: a cell the blast scorer reads as without granules has no granule type or colour."""


def blast_sentence(
    description: Description, cell_attributes: Mapping[str, str], reasons: Sequence[str], *,
    schema: AttributeSchema | None, morphology: Sequence[str],
) -> str:
    """The sentence of a suspected blast: "blast (suspected)" in place of the class, the attributes the image-text
    model read except those the blast score looks at (``morphology``), which are stated as the cell model read them
    (so that the sentence never contradicts its reasons), then the features that read blast-like.

    Args:
        cell_attributes: attribute name -> the cell model's value for this cell.
        reasons: the blast-like features (:meth:`leukolens.models.blast.BlastScorer.reasons`).
        morphology: the attributes the blast score looks at.
    """
    content = ((CLASS_KEY, BLAST_NOUN),)
    if schema is not None:
        read = {name: value for name, (value, _) in description.attributes.items()}
        read.update({name: cell_attributes[name] for name in morphology if name in cell_attributes})
        if read.get("granularity") == "no":
            read.update({name: "nil" for name in GRANULE_DETAILS if name in read})
        content += tuple((a.name, read[a.name]) for a in schema if a.name in read and read[a.name] in a.values)
    return compose(content, schema=schema) + f" Blast-like: {_join(reasons)}."


def with_blast(description: Description, prediction: CellPrediction, reader: CellReader,
               schema: AttributeSchema | None) -> Description:
    """``description`` with the cell model's blast reading of the same cell (the sentence rewritten when the cell is
    a suspected blast)."""
    description.blast_probability = prediction.blast_probability
    description.blast_suspected = prediction.blast_suspected
    if prediction.blast_suspected and reader.blast is not None:
        description.blast_reasons = reader.blast.reasons(
            {name: a.probabilities for name, a in prediction.attributes.items()}
        )
        description.sentence = blast_sentence(
            description, {name: a.value for name, a in prediction.attributes.items()}, description.blast_reasons,
            schema=schema, morphology=[name for name, _, _ in reader.blast.morphology],
        )
    return description


class ImageTextPredictor:
    """A trained image-text model with its frozen image tower, ready to describe and to embed."""

    def __init__(
        self, checkpoint: ClipCheckpoint, *, path: Path | None = None, batch_size: int = 64,
        cells: str | Path | None = None, blast_examples: Sequence[str | Path] = (),
    ):
        """Args:
        cells: a cell model calibrated to a lab's microscope (``leukolens calibrate``) from the one this image-text
            model was trained on: its normalisation statistics replace the image tower's.
        blast_examples: folders of a lab's own blast images for the cell model's blast scorer (see
            :class:`~leukolens.predict.cells.CellReader`).
        """
        self.checkpoint = checkpoint
        self.path = path
        self.cells = Path(cells) if cells is not None else None
        self.model = checkpoint.build()
        self.schema = SCHEMAS.get(checkpoint.config.schema) if checkpoint.config.schema else None
        self.batch_size = batch_size
        self._tower: ImageTower | None = None
        self._encoder: SentenceEncoder | None = None
        self.blast_examples = tuple(blast_examples)
        self._cell_reader: CellReader | None = None
        self._cell_reader_loaded = False

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, **kwargs) -> ImageTextPredictor:
        path = weights.resolve("clip", path)
        return cls(load_clip(path), path=path, **kwargs)

    @property
    def identity(self) -> str:
        """What the embeddings depend on: this checkpoint's file (for gallery indexes)."""
        identity = file_sha256(self.path) if self.path is not None else "in-memory"
        return identity + (f"+{file_sha256(self.cells)}" if self.cells is not None else "")

    @property
    def tower(self) -> ImageTower:
        if self._tower is None:
            if self.cells is None:
                self._tower = ImageTower(self.checkpoint.config.image_tower)
            else:
                from leukolens.models.checkpoint import load_checkpoint

                self._tower = ImageTower(self.checkpoint.config.image_tower, calibrated=load_checkpoint(self.cells))
        return self._tower

    @property
    def cell_reader(self) -> CellReader | None:
        """The image tower's cell model as a reader, when it holds a blast scorer (None otherwise)."""
        if not self._cell_reader_loaded:
            self._cell_reader_loaded = True
            config = self.checkpoint.config.image_tower
            if config.kind == "cellnet":
                from leukolens.models.checkpoint import load_checkpoint
                from leukolens.models.clip import resolve_cell_model
                from leukolens.predict.cells import CellReader

                path = self.cells if self.cells is not None else resolve_cell_model(config.cell_model)
                cell_checkpoint = load_checkpoint(path)
                if cell_checkpoint.blast:
                    self._cell_reader = CellReader(cell_checkpoint, path=path, blast_examples=self.blast_examples)
            if self._cell_reader is None and self.blast_examples:
                raise LeukolensError(
                    "the image-text model's cell model has no blast scorer, so --blast-examples cannot be used; fit "
                    "one with `leukolens train blast`"
                )
        return self._cell_reader

    @property
    def encoder(self) -> SentenceEncoder:
        if self._encoder is None:
            self._encoder = SentenceEncoder()
        return self._encoder

    def crop(self, path: Path) -> np.ndarray:
        c = self.checkpoint.config.image_tower
        image = load_image(path, draft=(c.input_size, c.input_size) if c.crop_mode == "image" else None)
        return crop_cell(image, (0.0, 0.0, float(image.width), float(image.height)), c.input_size, c.context)

    def embed_files(
        self, paths: Iterable[str | Path], *, errors: list[tuple[str, str]] | None = None
    ) -> tuple[list[Path], np.ndarray]:
        """Unit-length image embeddings of single-cell image files; unreadable files go to ``errors`` (or raise)."""
        kept: list[Path] = []
        parts = []
        paths = [Path(p) for p in paths]
        for start in range(0, len(paths), self.batch_size):
            crops = []
            for path in paths[start : start + self.batch_size]:
                try:
                    crops.append(self.crop(path))
                except LeukolensError as error:
                    if errors is None:
                        raise
                    errors.append((str(path), str(error)))
                    continue
                kept.append(path)
            if crops:
                parts.append(embed_images(self.model, self.tower.features(np.stack(crops))))
        dim = self.checkpoint.config.embed_dim
        return kept, np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Unit-length text embeddings of free-text queries.

        Runs on one thread: a few short sentences gain nothing from intra-op parallelism, and on a busy machine the
        extra threads cost several times the work (measured: 46 ms instead of 316 ms per query with another job
        running).
        """
        encoder = self.encoder if self.checkpoint.config.text_tower == "minilm" else None
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return embed_texts(self.model, list(queries), encoder)
        finally:
            torch.set_num_threads(threads)

    def describe_embeddings(self, embeddings: np.ndarray) -> list[Description]:
        scale = float(self.model.logit_scale.detach().exp())
        return describe(embeddings, self.checkpoint.prototypes, scale=scale, schema=self.schema)

    def describe_files(
        self, paths: Iterable[str | Path], *, errors: list[tuple[str, str]] | None = None
    ) -> list[Description]:
        kept, embeddings = self.embed_files(paths, errors=errors)
        descriptions = self.describe_embeddings(embeddings)
        for path, description in zip(kept, descriptions):
            description.source = str(path)
        reader = self.cell_reader
        if reader is not None and kept:
            for description, prediction in zip(descriptions, reader.predict_files(kept)):
                with_blast(description, prediction, reader, self.schema)
        return descriptions
