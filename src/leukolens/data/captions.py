"""Cells with words: each cell's statable content, the sentences to train on, and which sentence is true of which cell.

A cell's content (:func:`leukolens.text.sentences.content_of`) is its class and every attribute with a real value;
in the baseline modes it is only its class (``fixed``) or its slide's diagnosis (``diagnosis``). Contents become
integer codes (:class:`ContentCodes`) so that the positive matrix of a batch, "sentence j is true of cell i", is
one vectorised comparison.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukolens.data.cells import CellSample, load_crops
from leukolens.io.common import LeukolensError
from leukolens.records import AttributeSchema, Dataset
from leukolens.text.sentences import (
    CLASS_KEY,
    Content,
    class_sentence,
    compose,
    consistent,
    content_of,
    partial_contents,
)

DIAGNOSIS_KEY = "diagnosis"
SENTENCE_MODES = ("composed", "fixed", "diagnosis")


@dataclass
class CaptionedCells:
    """The cells of one split: samples to crop, what can be said of each, and where each came from."""

    samples: list[CellSample]
    contents: list[Content]  # class and attributes (all modes keep them, for evaluation)
    diagnoses: list[str | None]
    sample_ids: list[str | None]

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, keep: np.ndarray) -> CaptionedCells:
        index = np.flatnonzero(keep)
        return CaptionedCells(
            [self.samples[i] for i in index],
            [self.contents[i] for i in index],
            [self.diagnoses[i] for i in index],
            [self.sample_ids[i] for i in index],
        )


def captioned_cells(
    dataset: Dataset,
    *,
    classes: tuple[str, ...],
    schema: AttributeSchema | None,
    split: str | None,
    whole_image: bool,
) -> CaptionedCells:
    """Every cell of ``classes`` in ``split`` (None: all), with its content."""
    samples, contents, diagnoses, sample_ids = [], [], [], []
    for f in dataset.fields:
        if split is not None and f.split != split:
            continue
        for cell in f.cells:
            if cell.label not in classes:
                continue
            box = (0.0, 0.0, float(f.width), float(f.height)) if whole_image else cell.box.pixels_xyxy(f.size)
            samples.append(CellSample(f.image, box, f.size, classes.index(cell.label)))
            content = content_of(cell.label, cell.attributes, schema=schema) if schema else ((CLASS_KEY, cell.label),)
            contents.append(content)
            diagnoses.append(f.domain.diagnosis)
            sample_ids.append(f.domain.sample_id)
    return CaptionedCells(samples, contents, diagnoses, sample_ids)


def training_content(cells: CaptionedCells, mode: str) -> list[Content]:
    """What the training sentences of each cell may state, by sentence mode."""
    if mode == "composed":
        return list(cells.contents)
    if mode == "fixed":
        return [tuple(s for s in c if s[0] == CLASS_KEY) for c in cells.contents]
    if mode == "diagnosis":
        if any(d is None for d in cells.diagnoses):
            raise LeukolensError("diagnosis sentences need every field's domain to carry a diagnosis")
        return [((DIAGNOSIS_KEY, d),) for d in cells.diagnoses]
    raise LeukolensError(f"unknown sentence mode {mode!r}: use one of {', '.join(SENTENCE_MODES)}")


def sentence_of(content: Content, *, schema: AttributeSchema | None, rng: random.Random | None = None) -> str:
    """The sentence for a content: a fixed class or diagnosis sentence when that is all it states, else composed."""
    if len(content) == 1 and content[0][0] == DIAGNOSIS_KEY:
        return class_sentence(content[0][1])
    if schema is None:
        raise LeukolensError("composed sentences need an attribute schema")
    return compose(content, schema=schema, rng=rng)


@dataclass
class SentencePool:
    """Training sentences: their text, what each states, and which of them each cell was given."""

    texts: list[str]
    contents: list[Content]
    of_cell: list[list[int]]


def sentence_pool(
    contents: list[Content],
    *,
    mode: str,
    schema: AttributeSchema | None,
    per_cell: int,
    seed: int,
    class_probability: float = 0.5,
) -> SentencePool:
    """``per_cell`` sentences per cell: in ``composed`` mode one full description in a random wording and the rest
    partial (random subsets of the cell's statements); in the fixed modes the one sentence of its class/diagnosis."""
    rng = random.Random(seed)
    index: dict[str, int] = {}
    texts: list[str] = []
    stated: list[Content] = []
    of_cell: list[list[int]] = []

    def add(text: str, content: Content) -> int:
        if text not in index:
            index[text] = len(texts)
            texts.append(text)
            stated.append(content)
        return index[text]

    for content in contents:
        if mode == "fixed":
            label = dict(content)[CLASS_KEY]
            of_cell.append([add(class_sentence(label), content)])
        elif mode == "diagnosis":
            of_cell.append([add(sentence_of(content, schema=schema), content)])
        else:
            chosen = [content] + [
                partial_contents(content, rng, class_probability=class_probability) for _ in range(per_cell - 1)
            ]
            of_cell.append(sorted({add(compose(c, schema=schema, rng=rng), c) for c in chosen}))
    return SentencePool(texts, stated, of_cell)


class ContentCodes:
    """Contents as integer codes ``[n, keys]``: a value's index, -1 where nothing is stated."""

    def __init__(self, contents: list[Content]):
        keys: dict[str, dict[str, int]] = {}
        for content in contents:
            for key, value in content:
                keys.setdefault(key, {}).setdefault(value, len(keys[key]))
        self.keys = keys

    def encode(self, contents: list[Content]) -> np.ndarray:
        names = list(self.keys)
        codes = np.full((len(contents), len(names)), -1, np.int32)
        for row, content in enumerate(contents):
            for key, value in content:
                if key in self.keys:
                    # A value never seen gets a code no cell has, so it matches nothing.
                    codes[row, names.index(key)] = self.keys[key].get(value, 10_000)
        return codes


def positive_matrix(cell_codes: np.ndarray, sentence_codes: np.ndarray) -> np.ndarray:
    """Boolean ``[cells, sentences]``: True where every statement of the sentence holds for the cell."""
    stated = sentence_codes[None, :, :] >= 0  # [1, sentences, keys]
    agree = cell_codes[:, None, :] == sentence_codes[None, :, :]  # [cells, sentences, keys]
    return np.all(agree | ~stated, axis=2)


def parse_combination(text: str) -> Content:
    """A held-out combination written ``Class|attribute=value|attribute=value`` (the class part is optional)."""
    statements = []
    for part in text.split("|"):
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            key, value = (s.strip() for s in part.split("=", 1))
            statements.append((key, value))
        else:
            statements.append((CLASS_KEY, part))
    if not statements:
        raise LeukolensError(f"empty held-out combination {text!r}")
    return tuple(statements)


def matches_any(contents: list[Content], combinations: list[Content]) -> np.ndarray:
    """Boolean ``[cells]``: the cell has one of the combinations."""
    return np.array([any(consistent(c, content) for c in combinations) for content in contents], dtype=bool)


def cached_features(
    tower,
    cells: CaptionedCells,
    *,
    cache_dir: Path | None,
    progress: Callable | None = None,
) -> np.ndarray:
    """Image-tower features of every cell ``[cells, dim]``, computed once and kept on disk under ``cache_dir``."""
    c = tower.config
    key = None
    if cache_dir is not None:
        digest = hashlib.sha1(
            repr((c.identity, c.crop_mode, [(str(s.image), s.box) for s in cells.samples])).encode()
        ).hexdigest()[:16]
        key = Path(cache_dir) / f"clip-features-{c.kind}-{digest}.npy"
        if key.is_file():
            return np.load(key)
    crops = load_crops(cells.samples, size=c.input_size, context=c.context, cache_dir=cache_dir)
    features = tower.features(crops, progress=progress)
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        tmp = key.with_suffix(".tmp.npy")
        np.save(tmp, features)
        tmp.replace(key)
    return features
