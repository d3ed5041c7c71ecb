"""Find the cells in whole smear fields with a trained detector.

    >>> from leukolens.predict import Detector
    >>> detector = Detector.from_checkpoint()              # the shipped weights
    >>> found = detector.detect([Image.open("field.jpg")])[0]
    >>> found.boxes, found.scores, [found.class_name(i) for i in range(len(found))]

Fields are letterboxed exactly as in training (longer side to the checkpoint's input size, padded to a multiple of
32); boxes come back as :class:`~leukolens.predict.results.FieldDetections`: xyxy corners in the original image's
pixels, as floats, with the image's size. ONNX Runtime runs the network about twice as fast as eager PyTorch on two
cores; the export is cached per checkpoint file (see :mod:`leukolens.predict.engine`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from leukolens.data.fields import letterbox
from leukolens.errors import LeukolensError
from leukolens.io.common import IMAGE_SUFFIXES
from leukolens.models.detector import Detections, DetectorCheckpoint, FieldNetwork, decode, load_detector
from leukolens.predict import weights
from leukolens.predict.engine import ENGINES, Engine, Export, stain_normalizer
from leukolens.predict.results import FieldDetections

__all__ = ["ENGINES", "Detector", "FieldDetections", "find_images", "load_field"]

MAX_PIXELS = 40_000_000
"""Larger images are refused: a microscope field is a few megapixels; a whole-slide scan must be tiled first."""
MAX_SIDE = 8192


def find_images(items: Sequence[str | Path]) -> list[Path]:
    """Image files from arguments that are files or folders (folders searched recursively, sorted).

    Raises:
        LeukolensError: a path does not exist, or there is no image at all.
    """
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            paths.append(path)
        else:
            raise LeukolensError(f"{path}: no such file or folder")
    if not paths:
        raise LeukolensError(
            "no images found in " + ", ".join(str(i) for i in items) + f" (looked for {', '.join(IMAGE_SUFFIXES)})"
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


def detector_engine(
    checkpoint: DetectorCheckpoint, *, engine: str, path: Path | None, threads: int | None = None,
    cache_dir: Path | None = None,
) -> Engine:
    """The detector of ``checkpoint`` on ``engine``, taking ``uint8`` canvases ``[n, h, w, 3]``."""
    size = checkpoint.input_size
    export = Export(
        name="detector",
        tag="u8",
        example=torch.zeros(1, size, size, 3, dtype=torch.uint8),
        input_name="canvases",
        output_names=("peaks", "size", "offset"),
        dynamic_axes={0: "batch", 1: "height", 2: "width"},
    )
    network = FieldNetwork(checkpoint.build(), checkpoint.mean, checkpoint.std)
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

    def preprocess(self, image: Image.Image):
        if self._stain is not None:  # the checkpoint was trained on stain-normalised fields
            image = Image.fromarray(self._stain(np.asarray(image.convert("RGB"))))
        canvas, _, box = letterbox(image, size=self.checkpoint.input_size)
        return canvas, box

    def run(self, canvases: np.ndarray, *, threshold: float = 0.01) -> list[Detections]:
        """Detections in canvas pixels for ``uint8`` canvases ``[batch, h, w, 3]`` of one shape."""
        peaks, size, offset = self.engine(np.ascontiguousarray(canvases, dtype=np.uint8))
        return decode(peaks, size, offset, stride=self.checkpoint.config.stride, threshold=threshold)

    def detect(
        self, images: Sequence[Image.Image], *, threshold: float | None = None, batch_size: int = 8
    ) -> list[FieldDetections]:
        """Detections in each image's own pixels, scores at or above ``threshold`` (default: the checkpoint's)."""
        threshold = self.score_threshold if threshold is None else threshold
        prepared = [self.preprocess(image) for image in images]
        results: list[FieldDetections | None] = [None] * len(prepared)
        # Images of one canvas shape run together; others wait for their own batch.
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, (canvas, _) in enumerate(prepared):
            by_shape.setdefault(canvas.shape[:2], []).append(i)
        for indices in by_shape.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                found = self.run(np.stack([prepared[i][0] for i in chunk]), threshold=threshold)
                for i, detections in zip(chunk, found):
                    results[i] = self._in_image(detections, prepared[i][1], images[i].size)
        return results  # type: ignore[return-value]

    def _in_image(self, detections: Detections, box, size: tuple[int, int]) -> FieldDetections:
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
            boxes[real], detections.scores[real], detections.labels[real], canvas_size=size, classes=self.classes
        )
