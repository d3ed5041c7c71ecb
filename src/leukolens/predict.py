"""One obvious entry point for a trained cell model.

    >>> from leukolens.predict import Predictor
    >>> predictor = Predictor.from_checkpoint()            # the shipped weights
    >>> predictor.predict_files(["cell.jpg"])[0].label
    'Monocyte'

Each prediction carries the class with its probability, every attribute with its probability, and an atypicality
score with the verdict "atypical, review" when the cell is unlike anything the model was trained on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from leukolens.data.augment import normalize
from leukolens.data.cells import crop_cell, load_image
from leukolens.io.common import LeukolensError
from leukolens.models.atypicality import AtypicalityScorer, select_features
from leukolens.models.checkpoint import CellCheckpoint, load_checkpoint
from leukolens.models.runtime import make_runner

DEFAULT_CHECKPOINT = "cellnet-pbc.pt"
ATYPICAL_VERDICT = "atypical, review"


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def default_checkpoint() -> Path:
    """The cell model shipped inside the package."""
    return Path(str(resources.files("leukolens") / "weights" / DEFAULT_CHECKPOINT))


@dataclass
class AttributePrediction:
    value: str
    probability: float
    probabilities: dict[str, float]


@dataclass
class CellPrediction:
    """What the model says about one cell."""

    label: str
    probability: float
    probabilities: dict[str, float]
    attributes: dict[str, AttributePrediction] = field(default_factory=dict)
    atypicality: float | None = None
    atypical: bool = False
    source: str = ""

    @property
    def verdict(self) -> str:
        return ATYPICAL_VERDICT if self.atypical else "typical"

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "label": self.label,
            "probability": round(self.probability, 4),
            "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()},
            "attributes": {
                name: {
                    "value": a.value,
                    "probability": round(a.probability, 4),
                    "probabilities": {k: round(v, 4) for k, v in a.probabilities.items()},
                }
                for name, a in self.attributes.items()
            },
            "atypicality": None if self.atypicality is None else round(self.atypicality, 4),
            "verdict": self.verdict,
        }


class Predictor:
    """A cell model ready to predict, with the preprocessing its checkpoint prescribes."""

    def __init__(
        self,
        checkpoint: CellCheckpoint,
        *,
        path: Path | None = None,
        engine: str = "auto",
        batch_size: int = 64,
        threads: int | None = None,
        match_stain: bool = False,
    ):
        """Args:
        checkpoint: the loaded checkpoint.
        path: where it was loaded from (lets the ``onnx`` engine cache its export).
        engine: ``torch``, ``onnx`` (ONNX Runtime, about twice as fast on a CPU), or ``auto`` (onnx when installed).
        match_stain: bring every crop's colours to the training cells' (Reinhard, with the statistics the
            checkpoint stores) before the model: for images from another microscope, camera or stain. Ignored when
            the checkpoint already normalises every crop (``stain``).

        Raises:
            LeukolensError: ``match_stain`` with a checkpoint that stores no training colour statistics.
        """
        self.checkpoint = checkpoint
        self.runner = make_runner(
            checkpoint.build(),
            engine=engine,
            input_size=checkpoint.crop.input_size,
            checkpoint_path=path,
            threads=threads,
        )
        self.batch_size = batch_size
        self.scorer = AtypicalityScorer.from_dict(checkpoint.atypicality) if checkpoint.atypicality else None
        self.stain = None
        if checkpoint.stain:
            from leukolens.data.stain import normalizer_from_reference

            self.stain = normalizer_from_reference(checkpoint.stain)
        elif match_stain:
            if not checkpoint.training_stain:
                raise LeukolensError(
                    "this checkpoint stores no training colour statistics, so match_stain cannot be used; "
                    "retrain it, or add them with leukolens.train.cells.training_stain_reference"
                )
            from leukolens.data.stain import normalizer_from_reference

            self.stain = normalizer_from_reference(checkpoint.training_stain)
        if threads:
            torch.set_num_threads(threads)

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, **kwargs) -> Predictor:
        """Load a checkpoint (the shipped one when ``path`` is None)."""
        path = Path(path) if path is not None else default_checkpoint()
        if path == default_checkpoint() and not path.is_file():
            raise LeukolensError(f"no shipped cell model at {path}: train one with `leukolens train cells`")
        return cls(load_checkpoint(path), path=path, **kwargs)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.checkpoint.config.classes

    def crop(self, image: Image.Image, box: Sequence[float] | None = None) -> np.ndarray:
        """The model's input crop (``uint8``, input size) for a cell; the whole image when ``box`` is None."""
        box = tuple(box) if box is not None else (0.0, 0.0, float(image.width), float(image.height))
        crop = crop_cell(image, box, self.checkpoint.crop.input_size, self.checkpoint.crop.context)
        return self.stain(crop) if self.stain is not None else crop

    def predict_crops(self, crops: np.ndarray, sources: Sequence[str] | None = None) -> list[CellPrediction]:
        """Predictions for ``uint8`` crops ``[n, input, input, 3]`` made by :meth:`crop`."""
        results: list[CellPrediction] = []
        for start in range(0, len(crops), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(crops[start : start + self.batch_size]))
            images = normalize(batch.permute(0, 3, 1, 2).float() / 255, self.checkpoint.mean, self.checkpoint.std)
            output = self.runner(images.numpy())
            class_probabilities = _softmax(output["class_logits"])
            attribute_probabilities = {
                a.name: _softmax(output[f"attribute/{a.name}"]) for a in self.checkpoint.config.attributes
            }
            scores = None
            if self.scorer is not None:
                scores = self.scorer.score(select_features(output["embedding"], output["heads"], self.scorer.features))
            for i in range(len(batch)):
                results.append(
                    self._prediction(
                        i, class_probabilities, attribute_probabilities, scores, sources[start + i] if sources else ""
                    )
                )
        return results

    def _prediction(self, i, class_probabilities, attribute_probabilities, scores, source) -> CellPrediction:
        best = int(class_probabilities[i].argmax())
        attributes = {}
        for spec in self.checkpoint.config.attributes:
            probabilities = attribute_probabilities[spec.name][i]
            top = int(probabilities.argmax())
            attributes[spec.name] = AttributePrediction(
                spec.values[top],
                float(probabilities[top]),
                {v: float(p) for v, p in zip(spec.values, probabilities)},
            )
        score = None if scores is None else float(scores[i])
        return CellPrediction(
            label=self.classes[best],
            probability=float(class_probabilities[i][best]),
            probabilities={c: float(p) for c, p in zip(self.classes, class_probabilities[i])},
            attributes=attributes,
            atypicality=score,
            atypical=score is not None and score > self.scorer.threshold,
            source=source,
        )

    def predict(
        self, image: Image.Image | str | Path, boxes: Iterable[Sequence[float]] | None = None
    ) -> list[CellPrediction]:
        """Predictions for the cells of one image: one per box, or one for the whole image (a single-cell crop)."""
        source = str(image) if isinstance(image, (str, Path)) else ""
        image = load_image(Path(image)) if isinstance(image, (str, Path)) else image.convert("RGB")
        boxes = list(boxes) if boxes is not None else [None]
        crops = np.stack([self.crop(image, box) for box in boxes])
        return self.predict_crops(crops, [source] * len(boxes))

    def _open(self, path: Path) -> Image.Image:
        """A single-cell image, decoded at the smallest JPEG scale that still covers the input size."""
        if self.checkpoint.crop.mode != "image":
            return load_image(path)
        size = self.checkpoint.crop.input_size
        return load_image(path, draft=(size, size))

    def predict_files(
        self, paths: Iterable[str | Path], *, errors: list[tuple[str, str]] | None = None
    ) -> list[CellPrediction]:
        """One prediction per single-cell image file.

        Args:
            errors: when given, an unreadable file is recorded here as (path, message) and skipped, so the rest of
                the batch still runs; otherwise it raises :class:`LeukolensError`.
        """
        paths = [Path(p) for p in paths]
        results = []
        for start in range(0, len(paths), self.batch_size):
            crops, sources = [], []
            for path in paths[start : start + self.batch_size]:
                try:
                    crops.append(self.crop(self._open(path)))
                except LeukolensError as error:
                    if errors is None:
                        raise
                    errors.append((str(path), str(error)))
                    continue
                sources.append(str(path))
            if crops:
                results.extend(self.predict_crops(np.stack(crops), sources))
        return results
