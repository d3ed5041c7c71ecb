"""A synthetic single-cell data set: patients of every diagnosis, one image per white cell, split by patient.

For training and testing models on cells with LLD's seven attributes and its 14 classes (blasts included), which no
real data set here has. Each patient (cycling through the diagnoses) gets a slide stain and a class mix from
``leukolens.synth.patients``; smudge cells come at the patient's rate; every cell is drawn from its attributes by
:func:`leukolens.synth.generate.render_cell` in the middle of a small field with a few red cells around it. The
patient's diagnosis and id travel in each field's domain, so a model can be scored per patient.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np

from leukolens.io.common import LeukolensError, atomic_write_bytes
from leukolens.records import LLD_CLASSES, LLD_SCHEMA, Dataset, Domain, Field
from leukolens.synth.cells import SMUDGE
from leukolens.synth.domains import STAINS
from leukolens.synth.generate import render_cell
from leukolens.synth.patients import DIAGNOSES, make_patient

SOURCE = "leukolens-synth-cells"
SPLIT_CYCLE = ("train", "train", "train", "val", "test")


def synthetic_cell_set(
    out: str | Path,
    *,
    patients: int = 100,
    cells_per_patient: int = 30,
    seed: int = 0,
    size: int = 192,
    progress: Callable | None = None,
) -> Dataset:
    """Render the cells as JPEG files under ``out/images`` and return their records (splits by patient).

    Patients cycle through the diagnoses; within each diagnosis they are dealt to train, train, train, val, test
    in turn (60/20/20), so with five or more patients per diagnosis every split has every diagnosis.
    """
    if patients < 1 or cells_per_patient < 1:
        raise LeukolensError("a synthetic cell set needs at least one patient and one cell per patient")
    images = Path(out) / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 11])
    names = list(DIAGNOSES)
    stains = list(STAINS)
    dealt: dict[str, int] = {}
    fields: list[Field] = []
    jobs = []
    for p in range(patients):
        diagnosis = names[p % len(names)]
        position = dealt.get(diagnosis, 0)
        dealt[diagnosis] = position + 1
        split = SPLIT_CYCLE[position % len(SPLIT_CYCLE)]
        patient = make_patient(diagnosis, sample_id=f"S{p:03d}", seed=seed * 10_000 + p, stain=stains[p % len(stains)])
        labels = patient.draw_labels(rng, cells_per_patient)
        smudge_share = patient.smudge_cells / (1 + patient.smudge_cells)
        labels = [SMUDGE if rng.random() < smudge_share else label for label in labels]
        for c, label in enumerate(labels):
            jobs.append((patient, split, c, label))
    for patient, split, c, label in progress(jobs) if progress else jobs:
        image, cell = render_cell(label, seed=patient.seed * 1000 + c, stain=patient.stain, size=size)
        path = images / f"{patient.sample_id}_{c:03d}.jpg"
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=92)
        atomic_write_bytes(path, buffer.getvalue())
        domain = Domain(source=SOURCE, stain=patient.stain, sample_id=patient.sample_id, diagnosis=patient.diagnosis)
        fields.append(Field(path, size, size, [cell], [], domain, split))
    return Dataset(fields, LLD_CLASSES, LLD_SCHEMA, name=SOURCE)
