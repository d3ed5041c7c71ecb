"""An ``analyze`` output folder imported into the archive: every field and cell kept, the images stored by hash, the
summary kept, and the interpretation recomputed from the stored cells equal to the one ``analyze`` wrote."""

import json
import shutil

import pytest

from leukolens.analyze import analyze
from leukolens.demo import sample_path
from leukolens.errors import LeukolensError
from leukolens.models.checkpoint import save_checkpoint
from leukolens.models.detector import save_detector
from leukolens.sample import interpretation_json
from leukolens.store import DONE, content_hash, import_analysis, resume_import
from tests.conftest import every_cell_a_wbc_detector, tiny_cell_checkpoint

FIELDS = ("BloodImage_00007.jpg", "BloodImage_00015.jpg")


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """A real ``analyze`` run on two bundled fields with tiny untrained models (48 white cells per field)."""
    root = tmp_path_factory.mktemp("analysed")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LEUKOLENS_CACHE", str(root / "cache"))
        detector = save_detector(every_cell_a_wbc_detector(), root / "detector.pt")
        cells = save_checkpoint(tiny_cell_checkpoint(), root / "cells.pt")
        folder = root / "sample"
        folder.mkdir()
        for name in FIELDS:
            shutil.copy(sample_path("bccd") / "BCCD" / "JPEGImages" / name, folder / name)
        out = root / "out"
        analyze([folder], out=out, detector=detector, cells=cells, overlays=False, log=lambda _: None)
    return folder, out


def test_an_analyze_folder_is_imported_whole(archive, analysed):
    folder, out = analysed
    sample = import_analysis(archive, out)
    record = archive.get_sample(sample)
    summary = json.loads((out / "summary.json").read_text())
    assert (record.status, record.fields_total, record.fields_done, record.name) == (DONE, 2, 2, "out")
    assert record.summary == summary
    fields = archive.fields(sample)
    for f, name in zip(fields, FIELDS):
        stem = name.rsplit(".", 1)[0]
        assert f.name == stem and f.result == json.loads((out / f"{stem}.json").read_text())
        assert f.image_hash == content_hash((folder / name).read_bytes())
        assert archive.read_image(f.image_hash) == (folder / name).read_bytes()
    cells = archive.cells(sample)
    assert len(cells) == sum(len(f.result["cells"]) for f in fields) == 96
    first = fields[0].result["cells"][0]
    assert (cells[0].model_type, cells[0].type_probability, cells[0].blast_probability) == (
        first["type"], first["type_probability"], first["blast_probability"])
    assert all(c.sentence and c.model_type.lower() in c.sentence.lower() for c in cells)
    # The interpretation from the stored cells is the one analyze wrote (no review yet).
    assert interpretation_json(archive.interpretation(sample)) == summary["interpretation"]


def test_an_interrupted_import_resumes_and_a_folder_without_fields_is_refused(archive, analysed, tmp_path):
    _, out = analysed
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    sample = archive.create_sample(images=[(p.stem, None) for p in sorted(partial.glob("BloodImage_*.json"))])
    first = archive.pending_fields(sample)[0]
    archive.set_status(sample, "running")
    archive.complete_field(first.id, json.loads((partial / f"{first.name}.json").read_text()))
    resume_import(archive, sample, partial)  # completes only the second field
    assert archive.get_sample(sample).fields_done == 2 and len(archive.cells(sample)) == 96
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "summary.json").write_text("{}")
    with pytest.raises(LeukolensError, match="no per-field result"):
        import_analysis(archive, empty)
    with pytest.raises(LeukolensError, match="no analysis folder"):
        import_analysis(archive, tmp_path / "missing")
