"""A whole slide analysed as one sample: ``leukolens analyze slide.tif`` routes here (docs/scaling.md).

    >>> from leukolens.analyze_slide import analyze_slide
    >>> summary = analyze_slide("slide.tif", out="out/slide")

The slide is never held whole (:mod:`leukolens.io.slide` reads it region by region): its scale is found once
(:func:`~leukolens.predict.slide.slide_scale`), it is walked in overlapping windows through the field detector, each
cell kept once (:func:`~leukolens.predict.slide.detect_slide`), and every white cell is read by the cell model from a
region read around it (:func:`~leukolens.predict.slide.slide_cell_crops`). The outputs are a sample's, with the slide
as its one field: ``<out>/<stem>.json`` (docs/output-schema.md; boxes in slide pixels, and a ``slide`` key saying how
it was read), ``<out>/<stem>.png`` (a thumbnail with the white cells marked), ``<out>/summary.json`` (differential and
interpretation), ``<out>/report.html`` and ``<out>/cells.csv``.

A tile that cannot be decoded is read as bare glass, named in the notes, and the rest of the slide runs (a slide
most of whose tiles cannot be decoded is a clear error instead of a count); a slide without a white cell says so in
its notes and counts 0.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from itertools import chain, islice
from pathlib import Path

import numpy as np

from leukolens.data.augment import VIEWS
from leukolens.errors import LeukolensError, atomic_write_bytes, atomic_write_text
from leukolens.io.slide import Slide, is_slide, open_slide, too_damaged
from leukolens.models.size import cell_diameter_um
from leukolens.predict import weights
from leukolens.predict.cells import CellReader
from leukolens.predict.fields import Detector
from leukolens.predict.output import field_json
from leukolens.predict.results import AnalyzedField, CellPrediction, PredictedCell
from leukolens.predict.slide import (
    SlideConfig,
    SlideWalk,
    detect_slide,
    merge_contained,
    slide_cell_crops,
    slide_scale,
)
from leukolens.records import Vocabulary
from leukolens.report.html import REPORT_NAME, write_report
from leukolens.report.slide import slide_png
from leukolens.report.table import CSV_NAME, write_cells_csv
from leukolens.sample.differential import differential, summary_json
from leukolens.sample.interpret import NOT_WHITE, interpret

__all__ = ["analyze_slide", "slide_input", "slide_json"]

DAMAGED_NOTES = 20
"""Damaged tiles named one by one in the notes; more are counted."""


ONE_SAMPLE = "a whole slide is one sample: give it alone or use --samples with one slide per folder"


def slide_input(paths: Sequence[Path]) -> tuple[Path | None, dict[Path, str]]:
    """How an ``analyze`` call's images split (:func:`~leukolens.io.slide.is_slide`): the whole slide when it is the
    only image (it goes to :func:`analyze_slide`), else None; and the slides to skip, each with its reason, when they
    come with fields or with other slides (the fields are analysed; bad input never loses the rest)."""
    slides = [p for p in paths if is_slide(p)]
    if len(paths) == 1 and slides:
        return slides[0], {}
    fields = len(paths) - len(slides)
    given = f"given with {fields} field{'s' if fields != 1 else ''}" if fields else (
        f"one of {len(slides)} whole slides given together")
    return None, {p: f"{p}: whole slide {given}, not analysed: {ONE_SAMPLE}" for p in slides}


def slide_json(slide: Slide, walk: SlideWalk) -> dict:
    """The ``slide`` key of a slide's ``<stem>.json``: how it was read (docs/output-schema.md)."""
    window = max(max(w.width, w.height) for w in walk.windows)
    return {
        "reader": slide.info.reader,
        "levels": [list(level) for level in slide.info.levels],
        "file_microns_per_pixel": slide.info.microns_per_pixel,
        "window": window,
        "overlap": walk.overlap,
        "windows": len(walk.windows),
        "thumbnail_scale": round(walk.thumbnail_scale, 6),
        "damaged_tiles": [
            {"level": d.level, "x": d.x, "y": d.y, "width": d.width, "height": d.height, "reason": d.reason}
            for d in slide.damaged
        ],
        "seconds": round(walk.seconds, 2),
    }


def damaged_notes(slide: Slide) -> list[str]:
    """One note per damaged tile (up to :data:`DAMAGED_NOTES`, then a count)."""
    notes = [f"tile at ({d.x}, {d.y}), {d.width}x{d.height} px, unreadable ({d.reason}): read as bare glass, cells "
             "there not counted" for d in slide.damaged[:DAMAGED_NOTES]]
    if len(slide.damaged) > DAMAGED_NOTES:
        notes.append(f"{len(slide.damaged) - DAMAGED_NOTES} more unreadable tiles (listed in the slide's JSON)")
    return notes


def analyze_slide(
    path: str | Path,
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
    adapt: bool = False,
    blast_examples: Sequence[str | Path] = (),
    config: SlideConfig | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Analyse one whole slide as a sample; returns the summary (also written to ``<out>/summary.json``).

    The options are :func:`leukolens.analyze.analyze`'s, but ``batch_size``, which a slide leaves to ``config``
    (:attr:`~leukolens.predict.slide.SlideConfig.batch_size`, kept small for memory); ``overlays`` and ``report``
    both want the thumbnail, which is written unless both are off. ``config`` sets the windows.
    ``progress`` is called with (windows done, windows); without it, ``log`` gets a line at every tenth of them.

    Raises:
        LeukolensError: the slide cannot be opened, or a bad option.
    """
    if microns_per_pixel is not None and not microns_per_pixel > 0:
        raise LeukolensError(f"microns per pixel must be positive, got {microns_per_pixel}")
    path, out = Path(path), Path(out)
    started = time.perf_counter()
    with open_slide(path, skip_damaged=True) as slide:
        out.mkdir(parents=True, exist_ok=True)
        field_detector = Detector.from_checkpoint(detector, engine=engine)
        reader, notes = _cell_reader(cells, engine=engine, match_stain=match_stain, blast_examples=blast_examples,
                                     views=views, size=size, log=log)
        scale, scale_note = slide_scale(field_detector, slide, microns_per_pixel=microns_per_pixel, config=config)
        log(f"leukolens: {path}: {slide.width}x{slide.height} px, {scale_note}")
        notes.append(scale_note)
        walk = detect_slide(field_detector, slide, scale, threshold=threshold, config=config,
                            progress=_windows_progress(path, log, progress))
        if (problem := too_damaged(slide)) is not None:  # rather than a count of what little was left
            raise LeukolensError(problem)
        white = tuple(c for c in field_detector.classes if c not in NOT_WHITE)
        found = merge_contained(walk.detections, white)
        indices = [i for i in range(len(found)) if found.class_name(i) in white]
        predictions: dict[int, CellPrediction] = {}
        if reader is not None and indices:
            crops = slide_cell_crops(reader, slide, found, indices)
            if adapt:
                from leukolens.analyze import ADAPT_CELLS, adapt_reader

                first = list(islice(crops, ADAPT_CELLS))
                reader, note = adapt_reader(reader, first)
                notes.append(note)
                crops = chain(first, crops)
            batch_size = (config or SlideConfig()).cell_batch_size
            microns_per_pixel = found.scale.microns_per_pixel if found.scale is not None else None
            sizes = [cell_diameter_um(tuple(float(v) for v in found.boxes[i]), microns_per_pixel) for i in indices]
            for start in range(0, len(indices), batch_size):
                batch = list(islice(crops, batch_size))
                read = reader.predict_crops(np.stack(batch), diameters_um=sizes[start : start + len(batch)])
                for i, prediction in zip(indices[start:], read):
                    predictions[i] = replace(prediction, embedding=None)  # unused here: 5 KB a cell, a slide has 10^4
        problems = damaged_notes(slide)
        if not indices:
            problems.append(f"no white cells found in the slide ({len(found)} other cells): the differential counts 0")
        for note in problems:
            log(f"leukolens: {path}: {note}")
        notes += problems
        field = AnalyzedField(
            path, slide.width, slide.height,
            cells=[PredictedCell.detected(found, i, predictions.get(i)) for i in range(len(found))],
            notes=notes, scale=found.scale, tiles=found.tiles,
        )
        detector_info = {
            "checkpoint": str(field_detector.path),
            "score_threshold": field_detector.score_threshold if threshold is None else threshold,
            "classes": list(field_detector.classes),
        }
        stem = path.stem
        document = {**field_json(field, detector_info), "slide": slide_json(slide, walk)}
        atomic_write_text(out / f"{stem}.json", json.dumps(document, indent=1) + "\n")
        if overlays or report:
            palette = Vocabulary("analyze", tuple(dict.fromkeys((*white, *(reader.classes if reader else ())))))
            marked = [(tuple(found.boxes[i]), predictions[i].label if i in predictions else found.class_name(i))
                      for i in indices]
            atomic_write_bytes(out / f"{stem}.png", slide_png(walk.thumbnail, walk.thumbnail_scale, marked, palette))
    results = [(stem, field)]
    summary = summary_json(
        differential(results), fields_read=1, skipped=[], notes=list(notes), detector=detector_info,
        seconds=time.perf_counter() - started,
        interpretation=interpret(results, blast_call=reader.blast_call_rates if reader else None),
    )
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if report:  # last: a report that fails loses none of the results written above
        try:
            write_cells_csv(out, [(stem, document)])
            write_report(out, summary, [(stem, document)])
        except Exception as error:  # whatever broke the report, the analysis stands: noted, never fatal
            for name in (CSV_NAME, REPORT_NAME):
                (out / name).unlink(missing_ok=True)
            note = f"report not written: {type(error).__name__}: {error}"
            log(f"leukolens: warning: {note}")
            summary["notes"].append(note)
            atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _windows_progress(path: Path, log: Callable[[str], None], progress: Callable[[int, int], None] | None):
    """``progress``, or a (done, total) callback that logs a plain line at every tenth of the windows."""
    if progress is not None:
        return progress
    started = time.perf_counter()

    def report(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            log(f"leukolens: {path.name}: {done}/{total} windows, {time.perf_counter() - started:.0f} s")

    return report


def _cell_reader(cells, *, engine: str, match_stain: bool, blast_examples, views: int, size: bool,
                 log) -> tuple[CellReader | None, list]:
    """The cell model (None, with a note, when there is no shipped one and none was given)."""
    if cells is None and not weights.shipped("cells").is_file():
        note = (f"no shipped cell model at {weights.shipped('cells')}: white cells are found and counted but not "
                "typed or described (train one with `make weights`, or pass --cells)")
        log(f"leukolens: warning: {note}")
        return None, [note]
    reader = CellReader.from_checkpoint(cells, engine=engine, match_stain=match_stain, blast_examples=blast_examples,
                                        views=views, size=size)
    for _, message in reader.blast_skipped:
        log(f"leukolens: skipped blast example {message}")
    return reader, []
