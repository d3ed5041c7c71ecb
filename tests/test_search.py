import os

import numpy as np
import pytest

from leukolens.io.common import LeukolensError
from leukolens.predict.search import GalleryIndex, gallery_images, open_index
from tests.conftest import make_image


def _fake_embed(calls):
    def embed(paths):
        calls.extend(p.name for p in paths)
        vectors = np.array([[1.0, float(p.stat().st_size % 7), 0.5] for p in paths], np.float32)
        return list(paths), vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return embed


def test_index_embeds_only_new_or_changed_files_and_drops_removed(tmp_path):
    gallery = tmp_path / "gallery"
    for name in ("a.png", "b.png", "c.jpg"):
        make_image(gallery / name)
    calls: list[str] = []
    index = GalleryIndex.empty("model-1", 3)
    report = index.update(gallery_images(gallery), _fake_embed(calls))
    assert (report.added, report.kept, len(index)) == (3, 0, 3)
    index.save(tmp_path / "index")

    calls.clear()
    (gallery / "b.png").unlink()
    make_image(gallery / "d.png")
    make_image(gallery / "a.png", size=(70, 50))
    os.utime(gallery / "a.png", (1, 1))
    index = open_index(tmp_path / "index", model="model-1", dim=3)
    report = index.update(gallery_images(gallery), _fake_embed(calls))
    assert sorted(calls) == ["a.png", "d.png"]
    assert (report.added, report.changed, report.removed, report.kept) == (1, 1, 1, 1)
    assert sorted(os.path.basename(p) for p in index.paths) == ["a.png", "c.jpg", "d.png"]
    # Another model's index is not reused.
    index.save(tmp_path / "index")
    assert len(open_index(tmp_path / "index", model="model-2", dim=3)) == 0


def test_search_returns_top_k_by_cosine_best_first():
    embeddings = np.eye(4, dtype=np.float32)
    index = GalleryIndex("m", ["w", "x", "y", "z"], [(0.0, 0)] * 4, embeddings)
    query = np.array([0.1, 0.9, 0.4, 0.0], np.float32)
    hits = index.search(query / np.linalg.norm(query), k=2)
    assert [p for p, _ in hits] == ["x", "y"]
    assert hits[0][1] > hits[1][1]
    assert GalleryIndex.empty("m", 4).search(query) == []


def test_broken_index_and_missing_gallery_are_clear_errors(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(LeukolensError, match="not a readable gallery index"):
        GalleryIndex.load(tmp_path)
    with pytest.raises(LeukolensError, match="no such gallery folder"):
        gallery_images(tmp_path / "nowhere")
