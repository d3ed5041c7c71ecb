"""The main job: read smear fields like a hematologist, one sample at a time.

For every field: find every cell (white, red, platelet) with the detector, name each white cell's type and describe
its morphology with the cell model, and write ``<out>/<stem>.json`` (every cell: box, detector class and score; for
white cells also type, type probabilities, attributes with probabilities, atypicality and verdict) and
``<out>/<stem>.png`` (the field with its cells drawn). For the sample (all fields given together): a differential
count of the white cells, the cells flagged for review, and which fields were skipped and why, printed and written to
``<out>/summary.json``. Every key of these files is in docs/output-schema.md.

A field that cannot be read (corrupt, not an image, absurdly large) is skipped with its reason; the rest of the
sample still runs. Grayscale and palette images are converted to RGB.

    >>> from leukolens.analyze import analyze
    >>> summary = analyze(["smear/"], out="out/smear")

This module only orchestrates: the models run in :mod:`leukolens.predict`, the count is :mod:`leukolens.sample`'s,
the drawing :mod:`leukolens.report`'s. One image from the command line to its JSON file, hop by hop (a hop is a
call into another module; the calls inside a predictor are listed under it):

1. ``cli.cmd_analyze`` -> :func:`analyze` (this module): paths, checkpoints, options; the models loaded once
   (:class:`FieldModels`); then chunks of fields through :func:`analyse_fields`, here or on Dask workers
   (:mod:`leukolens.cluster`), each field written as soon as it is done.
2. -> ``predict.fields.load_field``: the RGB image and notes on its conversion.
3. -> ``predict.fields.Detector.sample_scale`` (once per sample): the sample's scale from the red cells of its
   first fields pooled (up to three, fewer once 15 red cells are found; ``microns_per_pixel`` when given) -> a
   :class:`~leukolens.predict.scale.FieldScale`; inside: stain normaliser, ``predict.scale.estimate_sample_scale``
   (6-8 forward passes per field looked at, on windows of the field at candidate factors).
4. -> ``predict.fields.Detector.detect`` with that scale: the image ->
   :class:`~leukolens.predict.results.FieldDetections` (float xyxy boxes in the image's pixels, with its size, the
   scale and the tile count); inside: stain normaliser, ``predict.scale.tiles_at_scale`` (the field resized to the
   working scale, cut into overlapping tiles when larger than one input), ``predict.engine.Engine`` (tiles of one
   shape batched), ``models.detector.decode``, ``predict.scale.merge_tiles`` (back to native pixels, NMS across
   tiles); with no red cells to go on, or ``scale="letterbox"``: ``data.fields.letterbox`` as in training.
5. -> ``predict.cells.CellReader.read_cells``: image + detections -> one
   :class:`~leukolens.predict.results.PredictedCell` per detection, each white cell cropped from its float box and
   read (inside: ``data.cells.crop_cell``, ``predict.engine.Engine``).
6. -> :class:`~leukolens.predict.results.AnalyzedField` (a ``records.Field`` of those cells, with the notes, the
   scale and the tile count).
7. -> ``predict.output.field_json``: the field as a dict, rounded, with ``schema_version`` and ``scale``.
8. -> ``errors.atomic_write_text``: ``<out>/<stem>.json``.

Beside the JSON: ``report.overlay.overlay_png`` draws the same record to ``<out>/<stem>.png``, and
``sample.differential`` counts all the fields into ``<out>/summary.json`` with ``sample.interpret``'s reading of
the sample (differential with intervals, blast %, flags, a suggestion with its evidence: docs/interpretation.md).
Last, ``report.html`` writes ``<out>/report.html`` (the sample's report, one self-contained file) and
``report.table`` ``<out>/cells.csv`` (docs/report.md).

The summary and report are made from the field files as written (read back with ``predict.output.field_from_json``),
so a run resumed after a crash (``resume=True``: fields whose files are complete are not analysed again), a run on
Dask workers (``workers=N`` or ``scheduler=...``) and a plain run give the same results. :func:`analyze_samples` runs
every subfolder of a folder as its own sample (docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from leukolens.data.augment import VIEWS
from leukolens.errors import LeukolensError, atomic_write_bytes, atomic_write_text
from leukolens.models.blast import BlastCallRates
from leukolens.models.checkpoint import load_checkpoint
from leukolens.models.clip import file_sha256
from leukolens.predict import weights
from leukolens.predict.cells import CellReader
from leukolens.predict.fields import SAMPLE_FIELDS, SCALE_MODES, Detector, find_images, load_field
from leukolens.predict.output import SCHEMA_VERSION, field_from_json, field_json, validate
from leukolens.predict.results import AnalyzedField, PredictedCell
from leukolens.predict.scale import FieldScale
from leukolens.records import Vocabulary
from leukolens.report.html import REPORT_NAME, write_report
from leukolens.report.overlay import overlay_png
from leukolens.report.table import CSV_NAME, write_cells_csv
from leukolens.sample.differential import differential, summary_json
from leukolens.sample.interpret import interpret

if TYPE_CHECKING:
    from leukolens.cluster import FieldCluster

__all__ = ["NOT_WHITE", "analyse_fields", "analyze", "analyze_samples", "find_images", "load_field"]

NOT_WHITE = ("RBC", "Platelets")
"""Detector classes that are not white cells; every other class (``WBC``, or a WBC type when a detector was trained
on typed boxes) goes to the cell model."""

Progress = Callable[[int, int], None]
"""Called with (fields done, fields to do) as the fields of a sample get done."""


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, n = path.stem, 1
    while stem in used:
        n += 1
        stem = f"{path.stem}_{n}"
    used.add(stem)
    return stem


ADAPT_CELLS = 64
"""White cells of a sample's first fields the cell model adapts its normalisation to."""
ADAPT_MIN_CELLS = 8
"""Fewer white cells than this in a whole sample: no adaptation (too few to estimate statistics from)."""


def adapt_reader(reader: CellReader, crops: list[np.ndarray]) -> tuple[CellReader, str]:
    """The reader adapted to a sample's first white cells (at most :data:`ADAPT_CELLS`), or as it is when the
    sample has fewer than :data:`ADAPT_MIN_CELLS`; and a note saying which."""
    if len(crops) < ADAPT_MIN_CELLS:
        return reader, f"{len(crops)} white cells: too few to adapt the cell model to this sample"
    if reader.checkpoint.fixed_norm_statistics:
        return reader, "cell model trained with fixed normalisation statistics: not adapted to this sample"
    note = f"cell model adapted to this sample's first {min(len(crops), ADAPT_CELLS)} white cells"
    return reader.adapted(np.stack(crops[:ADAPT_CELLS])), note


# ------------------------------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class ModelSpec:
    """Which models read the fields and how they run: all a process needs to load them, and the key a Dask worker
    keeps its loaded models under.

    Attributes:
        detector: the detector checkpoint.
        cells: the cell-model checkpoint; None: no cell model (white cells are found and counted, not typed).
        engine: ``auto``, ``torch`` or ``onnx`` (:mod:`leukolens.predict.engine`).
        match_stain: see :class:`~leukolens.predict.CellReader`.
        blast_examples: folders of a lab's own blasts for the blast scorer.
        threads: threads per network (None: every core; Dask workers run one each).
        views: flips and quarter turns each white cell is read in (see :class:`~leukolens.predict.CellReader`).
        size: weigh each white cell's size in µm into its type where the scale is known (the cell model's size
            prior, :mod:`leukolens.models.size`).
    """

    detector: Path
    cells: Path | None
    engine: str = "auto"
    match_stain: bool = False
    blast_examples: tuple[str, ...] = ()
    threads: int | None = None
    views: int = VIEWS
    size: bool = True


@dataclass
class FieldModels:
    """The models of a :class:`ModelSpec`, loaded: the detector and the cell reader (None without a cell model)."""

    detector: Detector
    reader: CellReader | None

    @classmethod
    def load(cls, spec: ModelSpec, *, cells: bool = True, adapted_weights: dict | None = None) -> FieldModels:
        """Load the detector and, with ``cells``, the cell reader (with ``adapted_weights``: a sample's adapted
        network, see :meth:`~leukolens.predict.CellReader.with_weights`)."""
        detector = Detector.from_checkpoint(spec.detector, engine=spec.engine, threads=spec.threads)
        reader = None
        if cells and spec.cells is not None:
            reader = CellReader.from_checkpoint(spec.cells, engine=spec.engine, threads=spec.threads,
                                                match_stain=spec.match_stain, blast_examples=spec.blast_examples,
                                                views=spec.views, size=spec.size)
            if adapted_weights is not None:
                reader = reader.with_weights(adapted_weights)
        return cls(detector, reader)

    @property
    def white(self) -> tuple[str, ...]:
        return tuple(c for c in self.detector.classes if c not in NOT_WHITE)

    def blast_call_rates(self, spec: ModelSpec) -> BlastCallRates | None:
        """The blast call's error rates for the sample's secondary, adjusted blast %: the loaded reader's (None with
        a lab's blast examples added), else, when the cell model runs only on a cluster's workers, its checkpoint's."""
        if self.reader is not None:
            return self.reader.blast_call_rates
        blast = load_checkpoint(spec.cells).blast if spec.cells is not None else None
        return BlastCallRates.from_dict(blast["call_rates"]) if blast and blast.get("call_rates") else None

    @property
    def palette(self) -> Vocabulary:
        reader_classes = self.reader.classes if self.reader else ()
        return Vocabulary("analyze", tuple(dict.fromkeys((*self.detector.classes, *reader_classes))))


@dataclass(frozen=True)
class FieldSettings:
    """How every field of one sample is analysed and written: the same for all its fields, wherever they run.

    Attributes:
        out: the sample's output folder.
        detector_info: what every field file says of the detector (checkpoint, threshold, classes).
        analysis: what every field file says its cells' reading depended on (:func:`analysis_info`; None: not
            said).
        overlays: also draw each field to ``<stem>.png``.
        threshold: detector score threshold (None: the checkpoint's).
        batch_size: fields (or tiles) per detector batch.
        scale: ``auto`` or ``letterbox`` (see :func:`analyze`).
        sample_scale: the sample's scale, estimated once from its first fields (None: letterbox, or each field's
            own when there was nothing to estimate from).
        notes: added to every field's notes (e.g. no cell model).
    """

    out: Path
    detector_info: dict
    analysis: dict | None = None
    overlays: bool = True
    threshold: float | None = None
    batch_size: int = 8
    scale: str = "auto"
    sample_scale: FieldScale | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FieldJob:
    """One field to analyse: its image and the stem of its output files (unique in the sample)."""

    path: Path
    stem: str


@dataclass
class FieldResult:
    """What became of one field: its file's content (as written to ``<stem>.json``), or why it was skipped.

    Attributes:
        resumed: the document was read back from an earlier run's file, not analysed now.
    """

    path: Path
    stem: str
    document: dict | None = None
    reason: str | None = None
    resumed: bool = False


# ------------------------------------------------------------------------------------------------------ one chunk
def _now(write: Callable[[], None]) -> None:
    write()


def analyse_fields(
    models: FieldModels,
    jobs: Sequence[FieldJob],
    settings: FieldSettings,
    *,
    write: Callable[[Callable[[], None]], None] = _now,
) -> list[FieldResult]:
    """Analyse a few fields of one sample and write each one's files: the work of ``analyze``, whether it runs in
    this process or on a Dask worker. Idempotent: run again, it writes the same files (each one atomically, the
    overlay before the JSON, so a complete JSON means a complete field).

    Args:
        models: the loaded models.
        jobs: the fields, analysed as one batch (detector and cell-model batches span them).
        settings: how the sample's fields are analysed.
        write: runs each file-writing job (default: at once; ``analyze`` hands them to a thread so that writing
            overlaps the next chunk's networks).

    Returns:
        One result per job, in order; a field that cannot be read is skipped with its reason.
    """
    results: dict[FieldJob, FieldResult] = {}
    loaded: list[tuple[FieldJob, list[str]]] = []
    images = []
    for job in jobs:
        try:
            image, notes = load_field(job.path)
        except LeukolensError as error:
            results[job] = FieldResult(job.path, job.stem, reason=str(error))
            continue
        images.append(image)
        loaded.append((job, notes + list(settings.notes)))
    if images:
        found = models.detector.detect(images, threshold=settings.threshold, batch_size=settings.batch_size,
                                       scale=settings.scale, field_scale=settings.sample_scale)
        if models.reader is not None:
            read = models.reader.read_cells(list(zip(images, found)), read=models.white)
        else:
            read = [[PredictedCell.detected(d, i) for i in range(len(d))] for d in found]
        palette = models.palette
        for (job, notes), image, cells, detections in zip(loaded, images, read, found):
            analysed = AnalyzedField(job.path, image.width, image.height, cells=cells, notes=notes,
                                     scale=detections.scale, tiles=detections.tiles)
            document = field_json(analysed, settings.detector_info, settings.analysis)
            results[job] = FieldResult(job.path, job.stem, document=document)
            write(_field_writer(settings, job.stem, analysed, document, palette))
    return [results[job] for job in jobs]


def _field_writer(settings: FieldSettings, stem: str, analysed: AnalyzedField, document: dict,
                  palette: Vocabulary) -> Callable[[], None]:
    def write() -> None:
        if settings.overlays:
            atomic_write_bytes(settings.out / f"{stem}.png", overlay_png(analysed, palette))
        atomic_write_text(settings.out / f"{stem}.json", json.dumps(document, indent=1) + "\n")

    return write


def _analyse_here(models: FieldModels, jobs: Sequence[FieldJob], settings: FieldSettings,
                  progress: Progress | None) -> list[FieldResult]:
    """The fields in chunks of ``settings.batch_size`` in this process, writing in a thread beside the networks."""
    results: list[FieldResult] = []
    with ThreadPoolExecutor(max_workers=1) as writer:  # PNG and JSON writing overlaps the next chunk's networks
        pending = []
        for start in range(0, len(jobs), settings.batch_size):
            chunk = jobs[start : start + settings.batch_size]
            results += analyse_fields(models, chunk, settings, write=lambda job: pending.append(writer.submit(job)))
            if progress:
                progress(len(results), len(jobs))
        for job in pending:
            job.result()
    return results


# ------------------------------------------------------------------------------------------------------ resume
def _is_png(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        return False


def analysis_info(spec: ModelSpec, *, adapt: bool, scale: str, microns_per_pixel: float | None) -> dict:
    """What the reading of a sample's cells depends on beyond the image and the detector, as every field file
    records it (its ``analysis``): the cell model (path and SHA-256 of the whole file, as its atypicality and blast
    scorers sit beside the network) or none, and the options that change what it reads."""
    return {
        "cell_model": None if spec.cells is None else str(spec.cells),
        "cell_model_sha256": None if spec.cells is None else file_sha256(spec.cells),
        "match_stain": spec.match_stain if spec.cells is not None else False,
        "views": spec.views if spec.cells is not None else 0,
        "size": spec.size if spec.cells is not None else False,
        "adapt": adapt if spec.cells is not None else False,
        "blast_examples": list(spec.blast_examples),
        "scale": scale,
        "microns_per_pixel": microns_per_pixel,
    }


def earlier_field(job: FieldJob, settings: FieldSettings) -> dict | None:
    """The field's document when an earlier run's files for it are complete and valid (the JSON parses, follows
    the field schema of this version, names this image and this detector; the overlay is there when overlays are
    asked for), else None. Whether its cells were read the same way is :func:`finished_field`'s question."""
    try:
        document = json.loads((settings.out / f"{job.stem}.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("schema_version") != SCHEMA_VERSION:
        return None
    if document.get("image") != str(job.path) or document.get("detector") != settings.detector_info:
        return None
    if validate(document, "field") or (settings.overlays and not _is_png(settings.out / f"{job.stem}.png")):
        return None
    return document


def finished_field(job: FieldJob, settings: FieldSettings) -> dict | None:
    """The field's document when an earlier run completed it (:func:`earlier_field`) and read its cells as this
    run would (the same ``analysis``: cell model, its options, the scale asked for), else None: the field is to
    be analysed again. A file that records no ``analysis`` (written before it was recorded) is analysed again:
    nothing says how its cells were read."""
    document = earlier_field(job, settings)
    if document is None or document.get("analysis") != settings.analysis:
        return None
    return document


def _read_differently(documents: Sequence[dict], analysis: dict | None) -> str:
    """A note on the fields an earlier run completed but read otherwise: how many, and what differed."""
    differed = {key for d in documents for key in (analysis or {})
                if isinstance(d.get("analysis"), dict) and d["analysis"].get(key) != analysis[key]}
    unrecorded = sum(not isinstance(d.get("analysis"), dict) for d in documents)
    why = [f"other {', '.join(sorted(differed))}"] if differed else []
    why += [f"{unrecorded} with no record of how their cells were read"] if unrecorded else []
    count = f"{len(documents)} field{'s' if len(documents) != 1 else ''}"
    return f"{count} of an earlier run analysed again: their cells were read otherwise ({'; '.join(why)})"


def _remove_stale_temporaries(out: Path) -> None:
    """The temporary files of writes a killed run left unfinished (never a result: see
    :func:`leukolens.errors.atomic_write_bytes`)."""
    for path in out.glob(".*.tmp"):
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------------ the sample
def _model_spec(detector, cells, *, engine: str, match_stain: bool, blast_examples, threads: int | None,
                views: int, size: bool = True, log: Callable[[str], None]) -> tuple[ModelSpec, str | None]:
    """The models to load, with paths resolved here (a worker may not see this process's defaults), and a note
    when there is no cell model."""
    detector_path = Path(weights.resolve("detector", detector)).absolute()
    if cells is None and not weights.shipped("cells").is_file():
        note = (
            f"no shipped cell model at {weights.shipped('cells')}: white cells are found and counted but not typed "
            "or described (train one with `make weights`, or pass --cells)"
        )
        log(f"leukolens: warning: {note}")
        return ModelSpec(detector_path, None, engine, match_stain, (), threads, views, size), note
    cells_path = Path(weights.resolve("cells", cells)).absolute()
    if not cells_path.is_file():
        raise LeukolensError(f"no cell-model checkpoint at {cells_path}")
    blasts = tuple(str(Path(b).absolute()) for b in blast_examples)
    return ModelSpec(detector_path, cells_path, engine, match_stain, blasts, threads, views, size), None


def _field_jobs(paths: Sequence[Path]) -> list[FieldJob]:
    used: set[str] = set()
    return [FieldJob(path, _unique_stem(path, used)) for path in paths]


def _first_images(jobs: Sequence[FieldJob], count: int):
    """The images of the sample's first ``count`` readable fields (what its scale is estimated from)."""
    images = []
    for job in jobs:
        with contextlib.suppress(LeukolensError):  # an unreadable field is reported when its turn comes
            images.append(load_field(job.path)[0])
        if len(images) == count:
            break
    return images


def _adapt_to_sample(models: FieldModels, jobs: Sequence[FieldJob], settings: FieldSettings) -> tuple[CellReader, str]:
    """The reader adapted to the white cells of the sample's first fields, detected chunk by chunk until there are
    :data:`ADAPT_CELLS` (all of them in a smaller sample), and a note saying what was done."""
    reader, crops = models.reader, []
    for start in range(0, len(jobs), settings.batch_size):
        images = []
        for job in jobs[start : start + settings.batch_size]:
            with contextlib.suppress(LeukolensError):
                images.append(load_field(job.path)[0])
        if not images:
            continue
        found = models.detector.detect(images, threshold=settings.threshold, batch_size=settings.batch_size,
                                       scale=settings.scale, field_scale=settings.sample_scale)
        crops.extend(reader.crop(image, tuple(d.boxes[i])) for image, d in zip(images, found)
                     for i in range(len(d)) if d.class_name(i) in models.white)
        if len(crops) >= ADAPT_CELLS:
            break
    return adapt_reader(reader, crops)


def analyze(
    items: Sequence[str | Path],
    *,
    out: str | Path = "out/analyze",
    detector: str | Path | None = None,
    cells: str | Path | None = None,
    overlays: bool = True,
    report: bool = True,
    threshold: float | None = None,
    batch_size: int = 8,
    engine: str = "auto",
    match_stain: bool = False,
    views: int = VIEWS,
    size: bool = True,
    microns_per_pixel: float | None = None,
    scale: str = "auto",
    adapt: bool = False,
    blast_examples: Sequence[str | Path] = (),
    resume: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    cluster: FieldCluster | None = None,
    log: Callable[[str], None] = print,
    progress: Progress | None = None,
) -> dict:
    """Analyse the fields of one sample; returns the summary (also written to ``<out>/summary.json``).

    Args:
        items: image files and/or folders of them (one sample). A whole slide given alone is analysed by
            :func:`~leukolens.analyze_slide.analyze_slide`; slides given with fields or with other slides are
            skipped, each with its reason, and the fields analysed.
        out: folder for the per-field JSON and PNG files and the summary.
        detector: detector checkpoint (default: the shipped one).
        cells: cell-model checkpoint (default: the shipped one; when it is missing the white cells are found but
            not typed, and the summary says so).
        overlays: also draw each field to PNG.
        report: also write ``<out>/report.html`` and ``<out>/cells.csv`` (docs/report.md), last: a report that
            fails is logged and noted in the summary, the results above stay.
        threshold: detector score threshold (default: the one stored in the detector checkpoint).
        match_stain: bring each white cell's colours to the cell model's training cells first (see
            :class:`leukolens.predict.CellReader`).
        views: how many flips and quarter turns of each white cell its type and attributes average (1-8; fewer is
            faster: see :data:`leukolens.data.augment.VIEWS`).
        size: weigh each white cell's size in µm into its type when the sample's scale is known and the cell model
            holds a size prior (docs/domains.md); False types from the image alone.
        microns_per_pixel: the sample's scale, when known; else it is estimated from the red cells of the sample's
            first fields (up to three; one slide on one microscope: one scale) and used for every field.
        scale: ``"auto"`` (every field at the scale the detector learnt, tiled when larger than one input there) or
            ``"letterbox"`` (each field's longer side to the detector's input size, as before, for comparison).
        adapt: adapt the cell model's normalisation to this sample's own white cells before typing them (AdaBN on
            the white cells of the first fields, up to :data:`ADAPT_CELLS`; at least :data:`ADAPT_MIN_CELLS`), as a
            sample is one slide on one microscope. Off by default: it helps a mixed sample from a new microscope
            and harms a sample dominated by one cell type, as leukemic samples are (docs/domains.md). Done here
            before any field is typed; Dask workers get the adapted network.
        blast_examples: folders of the lab's own blast images, added to the cell model's blast scorer's examples
            (see :class:`leukolens.predict.CellReader`; docs/blasts.md).
        resume: keep the fields whose files an earlier run into ``out`` completed with the same cell model and
            options (:func:`finished_field`) and analyse the rest; the summary covers them all, says how many were
            resumed and notes how many were analysed again because their cells had been read otherwise.
        workers: analyse the fields on a local Dask cluster of this many one-thread worker processes
            (:mod:`leukolens.cluster`; needs the ``distributed`` extra).
        scheduler: analyse them on the Dask cluster at this address (``tcp://host:8786``) instead.
        cluster: an open :class:`~leukolens.cluster.FieldCluster` to use (as :func:`analyze_samples` passes).
        log: where warnings and skipped fields are reported.
        progress: called with (fields done, fields to do) as chunks of fields get done.
    """
    if scale not in SCALE_MODES:
        raise LeukolensError(f"unknown scale {scale!r}: use one of {', '.join(SCALE_MODES)}")
    if microns_per_pixel is not None and not microns_per_pixel > 0:
        raise LeukolensError(f"microns per pixel must be positive, got {microns_per_pixel}")
    paths = find_images(items)
    from leukolens.analyze_slide import analyze_slide, slide_input  # a whole slide is a sample of its own

    slide, slides_skipped = slide_input(paths)
    if slide is not None:
        here = "it is read in this process, window by window"
        ignored = {  # what a slide does not use, and why: said once each rather than dropped silently
            "--workers": (workers is not None, here), "--scheduler": (scheduler is not None, here),
            "the Dask cluster": (cluster is not None and workers is None and scheduler is None, here),
            "--resume": (resume, "it is analysed again from the start"),
            "--scale letterbox": (scale == "letterbox", "it is read in windows at its own scale"),
        }
        for option, (given, why) in ignored.items():
            if given:
                log(f"leukolens: warning: {option} is not used for the whole slide {slide.name}: {why}")
        return analyze_slide(slide, out=out, detector=detector, cells=cells, overlays=overlays, report=report,
                             threshold=threshold, batch_size=batch_size, engine=engine, match_stain=match_stain,
                             views=views, size=size, microns_per_pixel=microns_per_pixel, adapt=adapt,
                             blast_examples=blast_examples, log=log, progress=progress)
    skip_reasons = [slides_skipped.get(path) for path in paths]  # by position: a cluster may rename the paths
    with contextlib.ExitStack() as stack:
        if cluster is None and (workers is not None or scheduler is not None):
            from leukolens.cluster import open_cluster

            cluster = stack.enter_context(open_cluster(workers=workers, scheduler=scheduler, log=log))
        spec, cell_note = _model_spec(detector, cells, engine=engine, match_stain=match_stain,
                                      blast_examples=blast_examples, threads=1 if cluster else None, views=views,
                                      size=size, log=log)
        # Here the detector estimates the sample's scale; the cell reader runs here without a cluster, or adapts
        # to the sample, or tells which of the lab's blast examples it could not read.
        models = FieldModels.load(replace(spec, threads=None), cells=cluster is None or adapt or bool(blast_examples))
        for _, message in models.reader.blast_skipped if models.reader else ():
            log(f"leukolens: skipped blast example {message}")
        if cluster is not None:
            paths, out = cluster.paths_for_workers(paths), cluster.paths_for_workers([Path(out)])[0]
        detector_info = {
            "checkpoint": str(models.detector.path),
            "score_threshold": models.detector.score_threshold if threshold is None else threshold,
            "classes": list(models.detector.classes),
        }
        analysis = analysis_info(spec, adapt=adapt, scale=scale, microns_per_pixel=microns_per_pixel)
        settings = FieldSettings(Path(out), detector_info, analysis, overlays=overlays, threshold=threshold,
                                 batch_size=batch_size, scale=scale, notes=(cell_note,) if cell_note else ())
        settings.out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        jobs = _field_jobs(paths)
        skipped = [FieldResult(job.path, job.stem, reason=reason) for job, reason in zip(jobs, skip_reasons) if reason]
        fields = [job for job, reason in zip(jobs, skip_reasons) if not reason]
        summary_notes = [cell_note] if cell_note else []
        done: dict[FieldJob, dict] = {}
        if resume:
            _remove_stale_temporaries(settings.out)
            earlier = {job: document for job in fields if (document := earlier_field(job, settings)) is not None}
            done = {job: document for job, document in earlier.items() if document.get("analysis") == analysis}
            if len(done) < len(earlier):  # e.g. another cell model or --adapt: never two readings in one summary
                note = _read_differently([d for job, d in earlier.items() if job not in done], analysis)
                log(f"leukolens: {note}")
                summary_notes.append(note)
        todo = [job for job in fields if job not in done]
        results = [FieldResult(job.path, job.stem, document=document, resumed=True) for job, document in done.items()]
        results += skipped
        if scale == "auto" and (todo or adapt):  # one slide on one microscope: estimated once, from its first fields
            first = _first_images(fields, SAMPLE_FIELDS)
            if first:
                settings = replace(settings, sample_scale=models.detector.sample_scale(
                    first, microns_per_pixel=microns_per_pixel))
        adapted_weights = None
        if adapt and models.reader is not None:  # also when every field is resumed: the summary says what was done
            unadapted = models.reader
            models.reader, note = _adapt_to_sample(models, fields, settings)
            summary_notes.append(note)
            if models.reader is not unadapted:  # the workers get the adapted network rather than adapt again
                adapted_weights = models.reader.checkpoint.state_dict
        if todo:
            if cluster is not None:
                results += cluster.analyse(spec, todo, settings, adapted_weights=adapted_weights, progress=progress)
            else:
                results += _analyse_here(models, todo, settings, progress)
        order = {job.stem: i for i, job in enumerate(jobs)}
        results.sort(key=lambda r: order[r.stem])
        return _summarise(results, settings, notes=summary_notes, seconds=time.perf_counter() - started,
                          fields=len(paths), report=report, log=log, blast_call=models.blast_call_rates(spec))


def _summarise(results: list[FieldResult], settings: FieldSettings, *, notes: list[str], seconds: float, fields: int,
               report: bool, log: Callable[[str], None], blast_call: BlastCallRates | None = None) -> dict:
    """The sample's summary and report from its fields' documents (analysed now or resumed), written last;
    ``blast_call``: the blast call's error rates, for the secondary adjusted blast %."""
    out = settings.out
    skipped = [{"image": str(r.path), "reason": r.reason} for r in results if r.document is None]
    for r in results:
        if r.document is None:
            log(f"leukolens: skipped {r.reason}")
    documents = [(r.stem, r.document) for r in results if r.document is not None]
    read = [(stem, field_from_json(document)) for stem, document in documents]
    summary = summary_json(
        differential(read), fields_read=len(read), skipped=skipped, notes=notes, detector=settings.detector_info,
        seconds=seconds, interpretation=interpret(read, blast_call=blast_call), resumed=sum(r.resumed for r in results),
    )
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if not read:
        raise LeukolensError(
            f"none of the {fields} images could be read (see {out / 'summary.json'}); first: {skipped[0]['reason']}"
        )
    if report:  # last: a report that fails loses none of the results written above
        try:
            write_cells_csv(out, documents)
            write_report(out, summary, documents)
        except Exception as error:  # whatever broke the report, the analysis stands: noted, never fatal
            for name in (CSV_NAME, REPORT_NAME):  # never leave an earlier run's report beside these results
                (out / name).unlink(missing_ok=True)
            note = f"report not written: {type(error).__name__}: {error}"
            log(f"leukolens: warning: {note}")
            summary["notes"].append(note)
            atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


# ------------------------------------------------------------------------------------------------------ many samples
@dataclass
class SampleRun:
    """One sample of :func:`analyze_samples`: its name (the subfolder's), output folder, and its summary or why it
    failed."""

    name: str
    out: Path
    summary: dict | None = None
    error: str | None = None


def sample_folders(root: str | Path) -> list[Path]:
    """The subfolders of ``root``, one sample each, in name order (hidden ones left out).

    Raises:
        LeukolensError: ``root`` is not a folder, or holds no subfolder.
    """
    root = Path(root)
    if not root.is_dir():
        raise LeukolensError(f"no samples folder at {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise LeukolensError(f"{root} holds no subfolder: with --samples, each subfolder is one sample")
    return folders


def analyze_samples(
    root: str | Path,
    *,
    out: str | Path = "out/analyze",
    workers: int | None = None,
    scheduler: str | None = None,
    cluster: FieldCluster | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[str], Progress | None] | None = None,
    **options,
) -> list[SampleRun]:
    """Analyse every subfolder of ``root`` as a sample of its own into ``<out>/<subfolder>/`` (per-field files,
    summary and report each). A sample that fails (no readable image) is logged and listed with its reason; the
    others still run. With ``workers`` or ``scheduler`` one Dask cluster serves all the samples.

    Args:
        root: the folder of samples.
        out: the folder the samples' output folders go in.
        workers, scheduler, cluster: as in :func:`analyze`.
        log: as in :func:`analyze`.
        progress: given a sample's name, the progress callback for it (or None).
        options: the other keyword arguments of :func:`analyze` (detector, cells, resume, ...).
    """
    folders = sample_folders(root)
    runs = []
    with contextlib.ExitStack() as stack:
        if cluster is None and (workers is not None or scheduler is not None):
            from leukolens.cluster import open_cluster

            cluster = stack.enter_context(open_cluster(workers=workers, scheduler=scheduler, log=log))
        for folder in folders:
            run = SampleRun(folder.name, Path(out) / folder.name)
            try:
                run.summary = analyze([folder], out=run.out, cluster=cluster, log=log,
                                      progress=progress(folder.name) if progress else None, **options)
            except LeukolensError as error:
                run.error = str(error)
                log(f"leukolens: sample {folder.name} failed: {error}")
            runs.append(run)
    return runs
