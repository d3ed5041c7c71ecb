"""Synthetic smears end to end: patients, slides, fields rendered under domains, and their LLD and COCO exports.

Slides and the rendering of their fields under a domain are in :mod:`leukolens.synth.slide`.

Everything is drawn from ``numpy.random.Generator`` seeded by (config seed, patient, tile or field, domain), so one
seed gives the same files byte for byte, whatever the number of worker processes.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukolens.io import write_dataset
from leukolens.io.common import LeukolensError, WriteReport, atomic_write_bytes, atomic_write_text
from leukolens.records import LLD_CLASSES, LLD_SCHEMA, Dataset, Field
from leukolens.synth.cells import (
    SMUDGE,
)
from leukolens.synth.domains import (
    DEFAULT_DOMAIN,
    STAINS,
    DomainSpec,
    parse_domains,
    stain_name,
)
from leukolens.synth.patients import DIAGNOSES, Patient, diagnosis_name, make_patient
from leukolens.synth.slide import (  # noqa: F401  (RenderedField, render_cell: their old home, still imported)
    SOURCE,
    RenderedField,
    Slide,
    _spec_text,
    render_cell,
    render_field,
)


@dataclass(frozen=True)
class SynthConfig:
    """What to generate.

    Attributes:
        patients: number of patients (slides); they cycle through ``diagnoses``.
        fields_per_patient: fields per slide; each is rendered under every domain.
        size: width and height of a field image in pixels.
        seed: everything is drawn from it.
        annotated_fraction: share of a 100x field's area inside its annotated region, in (0, 1].
        diagnoses: names from :data:`~leukolens.synth.patients.DIAGNOSES`.
        domains: ``MICROSCOPE:CAMERA:MAGNIFICATION[:STAIN]`` texts, or ``lld`` for LLD's twelve.
        stains: the stains slides are drawn with (one per patient, at random).
        label_noise: probability that an annotator misreads an attribute, in [0, 1).
    """

    patients: int = 5
    fields_per_patient: int = 4
    size: int = 640
    seed: int = 0
    annotated_fraction: float = 0.1
    diagnoses: tuple[str, ...] = tuple(DIAGNOSES)
    domains: tuple[str, ...] = (DEFAULT_DOMAIN,)
    stains: tuple[str, ...] = tuple(STAINS)
    label_noise: float = 0.0

    def __post_init__(self) -> None:
        for name in ("patients", "fields_per_patient", "size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise LeukolensError(f"{name} must be a whole number, got {value!r}")
        if self.patients < 1:
            raise LeukolensError(f"patients must be at least 1, got {self.patients}")
        if self.fields_per_patient < 1:
            raise LeukolensError(f"fields per patient must be at least 1, got {self.fields_per_patient}")
        if not 64 <= self.size <= 4096:
            raise LeukolensError(f"size must be between 64 and 4096 pixels, got {self.size}")
        if self.seed < 0:
            raise LeukolensError(f"seed must not be negative, got {self.seed}")
        if not (isinstance(self.annotated_fraction, int | float) and 0 < self.annotated_fraction <= 1):
            raise LeukolensError(
                f"annotated fraction must be in (0, 1] (a share of the field's area), got {self.annotated_fraction!r}"
            )
        if not 0 <= self.label_noise < 1:
            raise LeukolensError(f"label noise must be in [0, 1), got {self.label_noise!r}")
        if not self.diagnoses:
            raise LeukolensError(f"name at least one diagnosis ({', '.join(DIAGNOSES)})")
        if not self.stains:
            raise LeukolensError(f"name at least one stain ({', '.join(STAINS)})")
        object.__setattr__(self, "diagnoses", tuple(diagnosis_name(d) for d in self.diagnoses))
        object.__setattr__(self, "stains", tuple(stain_name(s) for s in self.stains))
        specs = parse_domains(self.domains)
        if len({(s.microscope, s.camera, s.magnification, s.stain) for s in specs}) != len(specs):
            raise LeukolensError("a domain is named twice")
        object.__setattr__(self, "domains", tuple(_spec_text(s) for s in specs))

    @property
    def domain_specs(self) -> tuple[DomainSpec, ...]:
        return parse_domains(self.domains)


def make_patients(config: SynthConfig) -> list[Patient]:
    """The config's patients: diagnoses in turn (5 patients give all five), stains drawn per patient."""
    patients = []
    for i in range(config.patients):
        rng = np.random.default_rng([config.seed, 3, i])
        patients.append(
            make_patient(
                config.diagnoses[i % len(config.diagnoses)],
                sample_id=f"P{i + 1:03d}",
                seed=int(rng.integers(2**62)),
                stain=config.stains[int(rng.integers(len(config.stains)))],
            )
        )
    return patients


# ------------------------------------------------------------------------------------------------------ slides
def _render_fields_of(config: SynthConfig, patient: Patient, field_index: int, images: Path) -> list[Field]:
    """Render one field of one patient under every domain, write the JPEGs, return the records."""
    slide = Slide(patient, size=config.size, label_noise=config.label_noise)
    fields = []
    for spec in config.domain_specs:
        rendered = render_field(slide, field_index, spec, annotated_fraction=config.annotated_fraction)
        path = images / f"{rendered.name}.jpg"
        atomic_write_bytes(path, rendered.jpeg)
        fields.append(
            Field(path, config.size, config.size, rendered.cells, [rendered.region], rendered.domain, split=None)
        )
    return fields


def _job(arguments) -> list[Field]:
    config, patient, field_index, images = arguments
    return _render_fields_of(config, patient, field_index, images)


def generate_dataset(
    config: SynthConfig, images: str | Path, *, workers: int = 1, progress: Callable | None = None
) -> Dataset:
    """Render every field of every patient under every domain into ``images`` as JPEG files.

    Returns:
        The full data set: all white cells of every field, and each field's annotated region in ``regions``
        (:func:`sparse_dataset` keeps the cells inside; :func:`full_dataset` drops the regions).
    """
    if workers < 1:
        raise LeukolensError(f"workers must be at least 1, got {workers}")
    images = Path(images)
    images.mkdir(parents=True, exist_ok=True)
    patients = make_patients(config)
    jobs = [(config, p, k, images) for p in patients for k in range(config.fields_per_patient)]
    if workers == 1:
        results = map(_job, jobs)
        fields = [f for batch in (progress(results, total=len(jobs)) if progress else results) for f in batch]
    else:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.imap(_job, jobs)
            fields = [f for batch in (progress(results, total=len(jobs)) if progress else results) for f in batch]
    extras = {"synth": {"config": config, "patients": patients}}
    return Dataset(fields, LLD_CLASSES, LLD_SCHEMA, name=SOURCE, extras=extras)


def sparse_dataset(dataset: Dataset) -> Dataset:
    """Only the cells whose box centre lies in their field's annotated region (LLD's sparse labels)."""
    fields = []
    for f in dataset.fields:
        if not f.regions:
            fields.append(f)
            continue
        region = f.regions[0]
        inside = []
        for c in f.cells:
            x1, y1, x2, y2 = c.box.pixels_xyxy(f.size)
            if region.contains_point((x1 + x2) / 2, (y1 + y2) / 2):
                inside.append(c)
        fields.append(Field(f.image, f.width, f.height, inside, list(f.regions), f.domain, f.split))
    return Dataset(fields, dataset.classes, dataset.schema, name=dataset.name, extras=dataset.extras)


def full_dataset(dataset: Dataset) -> Dataset:
    """Every cell of every field, with no annotated region: each field is fully annotated."""
    fields = [Field(f.image, f.width, f.height, list(f.cells), [], f.domain, f.split) for f in dataset.fields]
    return Dataset(fields, dataset.classes, dataset.schema, name=dataset.name, extras=dataset.extras)


@dataclass
class SynthReport:
    """What :func:`write_synthetic` made."""

    dataset: Dataset
    full: WriteReport
    sparse: WriteReport
    seconds: float

    def summary(self) -> str:
        fields = self.dataset.fields
        config: SynthConfig = self.dataset.extras["synth"]["config"]
        by_diagnosis: dict[str, int] = {}
        for f in fields:
            by_diagnosis[f.domain.diagnosis] = by_diagnosis.get(f.domain.diagnosis, 0) + 1
        cells = sum(len(f.cells) for f in fields)
        lines = [
            f"rendered {len(fields):,} fields ({config.patients} patients x {config.fields_per_patient} fields x "
            f"{len(config.domains)} domains) of {config.size}x{config.size} in {self.seconds:.1f} s "
            f"({len(fields) / max(self.seconds, 1e-9):.1f} fields/s), {cells:,} white cells",
            "fields per diagnosis: " + ", ".join(f"{d} {n}" for d, n in by_diagnosis.items()),
            "full (all cells, COCO):   " + self.full.summary(),
            "sparse (annotated region): " + self.sparse.summary(),
            f"check them with: leukolens data validate {self.sparse.path} ; leukolens data validate {self.full.path}",
        ]
        return "\n".join(lines)


def write_synthetic(
    config: SynthConfig,
    out: str | Path,
    *,
    sparse_format: str = "lld",
    images: str = "copy",
    workers: int = 1,
    progress: Callable | None = None,
) -> SynthReport:
    """Generate a synthetic data set and write it: ``out/full`` (COCO, every cell, the images) and ``out/sparse``
    (``sparse_format``, only the cells in each field's annotated region, with the region), plus
    ``out/patients.csv`` (each patient's diagnosis, variant, stain and class mix).

    Args:
        sparse_format: ``lld`` (16-column files) or ``coco`` (annotated regions in the JSON).
        images: how the sparse export gets the images: ``copy`` (a self-contained folder) or ``link`` (symlinks).

    Raises:
        LeukolensError: ``out`` is not empty, or a bad option.
    """
    out = Path(out)
    if sparse_format not in ("lld", "coco"):
        raise LeukolensError(f"unknown sparse export format {sparse_format!r}: use lld or coco")
    if images not in ("copy", "link"):
        raise LeukolensError(f"unknown image mode {images!r}: use copy or link")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LeukolensError(f"{out} exists and is not an empty folder; choose a new output folder")
    start = time.perf_counter()
    dataset = generate_dataset(config, out / "full" / "images", workers=workers, progress=progress)
    seconds = time.perf_counter() - start
    full_report = write_dataset(full_dataset(dataset), out / "full", format="coco", images="none")
    sparse_report = write_dataset(sparse_dataset(dataset), out / "sparse", format=sparse_format, images=images)
    _write_patients_csv(out / "patients.csv", dataset.extras["synth"]["patients"])
    return SynthReport(dataset, full_report, sparse_report, seconds)


def _write_patients_csv(path: Path, patients: list[Patient]) -> None:
    classes = [c for c in LLD_CLASSES.names if c != SMUDGE]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["sample_id", "diagnosis", "variant", "stain", "smudge_per_white_cell", *classes])
    for p in patients:
        shares = [f"{p.mix.get(c, 0.0):.4f}" for c in classes]
        writer.writerow([p.sample_id, p.diagnosis, p.variant, p.stain, f"{p.smudge_cells:.4f}", *shares])
    atomic_write_text(path, text.getvalue())


__all__ = [
    "RenderedField",
    "Slide",
    "SynthConfig",
    "SynthReport",
    "full_dataset",
    "generate_dataset",
    "make_patients",
    "render_cell",
    "render_field",
    "sparse_dataset",
    "write_synthetic",
]
