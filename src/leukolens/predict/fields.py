"""Find the cells in whole smear fields with a trained detector.

    >>> from leukolens.predict import Detector
    >>> detector = Detector.from_checkpoint()              # the shipped weights
    >>> found = detector.detect([Image.open("field.jpg")])[0]
    >>> found.boxes, found.scores, [found.class_name(i) for i in range(len(found))]

Every field is first brought to the scale the detector learnt (``scale="auto"``, the default): the scale is told by
``microns_per_pixel`` or estimated from the field's own red cells (:mod:`leukolens.predict.scale`), the field is
resized to that working scale, and a field larger than one input there is cut into overlapping tiles detected at
their own pixels and merged (NMS across tiles): a large field is never shrunk into one small input. With no red cell
to go on, or with ``scale="letterbox"``, a field is letterboxed as in training (longer side to the checkpoint's input
size, padded to a multiple of 32). Boxes come back as :class:`~leukolens.predict.results.FieldDetections`: xyxy
corners in the original image's pixels, as floats, with the image's size and the scale used.

    >>> sample = detector.sample_scale(fields)             # one slide on one microscope: one scale, estimated once
    >>> found = detector.detect(fields, field_scale=sample)

ONNX Runtime runs the network about twice as fast as eager PyTorch on two
cores; the export is cached per checkpoint file (see :mod:`leukolens.predict.engine`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from leukolens.data.fields import letterbox
from leukolens.errors import LeukolensError
from leukolens.io.common import IMAGE_SUFFIXES
from leukolens.io.slide import OPENSLIDE_SUFFIXES, TIFF_SUFFIXES
from leukolens.models.detector import Detections, DetectorCheckpoint, FieldNetwork, decode, load_detector
from leukolens.predict import weights
from leukolens.predict.engine import ENGINES, Engine, Export, stain_normalizer
from leukolens.predict.results import FieldDetections
from leukolens.predict.scale import (
    FALLBACK,
    LETTERBOX,
    RED_CELLS,
    FieldScale,
    ScaleConfig,
    estimate_sample_scale,
    fitted_factor,
    learnt_rbc_diameter,
    letterbox_factor,
    merge_tiles,
    pad_to_multiple,
    scale_from_microns_per_pixel,
    tiles_at_scale,
)

__all__ = ["ENGINES", "SCALE_MODES", "Detector", "FieldDetections", "FieldScale", "find_images", "load_field"]

SCALE_MODES = ("auto", "letterbox")
SAMPLE_FIELDS = 3
"""A sample's scale is estimated from the red cells of its first this many fields."""

FOUND_SUFFIXES = tuple(dict.fromkeys(IMAGE_SUFFIXES + TIFF_SUFFIXES + OPENSLIDE_SUFFIXES))
"""What a folder is searched for: fields' images and whole slides' files (.svs, .ndpi, .mrxs, ...)."""

MAX_PIXELS = 40_000_000
"""Larger images are refused: a microscope field is a few megapixels; a whole-slide scan must be tiled first."""
MAX_SIDE = 8192


def find_images(items: Sequence[str | Path]) -> list[Path]:
    """Image files from arguments that are files or folders (folders searched recursively, sorted, for
    :data:`FOUND_SUFFIXES`: whole slides' formats too, which ``analyze`` tells from fields).

    Raises:
        LeukolensError: a path does not exist, or there is no image at all.
    """
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FOUND_SUFFIXES))
        elif path.is_file():
            paths.append(path)
        else:
            raise LeukolensError(f"{path}: no such file or folder")
    if not paths:
        raise LeukolensError(
            "no images found in " + ", ".join(str(i) for i in items) + f" (looked for {', '.join(FOUND_SUFFIXES)})"
        )
    return paths


def load_field(path: Path) -> tuple[Image.Image, list[str]]:
    """An RGB field and notes on what was done to it.

    Raises:
        LeukolensError: unreadable, corrupt, or too large, with the reason.
    """
    notes = []
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
                raise LeukolensError(
                    f"{path}: image is {width}x{height} px, larger than a microscope field (at most {MAX_SIDE} px a "
                    f"side and {MAX_PIXELS // 1_000_000} megapixels); cut it into fields first"
                )
            if width < 32 or height < 32:
                raise LeukolensError(f"{path}: image is {width}x{height} px, too small to be a smear field")
            image.load()
            if image.mode != "RGB":
                notes.append(f"converted from {image.mode} to RGB")
            return image.convert("RGB"), notes
    except LeukolensError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise LeukolensError(f"{path}: cannot read image ({error})") from None


def detector_export(checkpoint: DetectorCheckpoint) -> tuple[FieldNetwork, Export]:
    """The network of ``checkpoint`` with its input conversion inside, and how it is exported to ONNX: ``uint8``
    canvases ``[n, h, w, 3]`` in; peak heatmaps, sizes and offsets out."""
    size = checkpoint.input_size
    export = Export(
        name="detector",
        tag="u8",
        example=torch.zeros(1, size, size, 3, dtype=torch.uint8),
        input_name="canvases",
        output_names=("peaks", "size", "offset"),
        dynamic_axes={0: "batch", 1: "height", 2: "width"},
    )
    return FieldNetwork(checkpoint.build(), checkpoint.mean, checkpoint.std), export


def detector_engine(
    checkpoint: DetectorCheckpoint, *, engine: str, path: Path | None, threads: int | None = None,
    cache_dir: Path | None = None,
) -> Engine:
    """The detector of ``checkpoint`` on ``engine``, taking ``uint8`` canvases ``[n, h, w, 3]``."""
    network, export = detector_export(checkpoint)
    return Engine(network, export, engine=engine, checkpoint_path=path, cache_dir=cache_dir, threads=threads)


class Detector:
    """A detector ready to run, with the preprocessing its checkpoint prescribes."""

    def __init__(
        self,
        checkpoint: DetectorCheckpoint,
        *,
        path: Path | None = None,
        engine: str = "auto",
        threads: int | None = None,
        cache_dir: Path | None = None,
    ):
        self.checkpoint = checkpoint
        self.path = path
        self._stain = stain_normalizer(checkpoint.stain)
        self.engine = detector_engine(checkpoint, engine=engine, path=path, threads=threads, cache_dir=cache_dir)
        size = checkpoint.input_size
        self.scale_config = ScaleConfig(
            input_size=size, rbc_diameter=learnt_rbc_diameter(input_size=size, metrics=checkpoint.metrics)
        )

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, **kwargs) -> Detector:
        """Load a detector checkpoint (the shipped one when ``path`` is None)."""
        path = weights.resolve("detector", path)
        return cls(load_detector(path), path=path, **kwargs)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.checkpoint.classes

    @property
    def score_threshold(self) -> float:
        return self.checkpoint.score_threshold

    # -------------------------------------------------------------------------------------------------- pixels
    def normalise(self, image: Image.Image) -> np.ndarray:
        """The field as ``uint8 [h, w, 3]``, stain-normalised when the checkpoint was trained on normalised fields
        (done once per field, before the scale estimate and the detection)."""
        array = np.asarray(image.convert("RGB"))
        return self._stain(array) if self._stain is not None else array

    def preprocess(self, image: Image.Image):
        """The letterboxed canvas of ``image`` (as in training) and the mapping back."""
        return self._letterbox(self.normalise(image))

    def _letterbox(self, array: np.ndarray):
        canvas, _, box = letterbox(Image.fromarray(array), size=self.checkpoint.input_size)
        return canvas, box

    def run(self, canvases: np.ndarray, *, threshold: float = 0.01) -> list[Detections]:
        """Detections in canvas pixels for ``uint8`` canvases ``[batch, h, w, 3]`` of one shape."""
        peaks, size, offset = self.engine(np.ascontiguousarray(canvases, dtype=np.uint8))
        return decode(peaks, size, offset, stride=self.checkpoint.config.stride, threshold=threshold)

    def run_native(
        self, images: Sequence[np.ndarray], *, threshold: float = 0.01, batch_size: int = 8
    ) -> list[Detections]:
        """Detections of images ``uint8 [h, w, 3]`` run at their own pixels: each padded to a multiple of 32 with
        :data:`~leukolens.predict.scale.PAD_COLOUR` (never resized), images of one padded shape batched; peaks in
        the padding dropped, boxes clipped to the image."""
        canvases = [pad_to_multiple(image) for image in images]
        results: list[Detections | None] = [None] * len(images)
        for indices in _by_shape(canvases).values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                found = self.run(np.stack([canvases[i] for i in chunk]), threshold=threshold)
                for i, detections in zip(chunk, found):
                    results[i] = _inside(detections, *images[i].shape[1::-1])
        return results  # type: ignore[return-value]

    def detect_native(self, image: np.ndarray, *, threshold: float = 0.01):
        """``detect(image) -> (boxes, scores, labels)`` at the image's own pixels, as
        :mod:`leukolens.predict.scale` takes it."""
        found = self.run_native([image], threshold=threshold)[0]
        return found.boxes, found.scores, found.labels

    # -------------------------------------------------------------------------------------------------- scale
    def estimate_scale(self, image: Image.Image, *, microns_per_pixel: float | None = None) -> FieldScale:
        """One field's scale from its own red cells (or ``microns_per_pixel`` when given)."""
        return self._estimate(self.normalise(image), microns_per_pixel=microns_per_pixel)

    def red_cell_scale(self, image: Image.Image) -> float | None:
        """µm per pixel of one image from its own red cells; None when too few were found (no fallback)."""
        scale = self.estimate_scale(image)
        return scale.microns_per_pixel if scale.method == RED_CELLS else None

    def _estimate(self, array: np.ndarray, *, microns_per_pixel: float | None = None) -> FieldScale:
        return self._sample_scale([array], microns_per_pixel)

    def sample_scale(
        self, images: Sequence[Image.Image], *, microns_per_pixel: float | None = None, fields: int = SAMPLE_FIELDS
    ) -> FieldScale:
        """The scale of a sample (one slide on one microscope) from the red cells of its first ``fields`` images,
        pooled (:func:`~leukolens.predict.scale.estimate_sample_scale`; ``microns_per_pixel`` when given). With
        too few red cells to go on, the fallback: every field is then letterboxed as in training."""
        return self._sample_scale([self.normalise(im) for im in images[:fields]], microns_per_pixel)

    def _sample_scale(self, arrays: Sequence[np.ndarray], microns_per_pixel: float | None) -> FieldScale:
        def detect(window: np.ndarray):
            return self.detect_native(window, threshold=self.scale_config.rbc_score)

        return estimate_sample_scale(
            arrays, detect, classes=self.classes, config=self.scale_config, microns_per_pixel=microns_per_pixel
        )

    # -------------------------------------------------------------------------------------------------- detect
    def detect(
        self,
        images: Sequence[Image.Image],
        *,
        threshold: float | None = None,
        batch_size: int = 8,
        scale: str = "auto",
        microns_per_pixel: float | None = None,
        field_scale: FieldScale | None = None,
    ) -> list[FieldDetections]:
        """Detections in each image's own pixels, scores at or above ``threshold`` (default: the checkpoint's).

        Args:
            images: the fields.
            threshold: score threshold (default: the checkpoint's).
            batch_size: inputs run through the network together (inputs of one shape only).
            scale: ``"auto"``: each field at the scale the detector learnt, tiled when larger than one input there;
                ``"letterbox"``: each field's longer side to the input size, as in training (the behaviour before the
                scale estimate, for comparison).
            microns_per_pixel: the fields' scale, when known: no estimate is made (``"auto"`` only).
            field_scale: one scale for every field (e.g. :meth:`sample_scale` of the sample they belong to). Without
                it or ``microns_per_pixel``, the scale is estimated once per image size among ``images`` (on up to
                the first three images of that size).

        Raises:
            LeukolensError: an unknown ``scale``.
        """
        if scale not in SCALE_MODES:
            raise LeukolensError(f"unknown scale {scale!r}: use one of {', '.join(SCALE_MODES)}")
        threshold = self.score_threshold if threshold is None else threshold
        arrays = [self.normalise(image) for image in images]
        if scale == "letterbox":
            scales = [self._asked_letterbox(a) for a in arrays]
        elif field_scale is not None or microns_per_pixel is not None:
            given = field_scale or scale_from_microns_per_pixel(microns_per_pixel, self.scale_config)
            scales = [given] * len(arrays)
        else:
            by_size = _by_shape(arrays)
            per_size = {
                size: self._sample_scale([arrays[i] for i in indices[:SAMPLE_FIELDS]], None)
                for size, indices in by_size.items()
            }
            scales = [per_size[a.shape[:2]] for a in arrays]
        scales = [self._for_field(s, a) for s, a in zip(scales, arrays)]
        return self._detect_at(arrays, scales, threshold=threshold, batch_size=batch_size)

    def _asked_letterbox(self, array: np.ndarray) -> FieldScale:
        height, width = array.shape[:2]
        return FieldScale(None, letterbox_factor(width, height, self.scale_config.input_size), 0, LETTERBOX, fields=0)

    def _for_field(self, scale: FieldScale, array: np.ndarray) -> FieldScale:
        """A sample's scale as this field uses it: a fallback with the field's own letterbox factor; a factor that
        would just spill over one input fitted into it (:func:`~leukolens.predict.scale.fitted_factor`)."""
        height, width = array.shape[:2]
        if scale.method == FALLBACK:
            return replace(scale, factor=letterbox_factor(width, height, self.scale_config.input_size))
        if scale.method == LETTERBOX:
            return scale
        return replace(scale, factor=fitted_factor(scale.factor, width, height, self.scale_config))

    def _detect_at(
        self, arrays: Sequence[np.ndarray], scales: Sequence[FieldScale], *, threshold: float, batch_size: int
    ) -> list[FieldDetections]:
        """Every field at its scale: letterboxed (fallback or asked) or tiled at the working scale; the inputs of all
        fields run together, batched by shape."""
        inputs: list[np.ndarray] = []
        plans = []  # per field: ("letterbox", mapping back, input index) or ("tiles", tiles, first input index)
        for array, scale in zip(arrays, scales):
            if scale.method in (FALLBACK, LETTERBOX):
                canvas, box = self._letterbox(array)
                plans.append(("letterbox", box, len(inputs)))
                inputs.append(canvas)
            else:
                tiles, images = tiles_at_scale(array, factor=scale.factor, config=self.scale_config)
                plans.append(("tiles", tiles, len(inputs)))
                inputs.extend(pad_to_multiple(im) for im in images)
        found: list[Detections | None] = [None] * len(inputs)
        for indices in _by_shape(inputs).values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                for i, detections in zip(chunk, self.run(np.stack([inputs[i] for i in chunk]), threshold=threshold)):
                    found[i] = detections
        results = []
        for array, scale, (kind, layout, first) in zip(arrays, scales, plans):
            size = (array.shape[1], array.shape[0])
            if kind == "letterbox":
                results.append(self._in_image(found[first], layout, size, scale=scale, tiles=1))
                continue
            working = [
                _inside(found[first + k], tile.width, tile.height) for k, tile in enumerate(layout)
            ]
            merged = merge_tiles(working, layout, factor=scale.factor)
            results.append(self._native(merged, size, scale=scale, tiles=len(layout)))
        return results

    def _native(self, detections: Detections, size: tuple[int, int], *, scale: FieldScale, tiles: int):
        """Merged detections (native pixels) clipped to the image; boxes squeezed to nothing dropped."""
        boxes = detections.boxes.copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, size[0])
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, size[1])
        real = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        return FieldDetections(
            boxes[real], detections.scores[real], detections.labels[real], canvas_size=size, classes=self.classes,
            scale=scale, tiles=tiles,
        )

    def _in_image(
        self, detections: Detections, box, size: tuple[int, int], *, scale: FieldScale | None = None, tiles: int = 1
    ) -> FieldDetections:
        """Canvas detections brought back to the image's pixels."""
        centres = (detections.boxes[:, :2] + detections.boxes[:, 2:]) / 2 / (box.scale_x, box.scale_y)
        boxes = box.to_original(detections.boxes)
        # A peak in the padding, or a box squeezed to nothing by the image border, is no cell.
        real = (
            (centres[:, 0] < box.width)
            & (centres[:, 1] < box.height)
            & (boxes[:, 2] - boxes[:, 0] >= 1)
            & (boxes[:, 3] - boxes[:, 1] >= 1)
        )
        return FieldDetections(
            boxes[real], detections.scores[real], detections.labels[real], canvas_size=size, classes=self.classes,
            scale=scale, tiles=tiles,
        )


def _by_shape(arrays: Sequence[np.ndarray]) -> dict[tuple[int, int], list[int]]:
    """Indices of the arrays by their (height, width), in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, array in enumerate(arrays):
        groups.setdefault(array.shape[:2], []).append(i)
    return groups


def _inside(detections: Detections, width: int, height: int) -> Detections:
    """Detections of an image padded right and bottom: peaks in the padding dropped, boxes clipped to the image."""
    centres = (detections.boxes[:, :2] + detections.boxes[:, 2:]) / 2
    keep = (centres[:, 0] < width) & (centres[:, 1] < height)
    boxes = detections.boxes[keep].copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return Detections(boxes, detections.scores[keep], detections.labels[keep])
