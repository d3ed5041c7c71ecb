"""The sample's report (``report.html``) and ``cells.csv``, written by analyze on the bundled demo fields with the
rigged detector (48 white cells a field) and a tiny untrained cell model: what a reviewer opens."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from leukolens.analyze import analyze
from leukolens.cli import main
from leukolens.demo import sample_path
from leukolens.models.checkpoint import save_checkpoint
from leukolens.models.detector import save_detector
from leukolens.report.html import REPORT_NAME, report_html, write_report
from leukolens.report.table import COLUMNS, CSV_NAME
from tests.conftest import every_cell_a_wbc_detector, tiny_cell_checkpoint

FIVE_MB = 5 * 1024 * 1024
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
SVG_LEAVES = {"line", "rect", "path", "circle"}


class Page(HTMLParser):
    """Every element with its attributes and class; tiles with their images; text; unclosed or stray tags."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.tiles: list[dict] = []
        self.text: list[str] = []
        self.open: list[str] = []
        self.stray: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if "tile" in (attributes.get("class") or "").split():
            self.tiles.append({**attributes, "images": []})
        elif tag == "img" and self.tiles and "tile" in self.open_classes():
            self.tiles[-1]["images"].append(attributes["src"])
        if tag not in VOID:
            self.open.append(tag if tag != "div" else f"div.{attributes.get('class', '')}")

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag not in VOID and tag not in SVG_LEAVES:
            self.stray.append(f"<{tag}/>")

    def handle_endtag(self, tag):
        if not self.open or self.open[-1].split(".")[0] != tag:
            self.stray.append(f"</{tag}> with {self.open[-3:]} open")
            return
        self.open.pop()

    def handle_data(self, data):
        self.text.append(data)

    def open_classes(self) -> set[str]:
        return {c for tag in self.open if tag.startswith("div.") for c in tag[4:].split()}

    def ids(self) -> set[str]:
        return {a["id"] for _, a in self.elements if "id" in a}

    def by_class(self, name: str) -> list[tuple[str, dict]]:
        return [(t, a) for t, a in self.elements if name in (a.get("class") or "").split()]


def decode_data_uri(uri: str) -> Image.Image:
    assert uri.startswith("data:image/jpeg;base64,"), uri[:40]
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1], validate=True)))
    image.load()
    return image


pytestmark = pytest.mark.usefixtures("private_onnx_cache")  # ONNX exports of the tiny models: this module's own


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """The rigged detector (every output cell a white cell) and an untrained cell model with WBCAtt's heads."""
    folder = tmp_path_factory.mktemp("models")
    detector = save_detector(every_cell_a_wbc_detector(), folder / "tiny-detector.pt")
    return detector, save_checkpoint(tiny_cell_checkpoint(), folder / "tiny-cells.pt")


DEMO_FIELDS = sample_path("bccd") / "BCCD" / "JPEGImages"


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory, tiny_models):
    """The bundled demo sample (six BCCD fields) analysed into a folder, the report and the CSV with it."""
    out = tmp_path_factory.mktemp("demo") / "out"
    detector, cells = tiny_models
    analyze([DEMO_FIELDS], out=out, detector=detector, cells=cells, log=print)
    return out


def field_documents(out: Path) -> list[tuple[str, dict]]:
    return [(p.stem, json.loads(p.read_text())) for p in sorted(out.glob("*.json")) if p.name != "summary.json"]


def white_cells(out: Path) -> set[tuple[str, str]]:
    return {(stem, str(c["id"])) for stem, d in field_documents(out) for c in d["cells"] if "type" in c}


def test_the_demo_report_has_one_tile_per_white_cell_each_with_an_image_that_decodes(demo_out):
    page = Page((demo_out / REPORT_NAME).read_text(encoding="utf-8"))
    assert page.stray == [] and page.open == []
    expected = white_cells(demo_out)
    assert len(expected) == 6 * 48
    assert len(page.tiles) == len(expected)
    assert {(t["data-field"], t["data-cell"]) for t in page.tiles} == expected
    for tile in page.tiles:
        (uri,) = tile["images"]
        crop = decode_data_uri(uri)
        assert crop.format == "JPEG" and 1 <= max(crop.size) <= 128
    fields = page.by_class("field")
    assert len(fields) == 6
    overlays = [a["src"] for t, a in page.elements if t == "img" and a.get("alt", "").startswith("field ")]
    assert len(overlays) == 6 and all(640 <= max(decode_data_uri(u).size) <= 960 for u in overlays)


def test_the_demo_report_fetches_nothing_and_stays_under_5_mb(demo_out):
    path = demo_out / REPORT_NAME
    text = path.read_text(encoding="utf-8")
    assert path.stat().st_size < FIVE_MB
    page = Page(text)
    for tag, attributes in page.elements:
        for name in ("src", "href", "srcset", "poster", "data", "action"):
            value = attributes.get(name)
            if value is not None:
                assert value.startswith(("data:image/jpeg;base64,", "#")), (tag, name, value[:60])
    assert not [t for t, _ in page.elements if t in ("script", "link", "iframe", "object", "embed", "base")]
    assert "http://" not in text and "https://" not in text  # the demo's data has no address either
    assert not re.search(r"url\s*\(|@import", text)
    assert {h[1:] for _, a in page.elements if (h := a.get("href", "")).startswith("#")} <= page.ids()


def test_the_differential_in_the_report_is_the_summarys(demo_out):
    summary = json.loads((demo_out / "summary.json").read_text())
    differential = summary["interpretation"]["differential"]
    page = Page((demo_out / REPORT_NAME).read_text(encoding="utf-8"))
    rows = [a["data-type"] for t, a in page.elements if t == "tr" and "data-type" in a]
    assert rows == list(differential)

    class Cells(HTMLParser):  # the text of each numeric cell of each differential row
        def __init__(self):
            super().__init__()
            self.row, self.column, self.values = None, None, {}

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "tr" and "data-type" in attrs:
                self.row = attrs["data-type"]
                self.values[self.row] = {}
            elif tag == "td" and self.row:
                self.column = ((attrs.get("class") or "").split() or ["type"])[-1]

        def handle_data(self, data):
            if self.row and self.column:
                self.values[self.row][self.column] = self.values[self.row].get(self.column, "") + data

        def handle_endtag(self, tag):
            self.column = None if tag == "td" else self.column
            self.row = None if tag == "tr" else self.row

    parser = Cells()
    parser.feed((demo_out / REPORT_NAME).read_text(encoding="utf-8"))
    for name, row in differential.items():
        shown = parser.values[name]
        assert int(shown["count"]) == row["count"]
        assert float(shown["percent"]) == row["percent"]
        low, high = shown["interval"].rstrip("%").split("\u2013")
        assert (float(low), float(high)) == (row["low"], row["high"])
        assert float(shown["expected"].rstrip("%")) == row["expected_percent"]
    assert sum(r["count"] for r in differential.values()) >= summary["interpretation"]["white_cells_counted"]
    chart_bars = [a for t, a in page.elements if t == "rect"]
    assert len(chart_bars) == len(differential)


def test_cells_csv_has_one_row_per_cell_of_the_field_files(demo_out):
    with open(demo_out / CSV_NAME, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    documents = field_documents(demo_out)
    cells = [(stem, c) for stem, d in documents for c in d["cells"]]
    assert len(rows) == len(cells) == 6 * 48
    assert list(rows[0])[: len(COLUMNS)] == list(COLUMNS)
    assert {"cell_size", "cell_size_probability", "granularity"} <= set(rows[0])
    by_key = {(r["field"], int(r["cell"])): r for r in rows}
    for stem, cell in cells:
        row = by_key[(stem, cell["id"])]
        assert [float(row[k]) for k in ("x1", "y1", "x2", "y2")] == cell["box_xyxy"]
        assert row["type"] == cell["type"] and float(row["type_probability"]) == cell["type_probability"]
        assert float(row["detector_score"]) == cell["detector_score"] and row["verdict"] == cell["verdict"]
        assert row["cell_size"] == cell["attributes"]["cell_size"]["value"]
        assert float(row["atypicality"]) == cell["atypicality"]


def test_no_report_writes_neither_file(tmp_path, tiny_models):
    detector, cells = tiny_models
    folder = tmp_path / "sample"
    folder.mkdir()
    shutil.copy(DEMO_FIELDS / "BloodImage_00007.jpg", folder)
    out = tmp_path / "out"
    assert main(["analyze", str(folder), "--out", str(out), "--detector", str(detector), "--cells", str(cells),
                 "--no-report"]) == 0
    assert (out / "BloodImage_00007.json").is_file() and (out / "summary.json").is_file()
    assert not (out / REPORT_NAME).exists() and not (out / CSV_NAME).exists()
    summary = analyze([folder], out=tmp_path / "python", detector=detector, cells=cells, report=False, log=print)
    assert summary["fields_read"] == 1 and not (tmp_path / "python" / REPORT_NAME).exists()
    assert not (tmp_path / "python" / CSV_NAME).exists()


def test_a_report_that_fails_keeps_the_results_and_says_so(tmp_path, tiny_models, monkeypatch):
    detector, cells = tiny_models
    folder = tmp_path / "sample"
    folder.mkdir()
    shutil.copy(DEMO_FIELDS / "BloodImage_00007.jpg", folder)
    out = tmp_path / "out"
    (out).mkdir()
    (out / REPORT_NAME).write_text("an earlier run's report")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("leukolens.analyze.write_report", broken)
    logged = []
    summary = analyze([folder], out=out, detector=detector, cells=cells, log=logged.append)
    assert summary["fields_read"] == 1
    assert json.loads((out / "BloodImage_00007.json").read_text())["counts"] == {"WBC": 48}
    assert "report not written: OSError: disk full" in json.loads((out / "summary.json").read_text())["notes"]
    assert any("report not written" in line for line in logged)
    assert not (out / REPORT_NAME).exists() and not (out / CSV_NAME).exists()


def test_strings_from_the_data_are_escaped(tmp_path, demo_out):
    (stem, document), *_ = field_documents(demo_out)
    nasty = "<b>bold</b> & <script>alert(1)</script>"
    cell = next(c for c in document["cells"] if "type" in c)
    cell = {**cell, "type": "Neu<tro>phil & co", "verdict": "atypical, <review>"}
    document = {**document, "cells": [cell], "notes": [nasty], "wbc_types": {"Neu<tro>phil & co": 1}}
    summary = json.loads((demo_out / "summary.json").read_text())
    summary["notes"] = [nasty]
    summary["interpretation"]["flags"] = [{
        "rule": "<i>flag</i>", "role": "flag", "measure": "m&m", "test": "> 6%", "status": "met", "count": 1,
        "total": 2, "percent": 50.0, "low": 9.5, "high": 90.5, "expected_percent": 50.0,
        "cells": [{"field": "x<y>", "cell": 1}, {"field": stem, "cell": cell["id"]}],
    }]
    text = report_html(tmp_path, summary, [("a<b>&c", document), (stem, document)], title="<sample> & co")
    assert "<script>" not in text and "<b>" not in text and "<i>" not in text and "<tro>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "Neu&lt;tro&gt;phil &amp; co" in text
    page = Page(text)
    assert page.stray == []
    words = "".join(page.text)
    assert nasty in words and "Neu<tro>phil & co" in words and "<sample> & co" in words and "x<y> #1" in words
    assert [t["data-field"] for t in page.tiles] == ["a<b>&c", stem]


def test_the_counted_blast_percent_is_the_headline_and_the_adjusted_one_a_line_beside_it(tmp_path, demo_out):
    summary = json.loads((demo_out / "summary.json").read_text())
    summary["interpretation"]["blasts"] = {
        "assessed": True, "count": 44, "total": 200, "percent": 22.0, "low": 16.8, "high": 28.2,
        "expected_percent": 21.0, "cells": [],
        "adjusted": {"percent": 20.0, "low": 11.9, "high": 30.3, "true_positive_rate": 0.9, "blasts_called": 45,
                     "blasts": 50, "false_positive_rate": 0.05, "normals_called": 25, "normals": 500,
                     "rates_from": "the blast scorer's fit"}}
    words = "".join(Page(report_html(tmp_path, summary, field_documents(demo_out)[:1], title="s")).text)
    assert "Blasts: 22.0% (95% interval 16.8\u201328.2%; 44/200 white cells;" in words
    assert ("Adjusted for the blast call's error rates, not used by the rules: 20.0% (95% interval 11.9\u201330.3%; "
            "sensitivity 0.90 from 45/50 blast examples, false-positive rate 0.050 from 25/500") in words
    summary["interpretation"]["blasts"]["adjusted"] = None
    words = "".join(Page(report_html(tmp_path, summary, field_documents(demo_out)[:1], title="s")).text)
    assert "Blasts: 22.0%" in words and "Adjusted for" not in words


def test_the_report_is_written_from_files_alone(tmp_path, demo_out):
    """A report made again from an output folder (no overlays there): fields drawn with their boxes."""
    summary = json.loads((demo_out / "summary.json").read_text())
    documents = field_documents(demo_out)[:1]
    path = write_report(tmp_path, summary, documents, title="again")
    page = Page(path.read_text(encoding="utf-8"))
    assert path == tmp_path / REPORT_NAME and len(page.tiles) == 48
    (overlay,) = [a["src"] for t, a in page.elements if t == "img" and a.get("alt", "").startswith("field ")]
    assert decode_data_uri(overlay).size == (640, 480)  # the field itself, boxes drawn: no attribute panel


def test_a_field_whose_image_is_gone_keeps_its_tiles_without_crops_and_says_why(tmp_path, demo_out):
    summary = json.loads((demo_out / "summary.json").read_text())
    (stem, document), *_ = field_documents(demo_out)
    document = {**document, "image": str(tmp_path / "moved-away.jpg")}
    page = Page(report_html(tmp_path, summary, [(stem, document)]))
    assert len(page.tiles) == 48 and all(t["images"] == [] for t in page.tiles)
    assert any("image not shown" in text and "moved-away.jpg" in text for text in page.text)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (apt install "
                    "chromium): the report is not opened in a browser here")
def test_chromium_opens_the_report_offline_with_every_image_shown(demo_out, tmp_path):
    result = subprocess.run(
        ["chromium", "--headless", "--disable-gpu", "--no-sandbox", "--dump-dom",
         (demo_out / REPORT_NAME).resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    page = Page(result.stdout)
    assert len(page.tiles) == 6 * 48 and all(len(t["images"]) == 1 for t in page.tiles)


@pytest.mark.slow
def test_the_demo_with_the_shipped_weights_ends_with_its_report_under_5_mb(tmp_path, capsys):
    """What `make demo` prints last and writes: the demo sample's report with the shipped weights (about 0.4 MB)."""
    from leukolens.cli.demo import run_analyze_demo
    from leukolens.predict.weights import default_detector

    if not default_detector().is_file():
        pytest.skip(f"no shipped detector at {default_detector()}")
    out = run_analyze_demo(tmp_path / "analyze")
    report = out / REPORT_NAME
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith(f"report: {report.resolve()}")
    assert report.stat().st_size < FIVE_MB
    page = Page(report.read_text(encoding="utf-8"))
    assert len(page.tiles) == len(white_cells(out)) > 0
    assert all(len(t["images"]) == 1 and decode_data_uri(t["images"][0]) for t in page.tiles)
