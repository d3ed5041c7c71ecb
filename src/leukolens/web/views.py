"""The archive's records as the API's JSON, and the sample's downloads (report, CSV, JSON): no web framework here."""

from __future__ import annotations

import copy
import io
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

from PIL import Image

from leukolens.report.html import report_html
from leukolens.report.images import cell_crop, drawn_field
from leukolens.report.table import CSV_NAME, write_cells_csv
from leukolens.sample.differential import differential, summary_json
from leukolens.sample.interpret import interpret
from leukolens.store import DONE, Archive, FieldRecord, SampleRecord, SearchHit, StoredCell
from leukolens.web.worker import open_field

CROP_SIDE = 256
FIELD_SIDE = 1600


def sample_json(record: SampleRecord) -> dict:
    """A sample in a list: status and progress, no summary."""
    return {
        "id": record.id, "name": record.name, "status": record.status, "error": record.error,
        "created": record.created, "updated": record.updated,
        "fields_total": record.fields_total, "fields_done": record.fields_done,
        "signed": record.signed, "signatures": [asdict(s) for s in record.signatures],
    }


def reviewed_summary(archive: Archive, record: SampleRecord) -> dict | None:
    """The sample's summary with the differential and the interpretation recomputed from the stored cells, the
    reviewers' calls applied (the stored summary is the model's alone)."""
    if record.status != DONE or record.summary is None:
        return record.summary
    stored = record.summary
    fields = archive.sample_fields(record.id)
    summary = summary_json(differential(fields), fields_read=len(fields), skipped=stored.get("fields_skipped", []),
                           notes=list(stored.get("notes", [])), detector=stored.get("detector", {}),
                           seconds=stored.get("seconds") or 0.0, interpretation=interpret(fields))
    summary["reviewed"] = any(c.review is not None for c in archive.cells(record.id))
    return summary


def sample_detail(archive: Archive, record: SampleRecord) -> dict:
    return {
        **sample_json(record),
        "fields": [{"id": f.id, "name": f.name, "done": f.done} for f in archive.fields(record.id)],
        "summary": reviewed_summary(archive, record),
    }


def cell_json(cell: StoredCell) -> dict:
    document = asdict(cell)
    document["type"] = cell.type
    document["box_xyxy"] = list(cell.box_xyxy)
    return document


def hit_json(hit: SearchHit) -> dict:
    return asdict(hit)


def jpeg(image: Image.Image, *, max_side: int, quality: int = 88) -> bytes:
    image = image.convert("RGB")
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def cell_image(archive: Archive, cell: StoredCell) -> bytes:
    """The cell's crop from its field, as JPEG."""
    image = open_field(archive, archive.field(cell.field_id))
    return jpeg(cell_crop(image, cell.box_xyxy), max_side=CROP_SIDE)


def field_image(archive: Archive, field: FieldRecord, *, overlay: bool) -> bytes:
    """The field as JPEG, with its cells' boxes drawn when ``overlay`` (and the field is done)."""
    image = open_field(archive, field)
    if overlay and field.result is not None:
        image = drawn_field(image, field.result)
    return jpeg(image, max_side=FIELD_SIDE)


def _documents(archive: Archive, sample_id: str, folder: Path | None = None) -> list[tuple[str, dict]]:
    """(name, per-field JSON) of the done fields; with ``folder``, each field's image is written there and the
    document points at it (the report cuts its crops from it). Names are never paths: files are numbered."""
    documents = []
    for n, field in enumerate(archive.fields(sample_id)):
        if not field.done or field.result is None:
            continue
        document = copy.deepcopy(field.result)
        if folder is not None and field.image_hash is not None:
            path = folder / f"field-{n}.img"
            path.write_bytes(archive.read_image(field.image_hash))
            document["image"] = str(path)
        documents.append((field.name, document))
    return documents


def report(archive: Archive, record: SampleRecord) -> str:
    """The sample's HTML report (docs/report.md), with the reviewers' calls applied to the summary."""
    summary = reviewed_summary(archive, record) or {}
    with tempfile.TemporaryDirectory(prefix="leukolens-report-") as folder:
        documents = _documents(archive, record.id, Path(folder))
        return report_html(folder, summary, documents, title=record.name or record.id)


def cells_csv(archive: Archive, record: SampleRecord) -> str:
    with tempfile.TemporaryDirectory(prefix="leukolens-csv-") as folder:
        write_cells_csv(folder, _documents(archive, record.id))
        return (Path(folder) / CSV_NAME).read_text(encoding="utf-8")


def sample_document(archive: Archive, record: SampleRecord) -> str:
    """Everything stored about a sample as one JSON document: summary, fields, cells with reviews, audit log."""
    document = {
        "sample": sample_detail(archive, record),
        "fields": [{"name": name, "result": result} for name, result in _documents(archive, record.id)],
        "cells": [cell_json(c) for c in archive.cells(record.id)],
        "audit": [asdict(a) for a in archive.audit_log(record.id)],
    }
    return json.dumps(document, indent=1)
