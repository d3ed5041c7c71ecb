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

1. ``cli.cmd_analyze`` -> :func:`analyze` (this module): paths, checkpoints, options.
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
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from leukolens.errors import LeukolensError, atomic_write_bytes, atomic_write_text
from leukolens.predict import weights
from leukolens.predict.cells import CellReader
from leukolens.predict.fields import SCALE_MODES, Detector, find_images, load_field
from leukolens.predict.output import field_json
from leukolens.predict.results import AnalyzedField, PredictedCell
from leukolens.records import Vocabulary
from leukolens.report.html import REPORT_NAME, write_report
from leukolens.report.overlay import overlay_png
from leukolens.report.table import CSV_NAME, write_cells_csv
from leukolens.sample.differential import differential, summary_json
from leukolens.sample.interpret import interpret

__all__ = ["NOT_WHITE", "analyze", "find_images", "load_field"]

NOT_WHITE = ("RBC", "Platelets")
"""Detector classes that are not white cells; every other class (``WBC``, or a WBC type when a detector was trained
on typed boxes) goes to the cell model."""


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
    microns_per_pixel: float | None = None,
    scale: str = "auto",
    adapt: bool = False,
    blast_examples: Sequence[str | Path] = (),
    log: Callable[[str], None] = print,
    progress: Callable | None = None,
) -> dict:
    """Analyse the fields of one sample; returns the summary (also written to ``<out>/summary.json``).

    Args:
        items: image files and/or folders of them (one sample).
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
        microns_per_pixel: the sample's scale, when known; else it is estimated from the red cells of the sample's
            first fields (up to three; one slide on one microscope: one scale) and used for every field.
        scale: ``"auto"`` (every field at the scale the detector learnt, tiled when larger than one input there) or
            ``"letterbox"`` (each field's longer side to the detector's input size, as before, for comparison).
        adapt: adapt the cell model's normalisation to this sample's own white cells before typing them (AdaBN on
            the white cells of the first fields, up to :data:`ADAPT_CELLS`; at least :data:`ADAPT_MIN_CELLS`), as a
            sample is one slide on one microscope. Off by default: it helps a mixed sample from a new microscope
            and harms a sample dominated by one cell type, as leukemic samples are (docs/domains.md).
        blast_examples: folders of the lab's own blast images, added to the cell model's blast scorer's examples
            (see :class:`leukolens.predict.CellReader`; docs/blasts.md).
    """
    if scale not in SCALE_MODES:
        raise LeukolensError(f"unknown scale {scale!r}: use one of {', '.join(SCALE_MODES)}")
    if microns_per_pixel is not None and not microns_per_pixel > 0:
        raise LeukolensError(f"microns per pixel must be positive, got {microns_per_pixel}")
    paths = find_images(items)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    field_detector = Detector.from_checkpoint(detector, engine=engine)
    reader, cell_note = None, None
    if cells is None and not weights.shipped("cells").is_file():
        cell_note = (
            f"no shipped cell model at {weights.shipped('cells')}: white cells are found and counted but not typed "
            "or described (train one with `make weights`, or pass --cells)"
        )
        log(f"leukolens: warning: {cell_note}")
    else:
        reader = CellReader.from_checkpoint(cells, engine=engine, match_stain=match_stain,
                                            blast_examples=blast_examples)
        for _, message in reader.blast_skipped:
            log(f"leukolens: skipped blast example {message}")
    classes = field_detector.classes
    white = tuple(c for c in classes if c not in NOT_WHITE)
    palette = Vocabulary("analyze", tuple(dict.fromkeys((*classes, *(reader.classes if reader else ())))))
    detector_info = {
        "checkpoint": str(field_detector.path),
        "score_threshold": field_detector.score_threshold if threshold is None else threshold,
        "classes": list(classes),
    }
    started = time.perf_counter()
    skipped: list[dict] = []
    results: list[tuple[str, AnalyzedField]] = []
    used: set[str] = set()
    sample_scale = None
    waiting: list[tuple] = []  # detected chunks whose cells wait for the sample's adaptation
    crops: list[np.ndarray] = []
    adapted = False
    summary_notes = [cell_note] if cell_note else []
    writer = ThreadPoolExecutor(max_workers=1)  # PNG and JSON writing overlaps the next batch's networks
    pending = []

    def read_and_write(loaded, images, found) -> None:
        """Read the white cells of one chunk of detected fields; queue each field's JSON and overlay."""
        if reader is not None:
            read = reader.read_cells(list(zip(images, found)), read=white)
        else:
            read = [[PredictedCell.detected(d, i) for i in range(len(d))] for d in found]
        for (path, notes), image, predicted, detections in zip(loaded, images, read, found):
            field = AnalyzedField(
                path, image.width, image.height, cells=predicted, notes=notes, scale=detections.scale,
                tiles=detections.tiles,
            )
            stem = _unique_stem(path, used)
            results.append((stem, field))
            payload = json.dumps(field_json(field, detector_info), indent=1) + "\n"
            pending.append(writer.submit(atomic_write_text, out / f"{stem}.json", payload))
            if overlays:
                pending.append(
                    writer.submit(
                        lambda f, s: atomic_write_bytes(out / f"{s}.png", overlay_png(f, palette)), field, stem
                    )
                )

    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    for chunk in progress(chunks) if progress else chunks:
        images, loaded = [], []
        for path in chunk:
            try:
                image, notes = load_field(path)
            except LeukolensError as error:
                skipped.append({"image": str(path), "reason": str(error)})
                log(f"leukolens: skipped {error}")
                continue
            images.append(image)
            loaded.append((path, notes + ([cell_note] if cell_note else [])))
        if not images:
            continue
        if scale == "auto" and sample_scale is None:  # one slide on one microscope: estimated once
            sample_scale = field_detector.sample_scale(images, microns_per_pixel=microns_per_pixel)
        found = field_detector.detect(
            images, threshold=threshold, batch_size=batch_size, scale=scale, field_scale=sample_scale
        )
        waiting.append((loaded, images, found))
        if reader is not None and adapt and not adapted:
            crops.extend(reader.crop(image, tuple(d.boxes[i])) for image, d in zip(images, found)
                         for i in range(len(d)) if d.class_name(i) in white)
            if len(crops) < ADAPT_CELLS:
                continue  # keep the fields until the sample's first white cells are enough to adapt to
            (reader, note), adapted = adapt_reader(reader, crops), True
            summary_notes.append(note)
        for waiting_chunk in waiting:
            read_and_write(*waiting_chunk)
        waiting = []
    if waiting:  # a sample with fewer white cells than ADAPT_CELLS: adapt to what there is
        if reader is not None and adapt and not adapted:
            reader, note = adapt_reader(reader, crops)
            summary_notes.append(note)
        for waiting_chunk in waiting:
            read_and_write(*waiting_chunk)
    for job in pending:
        job.result()
    writer.shutdown()
    seconds = time.perf_counter() - started
    summary = summary_json(
        differential(results), fields_read=len(results), skipped=skipped, notes=summary_notes,
        detector=detector_info, seconds=seconds, interpretation=interpret(results),
    )
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if not results:
        raise LeukolensError(
            f"none of the {len(paths)} images could be read (see {out / 'summary.json'}); first: {skipped[0]['reason']}"
        )
    if report:  # last: a report that fails loses none of the results written above
        documents = [(stem, field_json(field, detector_info)) for stem, field in results]
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

