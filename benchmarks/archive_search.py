"""Search over an archive of 10,000 analysed white cells: text search (SQLite FTS5, and the LIKE fallback) and
search by example (cosine over stored 512-d embeddings), as ``leukolens serve``'s search box and "cells like this
one" run them.

Protocol: one sample of 20 fields of 500 cells each, stored field by field as the service stores them; the cells are
synthetic (seed 0): random types, random attribute values of both schemas (WBCAtt and LLD), 5% suspected blasts, so
that their sentences are as varied as real ones; random unit embeddings. Five fixed queries, each timed five times
(best and worst); example search from one cell, three times. Target (issue: the review page): text search over
10,000 archived cells under 100 ms.
"""

from __future__ import annotations

import os
import random
import tempfile
import time

import numpy as np

from leukolens.records import LLD_SCHEMA, WBCATT_SCHEMA

CELLS, FIELDS = 10_000, 20
QUERIES = ("large cells with prominent nucleoli", "suspected blast", "segmented nucleus with pink granules",
           "small lymphocyte dense chromatin", "vacuoles")
TYPES = ("Basophil", "Eosinophil", "Erythroblast", "Immature granulocyte", "Lymphocyte", "Monocyte", "Neutrophil")
DETECTOR = {"checkpoint": "detector.pt", "score_threshold": 0.5, "classes": ["WBC", "RBC", "Platelets"]}


def random_cell(rng: random.Random, number: int) -> dict:
    """One white cell as a field JSON holds it (docs/output-schema.md), with random type and attributes."""
    schema = LLD_SCHEMA if number % 2 else WBCATT_SCHEMA
    label = rng.choice(TYPES)
    blast = rng.random() < 0.05
    return {
        "id": number, "box_xyxy": [1.0, 2.0, 30.0, 31.0], "detector_class": "WBC", "detector_score": 0.9,
        "type": label, "type_probability": 0.9, "type_probabilities": {c: 0.9 if c == label else 0.0 for c in TYPES},
        "attributes": {a.name: {"value": rng.choice(a.values), "probability": 0.8, "probabilities": {}}
                       for a in schema},
        "atypicality": 0.1, "verdict": "typical", "blast_probability": 0.9 if blast else 0.1,
        "blast_suspected": blast,
    }


def fill(archive, *, cells: int = CELLS, fields: int = FIELDS, seed: int = 0) -> float:
    """Store one done sample of ``cells`` synthetic cells in ``fields`` field transactions; returns the seconds."""
    from leukolens.store import DONE, RUNNING

    rng, vectors = random.Random(seed), np.random.default_rng(seed)
    per_field = cells // fields
    sample = archive.create_sample(images=[(f"f{i}", None) for i in range(fields)])
    archive.set_status(sample, RUNNING)
    started = time.perf_counter()
    for field in archive.pending_fields(sample):
        result = {"schema_version": 1, "image": f"{field.name}.jpg", "width": 640, "height": 480,
                  "detector": DETECTOR, "counts": {"WBC": per_field}, "wbc_types": {}, "notes": [],
                  "cells": [random_cell(rng, n) for n in range(1, per_field + 1)]}
        embeddings = {n: vectors.normal(size=512).astype(np.float32) for n in range(1, per_field + 1)}
        archive.complete_field(field.id, result, embeddings=embeddings)
    archive.set_status(sample, DONE)
    return time.perf_counter() - started


def timed(runs: int, search) -> tuple[float, float]:
    """Best and worst seconds of ``runs`` calls."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        search()
        times.append(time.perf_counter() - started)
    return min(times), max(times)


def run() -> str:
    from leukolens.store import SQLiteArchive

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        archive = SQLiteArchive.open(folder)
        seconds = fill(archive)
        rows = []
        for query in QUERIES:
            best, worst = timed(5, lambda q=query: archive.search_text(q))
            rows.append((query, len(archive.search_text(query)), best, worst))
        index = "FTS5" if archive.text_index else "LIKE"
        archive.text_index = False
        like = timed(3, lambda: archive.search_text(QUERIES[0]))
        cell = archive.search_text("vacuoles", limit=1)[0].cell_id
        example = timed(3, lambda: archive.similar_cells(cell))
        archive.close()
    worst_text = max(r[3] for r in rows)
    lines = [
        "## Archive search: 10,000 analysed cells",
        "",
        f"Protocol in `benchmarks/archive_search.py`. Load average at the start: {load:.2f} on 2 cores. "
        f"{CELLS:,} synthetic cells stored in {FIELDS} field transactions in {seconds:.1f} s.",
        "",
        f"| query ({index}) | hits (at most 20) | best ms | worst ms |",
        "|---|---|---|---|",
        *[f"| {q} | {n} | {b * 1000:.1f} | {w * 1000:.1f} |" for q, n, b, w in rows],
        "",
        f"Text search, worst of all queries: **{worst_text * 1000:.1f} ms** (target under 100 ms: "
        f"{'met' if worst_text < 0.1 else 'missed'}). The LIKE fallback (an SQLite without FTS5): "
        f"{like[0] * 1000:.0f}-{like[1] * 1000:.0f} ms. Search by example over {CELLS:,} x 512 embeddings: "
        f"{example[0] * 1000:.0f}-{example[1] * 1000:.0f} ms.",
    ]
    return "\n".join(lines)
