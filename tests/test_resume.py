"""`analyze --resume`: the fields whose files are complete stay as they are, the others are analysed again, and a run
killed with SIGKILL at any moment leaves only complete files."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from leukolens.analyze import FieldJob, FieldSettings, analyze, earlier_field, finished_field
from leukolens.demo import sample_path
from leukolens.predict.output import field_from_json, field_json, validate
from tests.conftest import REPO

BCCD = sample_path("bccd") / "BCCD" / "JPEGImages"

pytestmark = pytest.mark.usefixtures("private_onnx_cache")


def _fields(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in BCCD.glob("*.jpg"))
    for i in range(count):
        name = names[i % len(names)]
        shutil.copy(BCCD / name, folder / (name if i < len(names) else f"copy{i}_{name}"))
    return folder


def _field_files(out):
    return sorted(p for p in out.iterdir() if p.suffix in (".json", ".png") and p.name != "summary.json")


def _mtimes(out):
    return {p.name: p.stat().st_mtime_ns for p in _field_files(out)}


def _without_run(summary):
    return {k: v for k, v in summary.items() if k not in ("seconds", "fields_per_second", "fields_resumed")}


def test_a_field_file_reads_back_as_the_record_it_was_written_from(tmp_path, tiny_detector, tiny_cells):
    out = tmp_path / "out"
    analyze([_fields(tmp_path / "sample", 1)], out=out, detector=tiny_detector, cells=tiny_cells, report=False)
    document = json.loads((out / "BloodImage_00007.json").read_text())
    field = field_from_json(document)
    assert field.cells[0].prediction.probabilities == document["cells"][0]["type_probabilities"]
    assert field.scale.method == document["scale"]["method"] and field.tiles == document["scale"]["tiles"]
    assert document["analysis"]["cell_model"] == str(tiny_cells.absolute())
    assert field_json(field, document["detector"], document["analysis"]) == document


def test_resume_analyses_again_exactly_the_fields_whose_files_are_missing_or_broken(tmp_path, tiny_detector,
                                                                                    tiny_cells):
    folder, out = _fields(tmp_path / "sample", 5), tmp_path / "out"
    options = {"detector": tiny_detector, "cells": tiny_cells, "log": lambda _: None}
    first = analyze([folder], out=out, **options)
    written = {p.name: p.read_bytes() for p in _field_files(out)}
    (out / "BloodImage_00007.json").unlink()  # gone
    (out / "BloodImage_00015.json").write_text(written["BloodImage_00015.json"].decode()[:500])  # cut short
    (out / "BloodImage_00021.png").unlink()  # its overlay gone
    document = json.loads(written["BloodImage_00031.json"])
    document["schema_version"] = 0
    (out / "BloodImage_00031.json").write_text(json.dumps(document))  # another version's
    (out / ".BloodImage_00041.json.x1y2.tmp").write_text("{")  # a write a killed run left unfinished
    before = _mtimes(out)
    time.sleep(0.01)
    resumed = analyze([folder], out=out, resume=True, **options)
    after = _mtimes(out)
    redone = sorted({name.rsplit(".", 1)[0] for name in after if after[name] != before.get(name)})
    assert redone == ["BloodImage_00007", "BloodImage_00015", "BloodImage_00021", "BloodImage_00031"]
    assert {p.name: p.read_bytes() for p in _field_files(out)} == written  # the same files as the first time
    assert not list(out.glob(".*.tmp"))
    assert resumed["fields_resumed"] == 1 and resumed["fields_read"] == 5
    assert _without_run(resumed) == _without_run(first)  # the summary covers every field, resumed or not
    assert validate(resumed, "summary") == []

    # without overlays a missing PNG is no reason; with nothing left to do, nothing is analysed
    (out / "BloodImage_00041.png").unlink()
    again = analyze([folder], out=out, resume=True, overlays=False, **options)
    assert again["fields_resumed"] == 5
    assert _mtimes(out) == {name: t for name, t in after.items() if name != "BloodImage_00041.png"}
    assert _without_run(again) == _without_run(first)


def test_a_field_file_of_another_image_or_detector_is_not_kept(tmp_path):
    job = FieldJob(tmp_path / "a.jpg", "a")
    detector = {"checkpoint": "d.pt", "score_threshold": 0.3, "classes": ["WBC"]}
    settings = FieldSettings(tmp_path, detector, overlays=False)
    document = {"schema_version": 1, "image": str(job.path), "width": 4, "height": 4, "detector": detector,
                "counts": {}, "wbc_types": {}, "notes": [], "cells": []}
    (tmp_path / "a.json").write_text(json.dumps(document))
    assert finished_field(job, settings) == document
    assert finished_field(job, FieldSettings(tmp_path, {**detector, "score_threshold": 0.5}, overlays=False)) is None
    assert finished_field(FieldJob(tmp_path / "b" / "a.jpg", "a"), settings) is None
    assert finished_field(job, FieldSettings(tmp_path, detector, overlays=True)) is None  # no a.png
    (tmp_path / "a.json").write_text(json.dumps({**document, "cells": [{"id": 1}]}))  # not the schema
    assert finished_field(job, settings) is None

    # the cells read otherwise, or no record of how they were read: analysed again
    analysis = {"cell_model": "c.pt", "cell_model_sha256": "0" * 64, "match_stain": False, "views": 4,
                "adapt": False, "blast_examples": [], "scale": "auto", "microns_per_pixel": None}
    with_analysis = FieldSettings(tmp_path, detector, analysis, overlays=False)
    (tmp_path / "a.json").write_text(json.dumps({**document, "analysis": analysis}))
    assert finished_field(job, with_analysis) == {**document, "analysis": analysis}
    assert finished_field(job, replace(with_analysis, analysis={**analysis, "views": 1})) is None
    # a file from before views were recorded (its cells read once) is valid, but read again
    older = {k: v for k, v in analysis.items() if k != "views"}
    (tmp_path / "a.json").write_text(json.dumps({**document, "analysis": older}))
    assert earlier_field(job, with_analysis) == {**document, "analysis": older}
    assert finished_field(job, with_analysis) is None
    (tmp_path / "a.json").write_text(json.dumps({**document, "analysis": analysis}))
    assert finished_field(job, replace(with_analysis, analysis={**analysis, "adapt": True})) is None
    assert finished_field(job, replace(with_analysis, analysis={**analysis, "cell_model_sha256": "1" * 64})) is None
    (tmp_path / "a.json").write_text(json.dumps(document))
    assert finished_field(job, with_analysis) is None


def test_resume_analyses_again_the_fields_whose_cells_were_read_otherwise(tmp_path, tiny_detector, tiny_cells,
                                                                          monkeypatch):
    from leukolens.predict import weights

    folder, out = _fields(tmp_path / "sample", 3), tmp_path / "out"
    options = {"detector": tiny_detector, "overlays": False, "report": False}
    with monkeypatch.context() as patch:  # no cell model: white cells found, not typed
        patch.setitem(weights.SHIPPED, "cells", "absent.pt")
        untyped = analyze([folder], out=out, log=lambda _: None, **options)
    assert untyped["wbc_typed"] == 0
    assert json.loads((out / "BloodImage_00007.json").read_text())["analysis"]["cell_model"] is None

    messages = []
    typed = analyze([folder], out=out, cells=tiny_cells, resume=True, log=messages.append, **options)
    note = "3 fields of an earlier run analysed again: their cells were read otherwise (other cell_model, "
    assert typed["fields_resumed"] == 0 and typed["wbc_typed"] == 3 * 48  # none of the untyped fields kept
    assert any(n.startswith(note) for n in typed["notes"]) and any(m.endswith(typed["notes"][0]) for m in messages)
    assert all("no shipped cell model" not in n for n in typed["notes"])

    again = analyze([folder], out=out, cells=tiny_cells, resume=True, log=lambda _: None, **options)
    assert again["fields_resumed"] == 3 and again["notes"] == []
    adapted = analyze([folder], out=out, cells=tiny_cells, adapt=True, resume=True, log=lambda _: None, **options)
    assert adapted["fields_resumed"] == 0
    assert f"{note.split(' (')[0]} (other adapt)" in adapted["notes"]
    assert json.loads((out / "BloodImage_00007.json").read_text())["analysis"]["adapt"] is True


def test_a_run_killed_mid_sample_resumes_without_redoing_a_finished_field(tmp_path, tiny_detector, tiny_cells):
    folder, out = _fields(tmp_path / "sample", 16), tmp_path / "out"
    options = {"detector": tiny_detector, "cells": tiny_cells, "report": False, "log": lambda _: None}
    analyze([_fields(tmp_path / "warm", 1)], out=tmp_path / "warm-out", **options)  # ONNX exports made once, here
    command = [sys.executable, "-m", "leukolens", "analyze", str(folder), "--out", str(out), "--detector",
               str(tiny_detector), "--cells", str(tiny_cells), "--no-report"]
    run = subprocess.Popen(command, cwd=REPO, env=os.environ.copy(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*.json")) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        run.send_signal(signal.SIGKILL)
    finally:
        run.wait(timeout=30)
    assert not (out / "summary.json").exists(), "the run ended before it was killed"
    # no half-written file: every result there is complete (a temporary file may be left beside them)
    finished = [p for p in out.glob("*.json")]
    assert 1 <= len(finished) < 16
    for path in finished:
        assert validate(json.loads(path.read_text()), "field") == [] and path.with_suffix(".png").is_file()
    before = {p.name: p.stat().st_mtime_ns for p in finished}
    summary = analyze([folder], out=out, resume=True, **options)
    assert summary["fields_resumed"] == len(finished) and summary["fields_read"] == 16
    assert {name: (out / name).stat().st_mtime_ns for name in before} == before  # not one finished field redone
    fields = [p for p in out.glob("*.json") if p.name != "summary.json"]
    assert len(fields) == 16 and not list(out.glob(".*.tmp"))
    for path in fields:
        assert validate(json.loads(path.read_text()), "field") == [] and path.with_suffix(".png").is_file()
