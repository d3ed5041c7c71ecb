"""One entry point for the image-text model: describe cells in words, embed cells and free-text queries.

    >>> from leukolens.predict import ImageTextPredictor
    >>> model = ImageTextPredictor.from_checkpoint()          # the shipped weights
    >>> model.describe_files(["cell.jpg"])[0].sentence
    'A large, round monocyte with an indented, unsegmented nucleus, ...'

Describing needs no sentence encoder (the text prototypes are stored in the checkpoint); free-text queries load
MiniLM on first use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

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


@dataclass
class Description:
    """What the image-text model says about one cell."""

    label: str
    label_score: float
    class_scores: dict[str, float]
    attributes: dict[str, tuple[str, float]]  # name -> (value, score)
    sentence: str
    source: str = ""

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


class ImageTextPredictor:
    """A trained image-text model with its frozen image tower, ready to describe and to embed."""

    def __init__(
        self, checkpoint: ClipCheckpoint, *, path: Path | None = None, batch_size: int = 64,
        cells: str | Path | None = None,
    ):
        """Args:
        cells: a cell model calibrated to a lab's microscope (``leukolens calibrate``) from the one this image-text
            model was trained on: its normalisation statistics replace the image tower's.
        """
        self.checkpoint = checkpoint
        self.path = path
        self.cells = Path(cells) if cells is not None else None
        self.model = checkpoint.build()
        self.schema = SCHEMAS.get(checkpoint.config.schema) if checkpoint.config.schema else None
        self.batch_size = batch_size
        self._tower: ImageTower | None = None
        self._encoder: SentenceEncoder | None = None

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

                self._tower = ImageTower(self.checkpoint.config.image_tower, check=False,
                                         cell_checkpoint=load_checkpoint(self.cells))
        return self._tower

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
        return descriptions
