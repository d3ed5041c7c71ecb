"""Whole slides end to end with the shipped detector and cell model: small mosaic slides of the bundled BCCD fields
(every white cell known), white cells placed across the borders of the windows the analysis walks."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from benchmarks.slides import (
    BUNDLED_BCCD,
    MosaicRenderer,
    count_white_cells,
    mosaic,
    planned_slide,
    read_fields,
    white_boxes,
    window_lines,
    write_slide,
)
from leukolens.analyze import analyze
from leukolens.analyze_slide import analyze_slide
from leukolens.cli import main
from leukolens.predict.output import validate
from leukolens.predict.scale import RED_CELLS
from leukolens.predict.slide import SlideConfig
from leukolens.predict.weights import default_detector

pytest.importorskip("tifffile", reason="the slides extra (tifffile) is not installed")
if not default_detector().is_file():
    pytest.skip("no shipped detector (make weights-detector)", allow_module_level=True)

SIDE = 1600
MPP = 0.0873  # what the scale estimate gives for a mosaic of the bundled fields (see benchmarks/slides.py)
CONFIG = SlideConfig(window=1000)  # windows of at most 1000 px: the slide is walked in several


@pytest.fixture(scope="module")
def fields():
    return read_fields(BUNDLED_BCCD)


@pytest.fixture(scope="module")
def walked(tmp_path_factory, fields):
    """A 1600 x 1600 pyramidal BigTIFF with white cells across every window border, analysed."""
    folder = tmp_path_factory.mktemp("slide")
    path = folder / "mosaic.tif"
    placed, lines, mpp = planned_slide(path, fields, SIDE, SIDE, seed=1, levels=2, config=CONFIG,
                                       microns_per_pixel=MPP)
    messages = []
    summary = analyze_slide(path, out=folder / "out", config=CONFIG, log=messages.append)
    document = json.loads((folder / "out" / "mosaic.json").read_text())
    return placed, lines, summary, document, folder / "out", messages


def test_every_white_cell_is_found_once_across_window_borders(walked):
    placed, lines, _, document, _, _ = walked
    tally = count_white_cells(placed, white_boxes(document), size=(SIDE, SIDE), lines=lines)
    assert tally["border_known"] >= 5  # the borders were crossed on purpose
    assert tally["found"] == tally["known"] and tally["duplicated"] == 0 and tally["extra"] == 0, tally
    info = document["slide"]
    assert info["windows"] >= 4 and window_lines(SIDE, SIDE, window=info["window"], overlap=info["overlap"]) == lines


def test_a_slide_writes_a_sample_like_any_other(walked):
    _, _, summary, document, out, messages = walked
    assert validate(document, "field") == [] and validate(summary, "summary") == []
    assert (document["width"], document["height"]) == (SIDE, SIDE)
    assert document["slide"]["levels"] == [[SIDE, SIDE], [SIDE // 2, SIDE // 2]]
    assert document["scale"]["method"] == "override" and "scale from the file: 0.0873" in messages[0]
    white = [c for c in document["cells"] if c["detector_class"] == "WBC"]
    assert all("type" in c and "attributes" in c for c in white)  # every white cell read by the cell model
    assert summary["fields_read"] == 1 and summary["wbc_typed"] == len(white)
    assert sum(row["count"] for row in summary["differential"].values()) == len(white)
    thumbnail = Image.open(out / "mosaic.png")
    assert thumbnail.width == round(SIDE * document["slide"]["thumbnail_scale"])
    report = (out / "report.html").read_text()
    assert "whole slide read in" in report and report.count('class="tile') == len(white)  # a crop per white cell
    assert len((out / "cells.csv").read_text().splitlines()) == len(document["cells"]) + 1


def _corrupt_one_tile(path, index):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[index], page.databytecounts[index]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xffbroken!" * (count // 8))


def test_analyze_routes_a_slide_with_a_damaged_tile_and_estimates_its_scale(tmp_path, fields, capsys):
    path = write_slide(tmp_path / "scan.tif", MosaicRenderer(mosaic(fields, 1300, 1300, seed=5), 1300, 1300),
                       levels=2)  # pyramidal: a slide though within a field's limits
    _corrupt_one_tile(path, 4)
    code = main(["analyze", str(path), "--out", str(tmp_path / "out"), "--resume", "--scale", "letterbox"])
    captured = capsys.readouterr()
    assert code == 0 and "tile at (512, 512), 512x512 px, unreadable" in captured.err
    for option in ("--resume", "--scale letterbox"):  # options a slide does not use are said, not dropped
        assert f"warning: {option} is not used for the whole slide scan.tif" in captured.err
    document = json.loads((tmp_path / "out" / "scan.json").read_text())
    assert document["scale"]["method"] == RED_CELLS and 0.06 < document["scale"]["microns_per_pixel"] < 0.11
    assert [(d["x"], d["y"]) for d in document["slide"]["damaged_tiles"]] == [(512, 512)]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert any("unreadable" in note for note in summary["notes"]) and summary["wbc_typed"] > 0


def test_a_slide_without_white_cells_says_so(tmp_path, fields):
    # patches of the bundled fields away from their white cells, laid edge to edge
    patches = []
    for f in fields:
        pixels = np.asarray(Image.open(f.image).convert("RGB"))
        for x, y in ((0, 0), (400, 0), (0, 280), (400, 280)):
            if all(x + 240 + 20 < b[0] or b[2] + 20 < x or y + 200 + 20 < b[1] or b[3] + 20 < y
                   for b in f.white_cells):
                patches.append(pixels[y : y + 200, x : x + 240])
    assert len(patches) >= 6
    rows = [np.concatenate([patches[(r * 5 + c) % len(patches)] for c in range(5)], axis=1) for r in range(6)]
    path = tmp_path / "no-wbc.tif"
    pixels = np.concatenate(rows)
    import tifffile

    with tifffile.TiffWriter(path) as tif:  # pyramidal: a slide, though within a field's limits
        tif.write(pixels, tile=(256, 256), subifds=1)
        tif.write(pixels[::2, ::2], tile=(256, 256), subfiletype=1)
    summary = analyze([path], out=tmp_path / "out", log=lambda _: None)
    assert summary["wbc_typed"] == 0 and summary["differential"] == {}
    assert any("no white cells found in the slide" in note for note in summary["notes"])
    assert (tmp_path / "out" / "report.html").is_file()


def test_slides_given_with_fields_or_other_slides_are_skipped_with_their_reason(tmp_path, fields):
    import tifffile

    from leukolens.errors import LeukolensError

    pixels = np.asarray(Image.open(fields[0].image).convert("RGB"))
    sample = tmp_path / "sample"
    sample.mkdir()
    for name in ("a.svs", "b.tif"):  # pyramidal: slides, though small
        with tifffile.TiffWriter(sample / name) as tif:
            tif.write(pixels, tile=(256, 256), subifds=1)
            tif.write(pixels[::2, ::2], tile=(256, 256), subfiletype=1)
    shutil.copy(fields[0].image, sample / "field.jpg")
    summary = analyze([sample], out=tmp_path / "mixed", log=lambda _: None)  # the folder search finds the .svs
    assert summary["fields_read"] == 1 and (tmp_path / "mixed" / "field.json").is_file()
    assert [s["image"] for s in summary["fields_skipped"]] == [str(sample / "a.svs"), str(sample / "b.tif")]
    assert all("whole slide given with 1 field" in s["reason"] and "give it alone or use --samples" in s["reason"]
               for s in summary["fields_skipped"])
    with pytest.raises(LeukolensError, match="none of the 2 images could be read.*one of 2 whole slides"):
        analyze([sample / "a.svs", sample / "b.tif"], out=tmp_path / "slides", log=lambda _: None)
    skipped = json.loads((tmp_path / "slides" / "summary.json").read_text())["fields_skipped"]
    assert len(skipped) == 2 and all("a whole slide is one sample" in s["reason"] for s in skipped)
