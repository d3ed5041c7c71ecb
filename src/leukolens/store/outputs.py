"""An ``analyze`` output folder into the archive, so results written before the archive existed are kept.

    >>> sample_id = import_analysis(archive, "out/analyze")

Each ``<stem>.json`` of the folder becomes a field (its image stored by hash when the file it names is still there),
``summary.json`` the sample's summary. The import goes the way an analysis does: a sample with its fields pending,
each field completed in its own transaction, then ``done``; a crash leaves a sample that
:func:`resume_import` finishes.
"""

from __future__ import annotations

import json
from pathlib import Path

from leukolens.errors import LeukolensError
from leukolens.store.archive import DONE, QUEUED, RUNNING, Archive, ArchiveError

SUMMARY = "summary.json"
MAX_JSON_BYTES = 64 * 1024 * 1024


def _read_json(path: Path) -> dict:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ArchiveError(f"{path} is larger than {MAX_JSON_BYTES // 2**20} MiB")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArchiveError(f"{path} is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ArchiveError(f"{path} is not a JSON object")
    return document


def field_files(out_dir: Path) -> dict[str, dict]:
    """The per-field results of an ``analyze`` folder: stem -> document, in name order (files that are not a
    field, such as ``summary.json`` or another command's output, are left alone)."""
    fields = {}
    for path in sorted(out_dir.glob("*.json")):
        if path.name == SUMMARY:
            continue
        document = _read_json(path)
        if isinstance(document.get("cells"), list) and "image" in document and "width" in document:
            fields[path.stem] = document
    return fields


def import_analysis(archive: Archive, out_dir: str | Path, *, name: str | None = None) -> str:
    """Store an ``analyze`` output folder as a done sample; returns the sample's id.

    Raises:
        LeukolensError: the folder does not exist or holds no per-field result.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise LeukolensError(f"no analysis folder at {out_dir}")
    fields = field_files(out_dir)
    if not fields:
        raise LeukolensError(f"{out_dir} holds no per-field result of analyze (<stem>.json)")
    images = []
    for stem, document in fields.items():
        image = Path(str(document["image"]))  # the user's own folder, read once; the archive keeps only the hash
        images.append((stem, archive.put_image(image.read_bytes()) if image.is_file() else None))
    sample_id = archive.create_sample(images=images, name=name if name is not None else out_dir.name)
    resume_import(archive, sample_id, out_dir)
    return sample_id


def resume_import(archive: Archive, sample_id: str, out_dir: str | Path) -> None:
    """Complete the fields of an imported sample that are still pending, then store the summary and mark it done."""
    out_dir = Path(out_dir)
    fields = field_files(out_dir)
    if archive.get_sample(sample_id).status == QUEUED:
        archive.set_status(sample_id, RUNNING)
    for field in archive.pending_fields(sample_id):
        if field.name not in fields:
            raise LeukolensError(f"{out_dir} no longer holds {field.name}.json")
        archive.complete_field(field.id, fields[field.name])
    summary_path = out_dir / SUMMARY
    archive.set_status(sample_id, DONE, summary=_read_json(summary_path) if summary_path.is_file() else None)
