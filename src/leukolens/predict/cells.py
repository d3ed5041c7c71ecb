"""The cell model at prediction time: each white cell's type, its attributes and how atypical it is.

    >>> from leukolens.predict import CellReader
    >>> reader = CellReader.from_checkpoint()               # the shipped weights
    >>> reader.predict_files(["cell.jpg"])[0].label
    'Monocyte'

Each prediction (:class:`~leukolens.predict.results.CellPrediction`) carries the class with its probability, every
attribute with its probability, an atypicality score with the verdict "atypical, review" when the cell is unlike
anything the model was trained on, and, when the checkpoint holds a blast scorer (:mod:`leukolens.models.blast`),
how blast-like the cell is (``blast_probability``) and whether it is a suspected blast. A lab adds its own blasts to
the scorer's examples with ``CellReader.from_checkpoint(blast_examples=["our-blasts/"])``.
:meth:`CellReader.read_cells` turns a field's detections into typed :class:`~leukolens.predict.results.PredictedCell`
records. ``Predictor`` is the same class under its older name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from leukolens.data.augment import VIEWS, dihedral, normalize
from leukolens.data.cells import crop_cell, load_image
from leukolens.errors import LeukolensError
from leukolens.models.atypicality import AtypicalityScorer, select_features
from leukolens.models.blast import BlastCallRates, BlastScorer, example_images
from leukolens.models.cellnet import CellNet
from leukolens.models.checkpoint import CellCheckpoint, load_checkpoint
from leukolens.models.size import SizePrior, cell_diameter_um
from leukolens.predict import weights
from leukolens.predict.engine import Engine, Export, stain_normalizer
from leukolens.predict.results import (
    ATYPICAL_VERDICT,
    AttributePrediction,
    CellPrediction,
    FieldDetections,
    PredictedCell,
)

__all__ = ["ATYPICAL_VERDICT", "AttributePrediction", "CellPrediction", "CellReader", "Predictor"]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _mean_over_views(logits: np.ndarray, views: int) -> np.ndarray:
    """Probabilities of ``[views * n, width]`` logits laid out view by view, averaged over the views: ``[n, width]``."""
    return _softmax(logits).reshape(views, -1, logits.shape[1]).mean(0)


class _Flat(nn.Module):
    """CellNet with tuple outputs, which ONNX export needs: class logits, embedding, attribute features, then the
    logits of each attribute head."""

    def __init__(self, model: CellNet):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        out = self.model(images)
        heads = torch.cat(list(out.attribute_features.values()), 1) if out.attribute_features else out.embedding[:, :0]
        return (out.class_logits, out.embedding, heads, *out.attribute_logits.values())


def cell_export(model: CellNet, *, input_size: int) -> tuple[nn.Module, Export]:
    """The network with tuple outputs and how it is exported to ONNX: normalised float crops ``[n, 3, input_size,
    input_size]`` in; class logits, embedding, attribute features, then each attribute head's logits out."""
    example = torch.zeros(1, 3, input_size, input_size)
    outputs = ("class_logits", "embedding", "attribute_features",
               *(f"attribute_logits.{name}" for name in model.attribute_heads))
    return _Flat(model), Export(name="cellnet", tag=str(input_size), example=example, input_name="images",
                                output_names=outputs)


def cell_engine(
    model: CellNet, *, input_size: int, engine: str, path: Path | None, threads: int | None = None,
    cache_dir: Path | None = None,
) -> Engine:
    """``model`` on ``engine``, taking normalised float crops ``[n, 3, input_size, input_size]``."""
    network, export = cell_export(model, input_size=input_size)
    return Engine(
        network, export, engine=engine, checkpoint_path=path, cache_dir=cache_dir, threads=threads,
        channels_last_input=True,
    )


class CellReader:
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
        blast_examples: Sequence[str | Path] = (),
        views: int = VIEWS,
        size: bool = True,
    ):
        """Args:
        checkpoint: the loaded checkpoint.
        path: where it was loaded from (lets the ``onnx`` engine cache its export).
        engine: ``torch``, ``onnx`` (ONNX Runtime, about twice as fast on a CPU), or ``auto`` (onnx when installed).
        match_stain: bring every crop's colours to the training cells' (Reinhard, with the statistics the
            checkpoint stores) before the model: for images from another microscope, camera or stain. Ignored when
            the checkpoint already normalises every crop (``stain``).
        blast_examples: folders of a lab's own blast images (single cells), added to the blast scorer's examples;
            unreadable images among them are skipped and listed in :attr:`blast_skipped`.
        views: how many flips and quarter turns of each crop the class and attribute probabilities average (1-8;
            see :data:`~leukolens.data.augment.VIEWS`); the embedding is the upright crop's.
        size: weigh each cell's size in µm into its type where the size is known (a field whose scale was found)
            and the checkpoint holds a size prior (:mod:`leukolens.models.size`); False reads the image alone.

        Raises:
            LeukolensError: ``match_stain`` with a checkpoint that stores no training colour statistics;
                ``blast_examples`` with a checkpoint without a blast scorer, or a folder that is missing, holds no
                image or no readable one.
        """
        self.checkpoint = checkpoint
        if not 1 <= views <= 8:
            raise LeukolensError(f"views must be 1 to 8 (flips and quarter turns of a crop), not {views}")
        self._options = {"path": path, "engine": engine, "batch_size": batch_size, "threads": threads,
                         "match_stain": match_stain, "views": views, "size": size}
        self.views = views
        self.size_prior = SizePrior.from_dict(checkpoint.size) if size and checkpoint.size else None
        model = checkpoint.build()
        self._heads = tuple(model.attribute_heads)  # the order of the attribute logits the network returns
        self.engine = cell_engine(
            model, input_size=checkpoint.crop.input_size, engine=engine, path=path, threads=threads
        )
        self.batch_size = batch_size
        self.scorer = AtypicalityScorer.from_dict(checkpoint.atypicality) if checkpoint.atypicality else None
        self.stain = stain_normalizer(checkpoint.stain)
        if not checkpoint.stain and match_stain:
            if not checkpoint.training_stain:
                raise LeukolensError(
                    "this checkpoint stores no training colour statistics, so match_stain cannot be used; "
                    "retrain it, or add them with leukolens.train.cells.training_stain_reference"
                )
            self.stain = stain_normalizer(checkpoint.training_stain)
        if threads:
            torch.set_num_threads(threads)
        self.blast = BlastScorer.from_dict(checkpoint.blast) if checkpoint.blast else None
        self.blast_skipped: list[tuple[str, str]] = []
        if blast_examples:
            self.blast = self._with_blast_examples(blast_examples)

    def _with_blast_examples(self, folders: Sequence[str | Path]) -> BlastScorer:
        """The blast scorer with the blasts in ``folders`` added to its examples, read as every cell is read."""
        if self.blast is None:
            raise LeukolensError(
                "this cell model has no blast scorer, so --blast-examples cannot be used; fit one with "
                "`leukolens train blast` (or `make weights-blast` for the shipped model)"
            )
        paths = example_images(folders)
        crops, sources = [], []
        for path in paths:
            try:
                crops.append(self.crop(self._open(path)))
            except LeukolensError as error:
                self.blast_skipped.append((str(path), str(error)))
                continue
            sources.append(str(path))
        if not crops:
            raise LeukolensError(f"blast examples {', '.join(map(str, folders))}: none of the images could be read")
        # Only the embedding is wanted, which is the upright crop's: one view.
        embeddings = np.concatenate([self._outputs(np.stack(crops[i : i + self.batch_size]), views=1)[2]
                                     for i in range(0, len(crops), self.batch_size)])
        return self.blast.with_examples(embeddings, sources)

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, **kwargs) -> CellReader:
        """Load a checkpoint (the shipped one when ``path`` is None)."""
        path = weights.resolve("cells", path)
        return cls(load_checkpoint(path), path=path, **kwargs)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.checkpoint.config.classes

    def crop(self, image: Image.Image, box: Sequence[float] | None = None) -> np.ndarray:
        """The model's input crop (``uint8``, input size) for a cell; the whole image when ``box`` is None."""
        box = tuple(box) if box is not None else (0.0, 0.0, float(image.width), float(image.height))
        crop = crop_cell(image, box, self.checkpoint.crop.input_size, self.checkpoint.crop.context)
        return self.stain(crop) if self.stain is not None else crop

    def _outputs(
        self, crops: np.ndarray, views: int | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """The network's outputs for one batch of crops: class probabilities ``[batch, classes]``, attribute name ->
        probabilities ``[batch, values]``, the embedding ``[batch, features]`` and the attribute heads' pooled
        features ``[batch, heads * 2 * hidden]``; probabilities averaged over ``views`` (default: the reader's)."""
        views = views or self.views
        # A few crops at a time with all their views in one pass of about batch_size images, view by view
        # ([views * k]): a field's one or two cells make one batch of four or eight, not four tiny passes.
        per_pass = max(1, self.batch_size // views)
        classes, attributes, embeddings, heads = [], [], [], []
        for start in range(0, len(crops), per_pass):
            chunk = crops[start : start + per_pass]
            batch = torch.from_numpy(np.concatenate([dihedral(chunk, view) for view in range(views)]))
            images = normalize(batch.permute(0, 3, 1, 2).float() / 255, self.checkpoint.mean, self.checkpoint.std)
            class_logits, embedding, head_features, *attribute_logits = self.engine(images.numpy())
            classes.append(_mean_over_views(class_logits, views))
            attributes.append([_mean_over_views(logits, views) for logits in attribute_logits])
            # The embedding is the upright crop's: what the atypicality and blast scorers were fitted on.
            embeddings.append(embedding[: len(chunk)])
            heads.append(head_features[: len(chunk)])
        attribute_probabilities = {
            name: np.concatenate([part[i] for part in attributes]) for i, name in enumerate(self._heads)
        }
        return np.concatenate(classes), attribute_probabilities, np.concatenate(embeddings), np.concatenate(heads)

    def predict_crops(
        self, crops: np.ndarray, sources: Sequence[str] | None = None, diameters_um: Sequence[float] | None = None
    ) -> list[CellPrediction]:
        """Predictions for ``uint8`` crops ``[n, input, input, 3]`` made by :meth:`crop`.

        ``diameters_um``: each cell's diameter in µm (NaN where unknown), weighed into its type by the checkpoint's
        size prior when it has one.
        """
        results: list[CellPrediction] = []
        diameters = np.full(len(crops), np.nan) if diameters_um is None else np.asarray(diameters_um, float)
        for start in range(0, len(crops), self.batch_size):
            batch = crops[start : start + self.batch_size]
            class_probabilities, attribute_probabilities, embedding, heads = self._outputs(batch)
            sizes = diameters[start : start + len(batch)]
            if self.size_prior is not None:
                class_probabilities = self.size_prior.apply(class_probabilities, sizes, self.classes)
            scores = None
            if self.scorer is not None:
                scores = self.scorer.score(select_features(embedding, heads, self.scorer.features))
            blast = None
            if self.blast is not None:
                values = {spec.name: spec.values for spec in self.checkpoint.config.attributes}
                blast = self.blast.probability(attribute_probabilities, values, embedding, scores)
            for i in range(len(batch)):
                results.append(
                    self._prediction(
                        i, class_probabilities, attribute_probabilities, scores, sources[start + i] if sources else "",
                        blast, embedding[i], sizes[i],
                    )
                )
        return results

    def adapted(self, crops: np.ndarray) -> CellReader:
        """A reader whose network's normalisation statistics are re-estimated on ``crops`` ``[n, input, input, 3]``
        (made by :meth:`crop`): one sample's own white cells, one slide on one microscope (AdaBN, no labels).
        It runs on PyTorch, since the statistics are new weights."""
        from leukolens.models.adapt import adapt_norm

        model = self.checkpoint.build()
        images = normalize(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255, self.checkpoint.mean,
                           self.checkpoint.std)
        adapt_norm(model, images)
        return self.with_weights(model.state_dict())

    def with_weights(self, state_dict: dict) -> CellReader:
        """This reader with the network's weights replaced by ``state_dict`` (an :meth:`adapted` reader's
        ``checkpoint.state_dict``, sent to other processes so that they need not adapt again). It runs on PyTorch,
        since the weights are not the checkpoint file's."""
        import copy

        checkpoint = copy.copy(self.checkpoint)
        checkpoint.state_dict = state_dict
        reader = CellReader(checkpoint, **{**self._options, "engine": "torch", "path": None})
        reader.blast = self.blast  # with any lab examples, embedded once
        return reader

    @property
    def blast_call_rates(self) -> BlastCallRates | None:
        """How often the blast call is right (for a sample's secondary, adjusted blast %); None without a blast
        scorer or when the scorer's rates were not measured (an older fit, or blast examples added for this run)."""
        return None if self.blast is None else self.blast.call_rates

    def _prediction(
        self, i, class_probabilities, attribute_probabilities, scores, source, blast, embedding, diameter
    ) -> CellPrediction:
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
        blast_probability = None if blast is None else float(blast[i])
        return CellPrediction(
            label=self.classes[best],
            probability=float(class_probabilities[i][best]),
            probabilities={c: float(p) for c, p in zip(self.classes, class_probabilities[i])},
            attributes=attributes,
            atypicality=score,
            atypical=score is not None and score > self.scorer.threshold,
            source=source,
            blast_probability=blast_probability,
            blast_suspected=blast_probability is not None and bool(self.blast.suspected(blast_probability)),
            embedding=np.array(embedding),
            diameter_um=float(diameter) if np.isfinite(diameter) else None,
        )

    def predict(
        self,
        image: Image.Image | str | Path,
        boxes: Iterable[Sequence[float]] | None = None,
        *,
        microns_per_pixel: float | None = None,
    ) -> list[CellPrediction]:
        """Predictions for the cells of one image: one per box, or one for the whole image (a single-cell crop).
        With ``microns_per_pixel``, each boxed cell's size is known and weighed into its type."""
        source = str(image) if isinstance(image, (str, Path)) else ""
        image = load_image(Path(image)) if isinstance(image, (str, Path)) else image.convert("RGB")
        boxes = list(boxes) if boxes is not None else [None]
        crops = np.stack([self.crop(image, box) for box in boxes])
        sizes = [cell_diameter_um(tuple(b), microns_per_pixel) if b is not None else np.nan for b in boxes]
        return self.predict_crops(crops, [source] * len(boxes), sizes)

    def read_cells(
        self,
        fields: Sequence[tuple[Image.Image, FieldDetections]],
        *,
        read: Sequence[str] | None = None,
        adapt_min_cells: int = 0,
    ) -> list[list[PredictedCell]]:
        """Every detection of each field as a :class:`PredictedCell`, the cells of the classes in ``read`` (all when
        None) read by the model. Crops are cut from the detector's float boxes; the crops of all the fields run
        through the model together.

        Args:
            adapt_min_cells: when the fields (one sample) hold at least this many cells to read, the model's
                normalisation is first adapted to them (:meth:`adapted`); 0 never adapts.
        """
        crops, owners, sizes = [], [], []
        for f, (image, detections) in enumerate(fields):
            microns_per_pixel = detections.scale.microns_per_pixel if detections.scale is not None else None
            for i in range(len(detections)):
                if read is None or detections.class_name(i) in read:
                    box = tuple(float(v) for v in detections.boxes[i])
                    crops.append(self.crop(image, box))
                    owners.append((f, i))
                    sizes.append(cell_diameter_um(box, microns_per_pixel))
        reader = self
        if crops and adapt_min_cells and len(crops) >= adapt_min_cells:
            reader = self.adapted(np.stack(crops))
        predictions = dict(zip(owners, reader.predict_crops(np.stack(crops), diameters_um=sizes))) if crops else {}
        return [
            [PredictedCell.detected(detections, i, predictions.get((f, i))) for i in range(len(detections))]
            for f, (_, detections) in enumerate(fields)
        ]

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


Predictor = CellReader
"""The older name of :class:`CellReader` (README, notebooks)."""
