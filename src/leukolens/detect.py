"""Find the cells in whole smear fields with a trained detector.

    >>> from leukolens.detect import Detector
    >>> detector = Detector.from_checkpoint()              # the shipped weights
    >>> found = detector.detect([Image.open("field.jpg")])[0]
    >>> found.boxes, found.scores, [detector.classes[i] for i in found.labels]

Fields are letterboxed exactly as in training (longer side to the checkpoint's input size, padded to a multiple of
32); boxes come back in the original image's pixels. ONNX Runtime runs the network about twice as fast as eager
PyTorch on two cores; the export is cached per checkpoint file and input shape.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from leukolens.data.fields import letterbox
from leukolens.io.common import LeukolensError
from leukolens.models.detector import Detections, DetectorCheckpoint, FieldNetwork, decode, load_detector
from leukolens.models.runtime import onnx_session

DEFAULT_DETECTOR = "detector-bccd.pt"
ENGINES = ("auto", "torch", "onnx")


def default_detector() -> Path:
    """The detector shipped inside the package."""
    return Path(str(resources.files("leukolens") / "weights" / DEFAULT_DETECTOR))


def _network(checkpoint: DetectorCheckpoint) -> FieldNetwork:
    return FieldNetwork(checkpoint.build(), checkpoint.mean, checkpoint.std).eval()


class _TorchEngine:
    def __init__(self, checkpoint: DetectorCheckpoint):
        self.network = _network(checkpoint).to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, canvases: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(o.numpy() for o in self.network(torch.from_numpy(canvases)))


class _OnnxEngine:
    def __init__(self, checkpoint: DetectorCheckpoint, path: Path, threads: int | None):
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            example = torch.zeros(1, checkpoint.input_size, checkpoint.input_size, 3, dtype=torch.uint8)
            torch.onnx.export(
                _network(checkpoint),
                example,
                tmp,
                input_names=["canvases"],
                output_names=["peaks", "size", "offset"],
                dynamic_axes={"canvases": {0: "batch", 1: "height", 2: "width"}},
                opset_version=17,
                dynamo=False,
            )
            tmp.replace(path)
        self.session = onnx_session(path, threads=threads)

    def __call__(self, canvases: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(self.session.run(None, {"canvases": canvases}))


def _onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


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
        if engine not in ENGINES:
            raise LeukolensError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
        self.checkpoint = checkpoint
        self.path = path
        self._stain = None
        if checkpoint.stain and checkpoint.stain.get("method", "none") != "none":
            from leukolens.data.stain import normalizer_from_reference

            self._stain = normalizer_from_reference(checkpoint.stain)
        if engine == "onnx" or (engine == "auto" and _onnx_available() and path is not None):
            if path is None:
                raise LeukolensError("the onnx engine needs the checkpoint's path (to cache the exported model)")
            digest = hashlib.sha1(Path(path).read_bytes()).hexdigest()[:16]
            cache = Path(cache_dir or os.environ.get("LEUKOLENS_CACHE", Path.home() / ".cache" / "leukolens"))
            self.engine = _OnnxEngine(checkpoint, cache / "onnx" / f"detector-{digest}-u8.onnx", threads)
        else:
            self.engine = _TorchEngine(checkpoint)

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, **kwargs) -> Detector:
        """Load a detector checkpoint (the shipped one when ``path`` is None)."""
        path = Path(path) if path is not None else default_detector()
        if not path.is_file() and path == default_detector():
            raise LeukolensError(f"no shipped detector at {path}: train one with `leukolens train detector`")
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
        """Detections in input pixels for ``uint8`` canvases ``[batch, h, w, 3]`` of one shape."""
        peaks, size, offset = self.engine(np.ascontiguousarray(canvases, dtype=np.uint8))
        return decode(peaks, size, offset, stride=self.checkpoint.config.stride, threshold=threshold)

    def detect(
        self, images: Sequence[Image.Image], *, threshold: float | None = None, batch_size: int = 8
    ) -> list[Detections]:
        """Detections in each image's own pixels, scores at or above ``threshold`` (default: the checkpoint's)."""
        threshold = self.score_threshold if threshold is None else threshold
        prepared = [self.preprocess(image) for image in images]
        results: list[Detections | None] = [None] * len(prepared)
        # Images of one canvas shape run together; others wait for their own batch.
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, (canvas, _) in enumerate(prepared):
            by_shape.setdefault(canvas.shape[:2], []).append(i)
        for indices in by_shape.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                found = self.run(np.stack([prepared[i][0] for i in chunk]), threshold=threshold)
                for i, detections in zip(chunk, found):
                    box = prepared[i][1]
                    centres = (detections.boxes[:, :2] + detections.boxes[:, 2:]) / 2 / (box.scale_x, box.scale_y)
                    boxes = box.to_original(detections.boxes)
                    # A peak in the padding, or a box squeezed to nothing by the image border, is no cell.
                    real = (
                        (centres[:, 0] < box.width)
                        & (centres[:, 1] < box.height)
                        & (boxes[:, 2] - boxes[:, 0] >= 1)
                        & (boxes[:, 3] - boxes[:, 1] >= 1)
                    )
                    results[i] = Detections(boxes[real], detections.scores[real], detections.labels[real])
        return results  # type: ignore[return-value]
