"""Search over 10,000 archived cells (the issue's target: text search under 100 ms). The cells are synthetic, with
random types and attribute values of both schemas, so their sentences are as varied as real ones; the bounds here
are generous (a loaded 2-core machine), the figures are printed (``pytest -s``)."""

import random
import time

import numpy as np
import pytest

from leukolens.records import LLD_SCHEMA, WBCATT_SCHEMA
from leukolens.store import DONE, RUNNING
from tests.store.helpers import DETECTOR, PBC

CELLS, FIELDS = 10_000, 20
QUERIES = ("large cells with prominent nucleoli", "suspected blast", "segmented nucleus with pink granules",
           "small lymphocyte dense chromatin", "vacuoles")


def _random_cell(rng: random.Random, number: int) -> dict:
    schema = LLD_SCHEMA if number % 2 else WBCATT_SCHEMA
    label = rng.choice(PBC)
    blast = rng.random() < 0.05
    return {
        "id": number, "box_xyxy": [1.0, 2.0, 30.0, 31.0], "detector_class": "WBC", "detector_score": 0.9,
        "type": label, "type_probability": 0.9, "type_probabilities": {c: 0.9 if c == label else 0.0 for c in PBC},
        "attributes": {a.name: {"value": rng.choice(a.values), "probability": 0.8, "probabilities": {}}
                       for a in schema},
        "atypicality": 0.1, "verdict": "typical", "blast_probability": 0.9 if blast else 0.1,
        "blast_suspected": blast,
    }


def _best_of(runs, search):
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        search()
        times.append(time.perf_counter() - started)
    return min(times), max(times)


@pytest.fixture(scope="module")
def full_archive(tmp_path_factory):
    from leukolens.store import SQLiteArchive

    rng, vectors = random.Random(0), np.random.default_rng(0)
    archive = SQLiteArchive.open(tmp_path_factory.mktemp("archive"))
    per_field = CELLS // FIELDS
    sample = archive.create_sample(images=[(f"f{i}", None) for i in range(FIELDS)])
    archive.set_status(sample, RUNNING)
    started = time.perf_counter()
    for field in archive.pending_fields(sample):
        cells = [_random_cell(rng, n) for n in range(1, per_field + 1)]
        result = {"schema_version": 1, "image": f"{field.name}.jpg", "width": 640, "height": 480,
                  "detector": DETECTOR, "counts": {"WBC": per_field}, "wbc_types": {}, "notes": [], "cells": cells}
        embeddings = {n: vectors.normal(size=512).astype(np.float32) for n in range(1, per_field + 1)}
        archive.complete_field(field.id, result, embeddings=embeddings)
    archive.set_status(sample, DONE)
    print(f"\nstored {CELLS} cells in {FIELDS} field transactions: {time.perf_counter() - started:.2f} s")
    yield archive
    archive.close()


def test_text_search_over_10000_cells_is_fast(full_archive, monkeypatch):
    assert full_archive._connection().execute("SELECT count(*) FROM cells").fetchone()[0] == CELLS
    hits = full_archive.search_text("large cells with prominent nucleoli")
    assert len(hits) == 20 and all("prominent nucleoli" in h.sentence and "large" in h.sentence.lower()
                                   for h in hits)
    assert all("blast" in h.sentence.lower() for h in full_archive.search_text("suspected blast"))
    worst = 0.0
    for query in QUERIES:
        best, slowest = _best_of(5, lambda q=query: full_archive.search_text(q))
        worst = max(worst, slowest)
        print(f"text search {'FTS5' if full_archive.text_index else 'LIKE'} {query!r}: best {best * 1000:.1f} ms, "
              f"worst {slowest * 1000:.1f} ms")
    assert worst < 0.5
    monkeypatch.setattr(full_archive, "text_index", False)
    best, slowest = _best_of(3, lambda: full_archive.search_text("large cells with prominent nucleoli"))
    print(f"text search LIKE fallback: best {best * 1000:.1f} ms, worst {slowest * 1000:.1f} ms")
    assert slowest < 2.0


def test_example_search_over_10000_embeddings(full_archive):
    cell_id = full_archive.search_text("vacuoles", limit=1)[0].cell_id
    best, slowest = _best_of(3, lambda: full_archive.similar_cells(cell_id))
    print(f"example search over {CELLS} x 512 embeddings: best {best * 1000:.1f} ms, worst {slowest * 1000:.1f} ms")
    hits = full_archive.similar_cells(cell_id, limit=5)
    assert len(hits) == 5 and cell_id not in {h.cell_id for h in hits}
    assert hits == sorted(hits, key=lambda h: -h.score)
    assert slowest < 2.0
