"""The main job: read smear fields like a hematologist, one sample at a time.

For every field: find every cell (white, red, platelet) with the detector, name each white cell's type and describe
its morphology with the cell model, and write ``<out>/<stem>.json`` (every cell: box, detector class and score; for
white cells also type, type probabilities, attributes with probabilities, atypicality and verdict) and
``<out>/<stem>.png`` (the field with its cells drawn). For the sample (all fields given together): a differential
count of the white cells, the cells flagged for review, and which fields were skipped and why, printed and written to
``<out>/summary.json``.

A field that cannot be read (corrupt, not an image, absurdly large) is skipped with its reason; the rest of the
sample still runs. Grayscale and palette images are converted to RGB.

    >>> from leukolens.analyze import analyze
    >>> summary = analyze(["smear/"], out="out/smear")
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from leukolens.io.common import IMAGE_SUFFIXES, LeukolensError, atomic_write_bytes, atomic_write_text
from leukolens.records import Box, BoxFormat, Cell, Field, Vocabulary

NOT_WHITE = ("RBC", "Platelets")
"""Detector classes that are not white cells; every other class (``WBC``, or a WBC type when a detector was trained
on typed boxes) goes to the cell model."""
MAX_PIXELS = 40_000_000
"""Larger images are refused: a microscope field is a few megapixels; a whole-slide scan must be tiled first."""
MAX_SIDE = 8192


@dataclass
class FieldResult:
    """What was found in one field."""

    image: str
    width: int
    height: int
    cells: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> Counter:
        return Counter(c["detector_class"] for c in self.cells)

    def as_dict(self, detector: dict) -> dict:
        types = Counter(c["type"] for c in self.cells if c.get("type"))
        return {
            "image": self.image,
            "width": self.width,
            "height": self.height,
            "detector": detector,
            "counts": dict(self.counts()),
            "wbc_types": dict(types),
            "notes": self.notes,
            "cells": self.cells,
        }


def find_images(items: Sequence[str | Path]) -> list[Path]:
    """Image files from arguments that are files or folders (folders searched recursively, sorted).

    Raises:
        LeukolensError: a path does not exist, or there is no image at all.
    """
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            paths.append(path)
        else:
            raise LeukolensError(f"{path}: no such file or folder")
    if not paths:
        raise LeukolensError(
            "no images found in " + ", ".join(str(i) for i in items) + f" (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return paths


def load_field(path: Path) -> tuple[Image.Image, list[str]]:
    """An RGB field and notes on what was done to it.

    Raises:
        LeukolensError: unreadable, corrupt, or too large, with the reason.
    """
    notes = []
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
                raise LeukolensError(
                    f"{path}: image is {width}x{height} px, larger than a microscope field (at most {MAX_SIDE} px a "
                    f"side and {MAX_PIXELS // 1_000_000} megapixels); cut it into fields first"
                )
            if width < 32 or height < 32:
                raise LeukolensError(f"{path}: image is {width}x{height} px, too small to be a smear field")
            image.load()
            if image.mode != "RGB":
                notes.append(f"converted from {image.mode} to RGB")
            return image.convert("RGB"), notes
    except LeukolensError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise LeukolensError(f"{path}: cannot read image ({error})") from None


def _cell_entry(number: int, box, score: float, class_name: str) -> dict:
    x1, y1, x2, y2 = (round(float(v), 1) for v in box)
    return {
        "id": number,
        "box_xyxy": [x1, y1, x2, y2],
        "detector_class": class_name,
        "detector_score": round(float(score), 4),
    }


def _overlay(image: Image.Image, path: Path, result: FieldResult, classes: Vocabulary) -> bytes:
    """The field with its cells drawn, as PNG bytes (fast compression: the overlay is for eyes, not archives)."""
    from leukolens.report.overlay import draw_field

    cells = []
    for c in result.cells:
        label = c.get("type") or c["detector_class"]
        attributes = {n: a["value"] for n, a in c.get("attributes", {}).items()}
        if c.get("verdict") and c["verdict"] != "typical":
            attributes = {"verdict": c["verdict"], **attributes}
        cells.append(Cell(Box(tuple(c["box_xyxy"]), BoxFormat.XYXY), label, attributes))
    field_record = Field(path, image.width, image.height, cells)
    drawing = draw_field(field_record, classes)
    buffer = io.BytesIO()
    drawing.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, n = path.stem, 1
    while stem in used:
        n += 1
        stem = f"{path.stem}_{n}"
    used.add(stem)
    return stem


def analyze(
    items: Sequence[str | Path],
    *,
    out: str | Path = "out/analyze",
    detector: str | Path | None = None,
    cells: str | Path | None = None,
    overlays: bool = True,
    threshold: float | None = None,
    batch_size: int = 8,
    engine: str = "auto",
    match_stain: bool = False,
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
        threshold: detector score threshold (default: the one stored in the detector checkpoint).
        match_stain: bring each white cell's colours to the cell model's training cells first (see
            :class:`leukolens.predict.Predictor`).
    """
    from leukolens.detect import Detector
    from leukolens.predict import Predictor, default_checkpoint

    paths = find_images(items)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    field_detector = Detector.from_checkpoint(detector, engine=engine)
    predictor, cell_note = None, None
    if cells is None and not default_checkpoint().is_file():
        cell_note = (
            f"no shipped cell model at {default_checkpoint()}: white cells are found and counted but not typed or "
            "described (train one with `make weights`, or pass --cells)"
        )
        log(f"leukolens: warning: {cell_note}")
    else:
        predictor = Predictor.from_checkpoint(cells, engine=engine, match_stain=match_stain)
    classes = field_detector.classes
    cell_types = predictor.classes if predictor else ()
    palette = Vocabulary("analyze", tuple(dict.fromkeys((*classes, *cell_types))))
    detector_info = {
        "checkpoint": str(field_detector.path),
        "score_threshold": field_detector.score_threshold if threshold is None else threshold,
        "classes": list(classes),
    }
    started = time.perf_counter()
    skipped: list[dict] = []
    results: list[tuple[str, FieldResult]] = []
    used: set[str] = set()
    writer = ThreadPoolExecutor(max_workers=1)  # PNG and JSON writing overlaps the next batch's networks
    pending = []
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
            loaded.append((path, notes))
        if not images:
            continue
        found = field_detector.detect(images, threshold=threshold)
        crops, owners = [], []
        chunk_results = []
        for (path, notes), image, detections in zip(loaded, images, found):
            result = FieldResult(str(path), image.width, image.height, notes=list(notes))
            if cell_note:
                result.notes.append(cell_note)
            for number, (box, score, label) in enumerate(
                zip(detections.boxes, detections.scores, detections.labels), start=1
            ):
                entry = _cell_entry(number, box, score, classes[int(label)])
                result.cells.append(entry)
                if predictor is not None and entry["detector_class"] not in NOT_WHITE:
                    crops.append(predictor.crop(image, entry["box_xyxy"]))
                    owners.append(entry)
            chunk_results.append((path, image, result))
        if crops:
            for entry, prediction in zip(owners, predictor.predict_crops(np.stack(crops))):
                described = prediction.as_dict()
                entry.update(
                    {
                        "type": described["label"],
                        "type_probability": described["probability"],
                        "type_probabilities": described["probabilities"],
                        "attributes": described["attributes"],
                        "atypicality": described["atypicality"],
                        "verdict": described["verdict"],
                    }
                )
        for path, image, result in chunk_results:
            stem = _unique_stem(path, used)
            results.append((stem, result))
            payload = json.dumps(result.as_dict(detector_info), indent=1) + "\n"
            pending.append(writer.submit(atomic_write_text, out / f"{stem}.json", payload))
            if overlays:
                pending.append(
                    writer.submit(
                        lambda i, p, r, s: atomic_write_bytes(out / f"{s}.png", _overlay(i, p, r, palette)),
                        image,
                        path,
                        result,
                        stem,
                    )
                )
    for job in pending:
        job.result()
    writer.shutdown()
    seconds = time.perf_counter() - started
    summary = summarize(results, skipped, cell_note=cell_note, seconds=seconds, detector=detector_info)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if not results:
        raise LeukolensError(
            f"none of the {len(paths)} images could be read (see {out / 'summary.json'}); first: {skipped[0]['reason']}"
        )
    return summary


def summarize(
    results: list[tuple[str, FieldResult]],
    skipped: list[dict],
    *,
    cell_note: str | None,
    seconds: float,
    detector: dict,
) -> dict:
    """The sample's differential count and what was read."""
    types: Counter = Counter()
    flagged = []
    counts: Counter = Counter()
    for stem, result in results:
        counts.update(result.counts())
        for c in result.cells:
            if c.get("type"):
                types[c["type"]] += 1
                if c.get("verdict") not in (None, "typical"):
                    flagged.append({"field": stem, "cell": c["id"], "type": c["type"], "atypicality": c["atypicality"]})
    typed = sum(types.values())
    ranked = sorted(types.items(), key=lambda item: -item[1])
    differential = {name: {"count": n, "percent": round(100 * n / typed, 1)} for name, n in ranked}
    return {
        "fields_read": len(results),
        "fields_skipped": skipped,
        "cells_found": dict(counts),
        "wbc_typed": typed,
        "differential": differential,
        "atypical_flagged": len(flagged),
        "flagged_cells": flagged,
        "notes": [cell_note] if cell_note else [],
        "detector": detector,
        "seconds": round(seconds, 2),
        "fields_per_second": round(len(results) / seconds, 2) if seconds > 0 else None,
    }


def format_summary(summary: dict, out: str | Path) -> str:
    """The differential count as a hematologist reads it."""
    lines = [
        f"{summary['fields_read']} fields read, {len(summary['fields_skipped'])} skipped "
        f"({summary['fields_per_second'] or 0:.1f} fields/s); results in {out}",
        "cells found: " + (", ".join(f"{k} {v}" for k, v in summary["cells_found"].items()) or "none"),
    ]
    if summary["wbc_typed"]:
        lines.append(f"WBC differential ({summary['wbc_typed']} cells typed):")
        for name, v in summary["differential"].items():
            lines.append(f"  {name:<22} {v['count']:>5}  {v['percent']:5.1f}%")
        lines.append(f"atypical cells flagged for review: {summary['atypical_flagged']}")
    for note in summary["notes"]:
        lines.append(f"note: {note}")
    for s in summary["fields_skipped"]:
        lines.append(f"skipped: {s['reason']}")
    return "\n".join(lines)
