"""What turns an image into a model's input: the record every checkpoint carries (open_clip's ``PreprocessCfg``,
torchvision's ``Weights.transforms``).

A :class:`Preprocess` says how big the input is, how pixels are normalised, how the image is brought to that size
(``crop``: a window cut around each cell by a :class:`~leukolens.data.cells.CropConfig`; ``letterbox``: a whole
field scaled so its longer side is ``input_size`` and padded to a square), and which stain reference, if any, every
image is normalised to first. It is stored in each checkpoint as a plain dict (:meth:`Preprocess.as_dict`), so a
checkpoint needs nothing else to be used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from leukolens.data.cells import CropConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RULES = ("crop", "letterbox")


@dataclass(frozen=True)
class StainReference:
    """A stain normalisation: the method and the reference statistics it was fitted to."""

    method: str  # "reinhard" | "macenko"
    reference: dict  # as :func:`leukolens.data.stain.fit_reference` returns them (lists, JSON- and torch-safe)

    def as_dict(self) -> dict:
        """The stored form, which :func:`leukolens.data.stain.normalizer_from_reference` reads."""
        return {"method": self.method, "reference": self.reference}

    @classmethod
    def from_dict(cls, stored: dict) -> StainReference | None:
        """The reference a checkpoint stores; None for an empty dict or method ``none`` (no normalisation)."""
        if not stored or stored.get("method", "none") == "none":
            return None
        return cls(stored["method"], stored.get("reference") or {})

    def normalizer(self) -> Callable[[np.ndarray], np.ndarray]:
        """A function normalising ``uint8`` RGB images ``[h, w, 3]`` to this reference."""
        from leukolens.data.stain import normalizer_from_reference

        return normalizer_from_reference(self.as_dict())


def stored_stain(reference: StainReference | None) -> dict | None:
    """A stain reference in its stored form; None for none."""
    return reference.as_dict() if reference is not None else None


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input.

    Attributes:
        input_size: side of the square input, in pixels (for ``letterbox``, the longer side of the field).
        mean: per-channel mean of the normalisation, on pixels scaled to 0..1 (RGB).
        std: per-channel standard deviation of the normalisation.
        resize: ``crop`` (cell windows cut by ``crop``) or ``letterbox`` (whole fields, longer side to
            ``input_size``, padded).
        crop: how a cell is cut (window, context, mode); required for ``crop``, absent for ``letterbox``.
        stain: the reference every image is normalised to before the model, if any.
        training_stain: the training images' own colour statistics (Reinhard), whatever ``stain`` is: lets a user
            match images from another microscope to what the model saw (``Predictor(match_stain=True)``).
    """

    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "crop"
    crop: CropConfig | None = None
    stain: StainReference | None = None
    training_stain: StainReference | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need three channels, got {self.mean} and {self.std}")
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"unknown resize rule {self.resize!r}: use one of {', '.join(RESIZE_RULES)}")
        if self.resize == "crop" and self.crop is None:
            raise ValueError("the crop rule needs a CropConfig")
        if self.resize == "letterbox" and self.crop is not None:
            raise ValueError("a letterboxed field has no crop config")
        if self.crop is not None and self.crop.input_size != self.input_size:
            raise ValueError(f"input size {self.input_size} differs from the crop's {self.crop.input_size}")

    @classmethod
    def for_crops(
        cls,
        crop: CropConfig,
        *,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        stain: StainReference | None = None,
        training_stain: StainReference | None = None,
    ) -> Preprocess:
        """Cell crops cut by ``crop`` (cell models, the image-text model's tower, the GAN's training crops)."""
        return cls(crop.input_size, mean, std, "crop", crop, stain, training_stain)

    @classmethod
    def for_fields(
        cls,
        input_size: int,
        *,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        stain: StainReference | None = None,
    ) -> Preprocess:
        """Whole fields letterboxed to ``input_size`` (the detector)."""
        return cls(input_size, mean, std, "letterbox", None, stain)

    def stain_normalizer(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """The normaliser of ``stain``; None when images go to the model as they are."""
        return self.stain.normalizer() if self.stain is not None else None

    def as_dict(self) -> dict:
        """Plain values only (what ``torch.load(weights_only=True)`` and JSON accept)."""
        return {
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
            "crop": asdict(self.crop) if self.crop is not None else None,
            "stain": stored_stain(self.stain),
            "training_stain": stored_stain(self.training_stain),
        }

    @classmethod
    def from_dict(cls, values: dict) -> Preprocess:
        return cls(
            input_size=int(values["input_size"]),
            mean=tuple(values["mean"]),
            std=tuple(values["std"]),
            resize=values.get("resize", "crop"),
            crop=CropConfig(**values["crop"]) if values.get("crop") else None,
            stain=StainReference.from_dict(values.get("stain") or {}),
            training_stain=StainReference.from_dict(values.get("training_stain") or {}),
        )


class PreprocessFields:
    """The fields a checkpoint had before its preprocessing record, read from it (callers still read them).

    A base of checkpoint dataclasses that hold a ``preprocess`` field; it adds no dataclass field.
    """

    preprocess: Preprocess

    @property
    def input_size(self) -> int:
        """The side of the model's input (for a letterboxed field, its longer side), in input pixels."""
        return self.preprocess.input_size

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.preprocess.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.preprocess.std
