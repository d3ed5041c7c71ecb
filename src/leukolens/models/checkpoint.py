"""Checkpoints of every kind, saved and loaded one way; preprocessing travels with the weights.

Load any kind with one call, and use it with nothing else::

    from leukolens.models.checkpoint import load_checkpoint, save_checkpoint

    cells = load_checkpoint(path)                       # kind="cells": a CellCheckpoint
    detector = load_checkpoint(path, kind="detector")   # a DetectorCheckpoint
    clip = load_checkpoint(path, kind="clip")           # a ClipCheckpoint (the image-text model)
    gan = load_checkpoint(path, kind="gan")             # a GanCheckpoint (the EMA generator)
    network = cells.build()                             # the network with its weights, in eval mode
    cells.preprocess                                    # input size, mean/std, crop rule, stain reference
    save_checkpoint(cells, "copy.pt")                   # any kind; float weights in float16 unless half=False

The older names (``save_detector``/``load_detector``, ``save_clip``/``load_clip``, ``save_gan``/``load_gan``) call
these two. A file is one dict, the envelope::

    {"format": "leukolens-checkpoint", "format_version": 1,
     "kind": "cells" | "detector" | "clip" | "gan" | "gan-training",
     "config": the network's config, "preprocess": Preprocess.as_dict(),
     "inference": what using the weights needs besides (the cell model's attribute schema, atypicality scorer and,
                  when fitted, blast scorer and size prior; the detector's counting threshold, the image-text model's
                  text prototypes, the GAN's attribute combinations),
     "state_dict": the weights, "metrics": what they reached, "train": the training record,
     "extra": the state for --resume (optimisers, epoch)}

written atomically and read with ``torch.load(weights_only=True)``. A file of another kind or format version, or
not a checkpoint at all, raises :class:`~leukolens.errors.LeukolensError` saying so. Files from before the envelope
(formats ``leukolens-cellnet/1``, ``-detector/1``, ``-clip/1``, ``-gan/1``, ``-gan-state/1``, the shipped weights
among them) are read through :func:`migrate_legacy` and left unchanged on disk: the image-text model names its cell
model by SHA-256, so rewriting ``cellnet-pbc.pt`` would orphan ``clip-pbc.pt``.
"""

from __future__ import annotations

import importlib
import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, TypeVar, overload

import torch

from leukolens.data.cells import CropConfig
from leukolens.errors import LeukolensError, atomic_write_bytes
from leukolens.models.backbones import SPECS
from leukolens.models.cellnet import CellNet, CellNetConfig
from leukolens.models.preprocess import Preprocess, PreprocessFields, StainReference, stored_stain

if TYPE_CHECKING:
    from leukolens.models.clip import ClipCheckpoint
    from leukolens.models.detector import DetectorCheckpoint
    from leukolens.models.gan_checkpoint import GanCheckpoint, GanTrainingState

FORMAT = "leukolens-checkpoint"
FORMAT_VERSION = 1

# kind -> (article, what it is), for messages; and where its checkpoint class lives (imported when first needed,
# since those modules import this one)
KINDS = {
    "cells": ("a", "cell model"),
    "detector": ("a", "detector"),
    "clip": ("an", "image-text model"),
    "gan": ("a", "GAN generator"),
    "gan-training": ("a", "GAN training state"),
}
_CLASSES = {
    "cells": ("leukolens.models.checkpoint", "CellCheckpoint"),
    "detector": ("leukolens.models.detector", "DetectorCheckpoint"),
    "clip": ("leukolens.models.clip", "ClipCheckpoint"),
    "gan": ("leukolens.models.gan_checkpoint", "GanCheckpoint"),
    "gan-training": ("leukolens.models.gan_checkpoint", "GanTrainingState"),
}
_MISSING = {
    "cells": "checkpoint not found",
    "detector": "detector checkpoint not found",
    "clip": "image-text model not found",
    "gan": "GAN generator not found (train one with `leukolens train gan`)",
    "gan-training": "no GAN training state to resume",
}
Kind = Literal["cells", "detector", "clip", "gan", "gan-training"]
NetworkT = TypeVar("NetworkT", bound=torch.nn.Module)


class Checkpoint(Protocol):
    """What every checkpoint class provides to be saved and loaded here."""

    kind: ClassVar[str]
    state_dict: dict[str, torch.Tensor]

    def to_envelope(self) -> dict:
        """The envelope's sections but the header and the weights: config, preprocess, inference, metrics, ..."""

    @classmethod
    def from_envelope(cls, envelope: dict) -> Checkpoint:
        """The checkpoint from a read envelope (header checked, weights as stored)."""


# ------------------------------------------------------------------------------------------------------ save / load
def save_checkpoint(checkpoint: Checkpoint, path: str | Path, *, half: bool = True) -> Path:
    """Write any checkpoint atomically as an envelope; float weights in float16 when ``half`` (halves the file)."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": checkpoint.kind, **checkpoint.to_envelope()}
    payload["state_dict"] = {
        k: v.detach().half() if half and v.is_floating_point() else v.detach() for k, v in checkpoint.state_dict.items()
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


@overload
def load_checkpoint(path: str | Path, kind: Literal["cells"] = "cells") -> CellCheckpoint: ...
@overload
def load_checkpoint(path: str | Path, kind: Literal["detector"]) -> DetectorCheckpoint: ...
@overload
def load_checkpoint(path: str | Path, kind: Literal["clip"]) -> ClipCheckpoint: ...
@overload
def load_checkpoint(path: str | Path, kind: Literal["gan"]) -> GanCheckpoint: ...
@overload
def load_checkpoint(path: str | Path, kind: Literal["gan-training"]) -> GanTrainingState: ...
def load_checkpoint(path: str | Path, kind: Kind = "cells") -> Checkpoint:
    """Read a checkpoint of ``kind`` (a cell model unless told otherwise).

    Raises:
        LeukolensError: missing, unreadable, not a leukolens checkpoint, another format version, or another kind.
    """
    envelope = read_envelope(path, kind=kind)
    module, name = _CLASSES[kind]
    return getattr(importlib.import_module(module), name).from_envelope(envelope)


def read_envelope(path: str | Path, *, kind: Kind) -> dict:
    """The envelope of a checkpoint of ``kind``, legacy files migrated, weights as stored.

    Raises:
        LeukolensError: as :func:`load_checkpoint`.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}: use one of {', '.join(KINDS)}")
    payload = _read_payload(Path(path), missing=_MISSING[kind], what=f"{KINDS[kind][1]} ")
    found_kind = payload.get("kind")
    if found_kind != kind:
        raise LeukolensError(f"{path} is {_a_kind(found_kind)} checkpoint, not {' '.join(KINDS[kind])}")
    return payload


def load_any_checkpoint(path: str | Path, *, kinds: tuple[str, ...] = tuple(KINDS)) -> Checkpoint:
    """Read a checkpoint of whichever of ``kinds`` the file holds (its ``kind`` says which): for commands that take
    several kinds, such as ``leukolens export onnx``.

    Raises:
        LeukolensError: as :func:`load_checkpoint`, or a kind not among ``kinds``.
    """
    payload = _read_payload(Path(path), missing="checkpoint not found", what="")
    found_kind = payload.get("kind")
    if found_kind not in kinds:
        wanted = " or ".join(" ".join(KINDS[k]) for k in kinds)
        raise LeukolensError(f"{path} is {_a_kind(found_kind)} checkpoint, not {wanted}")
    module, name = _CLASSES[found_kind]
    return getattr(importlib.import_module(module), name).from_envelope(payload)


def _a_kind(kind) -> str:
    """A checkpoint kind for messages, with its article ("a detector")."""
    other = KINDS.get(kind, ("a", repr(kind))) if isinstance(kind, str) else ("a", "kindless")
    return " ".join(other)


def _read_payload(path: Path, *, missing: str, what: str) -> dict:
    """A checkpoint file's envelope of any kind (legacy files migrated), its format and version checked."""
    if not path.is_file():
        raise LeukolensError(f"{path}: {missing}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a corrupt file
        raise LeukolensError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None
    found = payload.get("format") if isinstance(payload, dict) else None
    if found in LEGACY_FORMATS:
        payload = migrate_legacy(payload)
    elif found != FORMAT:
        detail = f"its format is {found!r}" if isinstance(found, str) else "no leukolens format inside"
        raise LeukolensError(f"{path}: not a leukolens {what}checkpoint ({detail})")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise LeukolensError(
            f"{path}: checkpoint format version {version}, but this leukolens reads version {FORMAT_VERSION}"
            + ("; it was written by a newer leukolens: upgrade to load it" if newer else "")
        )
    return payload


def float32(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stored weights back in float32 (they may be float16 on disk); integer buffers as they are."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}


def with_weights(network: NetworkT, state_dict: dict[str, torch.Tensor]) -> NetworkT:
    """``network`` with the stored weights (back in float32), in eval mode."""
    network.load_state_dict(float32(state_dict))
    return network.eval()


def envelope_sections(checkpoint: Checkpoint, inference: dict) -> dict:
    """What a checkpoint class's ``to_envelope`` returns: the envelope's sections but the header and the weights,
    from the checkpoint's ``config`` and, where it has them, ``preprocess``, ``metrics``, ``train`` and ``extra``."""
    preprocess = getattr(checkpoint, "preprocess", None)
    return {
        "config": checkpoint.config.as_dict(),
        "preprocess": preprocess.as_dict() if preprocess is not None else None,
        "inference": inference,
        "metrics": getattr(checkpoint, "metrics", {}),
        "train": getattr(checkpoint, "train", {}),
        "extra": getattr(checkpoint, "extra", {}),
    }


def records(envelope: dict) -> dict:
    """The metrics, training record and resume state of a read envelope (empty dicts where absent), as the keyword
    arguments of a checkpoint class."""
    return {name: envelope.get(name) or {} for name in ("metrics", "train", "extra")}


# ------------------------------------------------------------------------------------------------------ legacy files
LEGACY_FORMATS = (
    "leukolens-cellnet/1",
    "leukolens-detector/1",
    "leukolens-clip/1",
    "leukolens-gan/1",
    "leukolens-gan-state/1",
)


def migrate_legacy(payload: dict) -> dict:
    """The envelope of a checkpoint written before it (one of :data:`LEGACY_FORMATS`); tensors are not copied."""
    legacy = payload["format"]
    envelope = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": payload["config"],
        "preprocess": None,
        "inference": {},
        "state_dict": payload["state_dict"],
        "metrics": payload.get("metrics") or {},
        "train": payload.get("train") or {},
        "extra": payload.get("extra") or {},
    }
    if legacy == "leukolens-cellnet/1":
        preprocess = Preprocess.for_crops(
            CropConfig(**payload["crop"]),
            mean=payload["mean"],
            std=payload["std"],
            stain=StainReference.from_dict(payload.get("stain") or {}),
            training_stain=StainReference.from_dict(payload.get("training_stain") or {}),
        )
        inference = {"schema": payload.get("schema"), "atypicality": payload.get("atypicality")}
        return {**envelope, "kind": "cells", "preprocess": preprocess.as_dict(), "inference": inference}
    if legacy == "leukolens-detector/1":
        preprocess = Preprocess.for_fields(
            int(payload["input_size"]),
            mean=payload["mean"],
            std=payload["std"],
            stain=StainReference.from_dict(payload.get("stain") or {}),  # absent from the oldest files
        )
        inference = {"score_threshold": float(payload["score_threshold"])}
        return {**envelope, "kind": "detector", "preprocess": preprocess.as_dict(), "inference": inference}
    if legacy == "leukolens-clip/1":  # its preprocessing is its image tower's config, read from "config"
        return {**envelope, "kind": "clip", "inference": {"prototypes": payload.get("prototypes") or {}}}
    if legacy == "leukolens-gan/1":
        from leukolens.models.gan_checkpoint import generator_preprocess

        preprocess = generator_preprocess(payload["config"]["image_size"], payload["crop_mode"], payload["context"])
        inference = {"attribute_pool": payload.get("attribute_pool") or []}
        return {**envelope, "kind": "gan", "preprocess": preprocess.as_dict(), "inference": inference}
    return {**envelope, "kind": "gan-training"}  # leukolens-gan-state/1


# ------------------------------------------------------------------------------------------------------ cell model
@dataclass
class CellCheckpoint(PreprocessFields):
    """A cell model and what it needs to be used: the network config, the preprocessing (crop, normalisation,
    stain reference, training colour statistics), the attribute schema's name, the fitted atypicality and blast
    scorers, the size prior, the metrics it reached, and the training record."""

    kind: ClassVar[str] = "cells"

    config: CellNetConfig
    preprocess: Preprocess
    state_dict: dict[str, torch.Tensor]
    schema: str | None = None
    atypicality: dict | None = None
    blast: dict | None = None  # the fitted blast scorer (models.blast.BlastScorer.as_dict); None in older files
    size: dict | None = None  # cell sizes per class (models.size.SizePrior.as_dict); None in older files
    metrics: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # e.g. optimizer state for --resume

    @property
    def fixed_norm_statistics(self) -> bool:
        """Trained with ImageNet's batch-norm statistics kept (``--freeze-norm``): its weights learnt around them,
        so re-estimating them on a sample or a lab's cells costs accuracy (docs/domains.md)."""
        return bool((self.train or {}).get("freeze_norm", False))

    # The fields before the preprocessing record, as properties (input_size, mean, std from PreprocessFields)
    @property
    def crop(self) -> CropConfig:
        return self.preprocess.crop

    @property
    def stain(self) -> dict | None:
        """The stain reference every crop is normalised to, in its stored form (None: crops go in as they are)."""
        return stored_stain(self.preprocess.stain)

    @stain.setter
    def stain(self, stored: dict | None) -> None:
        self.preprocess = replace(self.preprocess, stain=StainReference.from_dict(stored or {}))

    @property
    def training_stain(self) -> dict | None:
        """The training cells' own colour statistics (Reinhard), in their stored form."""
        return stored_stain(self.preprocess.training_stain)

    @training_stain.setter
    def training_stain(self, stored: dict | None) -> None:
        self.preprocess = replace(self.preprocess, training_stain=StainReference.from_dict(stored or {}))

    def build(self) -> CellNet:
        """The network with these weights, in eval mode."""
        model = CellNet(self.config, pretrained=False)
        state = float32(self.state_dict)
        state.setdefault("temperatures", model.temperatures)  # checkpoints from before calibration existed
        model.load_state_dict(state)
        return model.eval()

    def to_envelope(self) -> dict:
        inference = {"schema": self.schema, "atypicality": self.atypicality}
        if self.blast is not None:  # files without a blast scorer stay as they were
            inference["blast"] = self.blast
        if self.size is not None:
            inference["size"] = self.size
        return envelope_sections(self, inference)

    @classmethod
    def from_envelope(cls, envelope: dict) -> CellCheckpoint:
        inference = envelope.get("inference") or {}
        return cls(
            config=CellNetConfig.from_dict(envelope["config"]),
            preprocess=Preprocess.from_dict(envelope["preprocess"]),
            state_dict=envelope["state_dict"],
            schema=inference.get("schema"),
            atypicality=inference.get("atypicality"),
            blast=inference.get("blast"),
            size=inference.get("size"),
            **records(envelope),
        )


def from_model(
    model: CellNet, crop: CropConfig, *, stain: dict | None = None, training_stain: dict | None = None, **kwargs
) -> CellCheckpoint:
    """A checkpoint of ``model`` whose crops are cut by ``crop``, normalised as its backbone expects.

    Args:
        stain: the stored stain reference every crop is normalised to (``{"method", "reference"}``), if any.
        training_stain: the training cells' colour statistics in the same form, if known.
        kwargs: the other :class:`CellCheckpoint` fields (schema, atypicality, blast, metrics, train, extra).
    """
    spec = SPECS[model.config.backbone]
    preprocess = Preprocess.for_crops(
        crop,
        mean=spec.mean,
        std=spec.std,
        stain=StainReference.from_dict(stain or {}),
        training_stain=StainReference.from_dict(training_stain or {}),
    )
    return CellCheckpoint(model.config, preprocess, model.state_dict(), **kwargs)
