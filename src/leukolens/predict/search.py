"""Finding cells from a description: a gallery index of image embeddings on disk, updated incrementally.

An index is a folder holding ``embeddings.npy`` (unit-length, float32, one row per image) and ``manifest.json``
(the model's identity, and each image's path, modification time and size). :meth:`GalleryIndex.update` re-embeds
only images that are new or changed, drops rows of images that are gone, and rebuilds everything when the model
changed. A query is one matrix product and a partial sort: cosine top-k.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukolens.errors import LeukolensError, atomic_write_bytes, atomic_write_text
from leukolens.io.common import IMAGE_SUFFIXES

MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.npy"
INDEX_FORMAT = "leukolens-gallery/1"


@dataclass
class UpdateReport:
    added: int
    changed: int
    removed: int
    kept: int

    def summary(self) -> str:
        return (
            f"{self.added + self.changed + self.kept:,} images indexed: {self.added:,} new, {self.changed:,} "
            f"changed, {self.kept:,} unchanged, {self.removed:,} removed"
        )


def gallery_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LeukolensError(f"{folder}: no such gallery folder")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class GalleryIndex:
    """Image embeddings of a gallery, with what they were computed from."""

    def __init__(self, model: str, paths: list[str], stamps: list[tuple[float, int]], embeddings: np.ndarray):
        self.model = model
        self.paths = paths
        self.stamps = stamps
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.paths)

    @classmethod
    def empty(cls, model: str, dim: int) -> GalleryIndex:
        return cls(model, [], [], np.zeros((0, dim), np.float32))

    @classmethod
    def load(cls, folder: Path) -> GalleryIndex:
        """Read an index folder.

        Raises:
            LeukolensError: missing or unreadable.
        """
        folder = Path(folder)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            embeddings = np.load(folder / EMBEDDINGS)
        except (OSError, ValueError) as error:
            raise LeukolensError(f"{folder}: not a readable gallery index ({error})") from None
        if manifest.get("format") != INDEX_FORMAT or len(manifest["images"]) != len(embeddings):
            raise LeukolensError(f"{folder}: not a leukolens gallery index, or its files disagree")
        images = manifest["images"]
        return cls(
            manifest["model"],
            [e["path"] for e in images],
            [(float(e["mtime"]), int(e["size"])) for e in images],
            embeddings,
        )

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        buffer = io.BytesIO()
        np.save(buffer, self.embeddings)
        atomic_write_bytes(folder / EMBEDDINGS, buffer.getvalue())
        images = [{"path": p, "mtime": m, "size": s} for p, (m, s) in zip(self.paths, self.stamps)]
        manifest = {"format": INDEX_FORMAT, "model": self.model, "images": images}
        atomic_write_text(folder / MANIFEST, json.dumps(manifest))

    def update(
        self, paths: list[Path], embed: Callable[[list[Path]], tuple[list[Path], np.ndarray]]
    ) -> UpdateReport:
        """Make the index describe exactly ``paths``: embed new and changed files, drop vanished ones.

        Args:
            embed: files -> (the files it could read, their embeddings); unreadable files stay out of the index.
        """
        known = {p: i for i, p in enumerate(self.paths)}
        keep_rows, keep_paths, keep_stamps, todo = [], [], [], []
        changed = 0
        for path in paths:
            stat = path.stat()
            stamp = (stat.st_mtime, stat.st_size)
            i = known.get(str(path))
            if i is not None and self.stamps[i] == stamp:
                keep_rows.append(i)
                keep_paths.append(str(path))
                keep_stamps.append(stamp)
            else:
                changed += i is not None
                todo.append(path)
        wanted = {str(p) for p in paths}
        removed = sum(1 for p in self.paths if p not in wanted)
        embedded, vectors = embed(todo) if todo else ([], np.zeros((0, self.embeddings.shape[1]), np.float32))
        stamps = {str(p): (p.stat().st_mtime, p.stat().st_size) for p in embedded}
        self.paths = keep_paths + [str(p) for p in embedded]
        self.stamps = keep_stamps + [stamps[str(p)] for p in embedded]
        self.embeddings = np.concatenate([self.embeddings[keep_rows], vectors]).astype(np.float32)
        return UpdateReport(added=len(todo) - changed, changed=changed, removed=removed, kept=len(keep_rows))

    def search(self, query: np.ndarray, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` images most similar to one unit-length query embedding, best first, with cosine scores."""
        if len(self) == 0:
            return []
        scores = self.embeddings @ np.asarray(query, np.float32).ravel()  # [images]
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.paths[i], float(scores[i])) for i in top]


def open_index(folder: Path, *, model: str, dim: int) -> GalleryIndex:
    """The index in ``folder`` if it was made by this model, else an empty one (a changed model re-embeds all)."""
    folder = Path(folder)
    if (folder / MANIFEST).is_file():
        index = GalleryIndex.load(folder)
        if index.model == model and index.embeddings.shape[1] == dim:
            return index
    return GalleryIndex.empty(model, dim)
