"""`leukolens analyze` end to end on bundled BCCD fields, with tiny untrained models: what a user gets on disk."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from leukolens.analyze import analyze
from leukolens.cli import main
from leukolens.demo import sample_path
from leukolens.io.common import LeukolensError
from leukolens.models.checkpoint import save_checkpoint
from leukolens.models.detector import load_detector, save_detector
from leukolens.predict.output import SCHEMA_VERSION, validate
from leukolens.predict.scale import (
    FALLBACK,
    LETTERBOX,
    OVERRIDE,
    RBC_MICRONS,
    RED_CELLS,
    box_iou,
    learnt_rbc_diameter,
)
from leukolens.predict.weights import default_detector
from leukolens.records import BLOOD_CELLS, PBC_CLASSES, WBCATT_SCHEMA
from tests.conftest import every_cell_a_wbc_detector, tiny_cell_checkpoint

FIELDS = ("BloodImage_00007.jpg", "BloodImage_00015.jpg")


pytestmark = pytest.mark.usefixtures("private_onnx_cache")  # ONNX exports of the tiny models: this module's own


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    """Untrained, 64 px input, heads set so that every output cell is a WBC peak (48 per field) with a real box:
    the cell model always runs."""
    checkpoint = every_cell_a_wbc_detector()
    return save_detector(checkpoint, tmp_path_factory.mktemp("detector") / "tiny-detector.pt")


@pytest.fixture(scope="module")
def tiny_cells(tmp_path_factory):
    return save_checkpoint(tiny_cell_checkpoint(), tmp_path_factory.mktemp("cells") / "tiny-cells.pt")


def _sample_folder(tmp_path):
    folder = tmp_path / "sample"
    folder.mkdir()
    for name in FIELDS:
        shutil.copy(sample_path("bccd") / "BCCD" / "JPEGImages" / name, folder / name)
    return folder


def test_analyze_writes_json_and_overlay_per_field_and_a_summary(tmp_path, tiny_detector, tiny_cells):
    out = tmp_path / "out"
    summary = analyze([_sample_folder(tmp_path)], out=out, detector=tiny_detector, cells=tiny_cells, log=print)
    for name in FIELDS:
        stem = name.rsplit(".", 1)[0]
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["width"] == 640 and record["height"] == 480
        assert record["counts"] == {"WBC": 48}
        cell = record["cells"][0]
        assert cell["detector_class"] == "WBC" and 0.5 <= cell["detector_score"] <= 1
        x1, y1, x2, y2 = cell["box_xyxy"]
        assert 0 <= x1 <= x2 <= 640 and 0 <= y1 <= y2 <= 480
        assert cell["type"] in PBC_CLASSES.names
        assert sum(cell["type_probabilities"].values()) == pytest.approx(1, abs=1e-3)
        assert set(cell["attributes"]) == set(WBCATT_SCHEMA.names)
        assert {"value", "probability", "probabilities"} <= set(cell["attributes"]["cell_size"])
        assert cell["verdict"] in ("typical", "atypical, review") and cell["atypicality"] is not None
        assert Image.open(out / f"{stem}.png").size[1] == 480
    written = json.loads((out / "summary.json").read_text())
    assert written == summary and summary["schema_version"] == SCHEMA_VERSION
    assert summary["fields_read"] == 2 and summary["fields_skipped"] == []
    assert summary["wbc_typed"] == 96
    assert sum(v["count"] for v in summary["differential"].values()) == 96
    assert sum(v["percent"] for v in summary["differential"].values()) == pytest.approx(100, abs=0.5)


def test_a_corrupt_and_a_grayscale_field_do_not_stop_the_sample(tmp_path, tiny_detector, tiny_cells, capsys):
    folder = _sample_folder(tmp_path)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.open(folder / FIELDS[0]).convert("L").save(folder / "gray.png")
    code = main(["analyze", str(folder), "--out", str(tmp_path / "out"), "--detector", str(tiny_detector),
                 "--cells", str(tiny_cells)])
    captured = capsys.readouterr()
    assert code == 1  # some fields were skipped
    assert "broken.jpg: cannot read image" in captured.err
    assert "3 fields read, 1 skipped" in captured.out and "WBC differential (144 cells typed)" in captured.out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["image"].endswith("broken.jpg") for s in summary["fields_skipped"]] == [True]
    assert json.loads((tmp_path / "out" / "gray.json").read_text())["notes"] == ["converted from L to RGB"]


def test_a_huge_image_is_refused_with_a_reason(tmp_path, tiny_detector, tiny_cells):
    folder = _sample_folder(tmp_path)
    Image.new("RGB", (9000, 10), (255, 255, 255)).save(folder / "huge.png")
    summary = analyze([folder], out=tmp_path / "out", detector=tiny_detector, cells=tiny_cells, log=print)
    (skipped,) = summary["fields_skipped"]
    assert "9000x10 px, larger than a microscope field" in skipped["reason"]
    assert summary["fields_read"] == 2


def test_an_empty_folder_is_a_clear_error(tmp_path, tiny_detector, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LeukolensError, match="no images found in"):
        analyze([tmp_path / "empty"], out=tmp_path / "out", detector=tiny_detector)
    assert main(["analyze", str(tmp_path / "empty"), "--detector", str(tiny_detector)]) == 2
    assert capsys.readouterr().err.startswith("leukolens: error: no images found in")


def test_without_a_cell_model_the_cells_are_still_found(tmp_path, tiny_detector, monkeypatch):
    from leukolens.predict import weights

    monkeypatch.setitem(weights.SHIPPED, "cells", "absent.pt")
    messages = []
    summary = analyze([_sample_folder(tmp_path)], out=tmp_path / "out", detector=tiny_detector, log=messages.append)
    assert "no shipped cell model" in messages[0]
    assert summary["cells_found"] == {"WBC": 96} and summary["wbc_typed"] == 0
    record = json.loads((tmp_path / "out" / "BloodImage_00007.json").read_text())
    assert "type" not in record["cells"][0] and "no shipped cell model" in record["notes"][0]


def test_detect_and_eval_detector_commands(tmp_path, tiny_detector, capsys):
    folder = sample_path("bccd")
    assert main(["detect", str(folder / "BCCD" / "JPEGImages" / FIELDS[0]), "--checkpoint", str(tiny_detector),
                 "--json", str(tmp_path / "d.json")]) == 0
    assert "WBC 48, RBC 0, Platelets 0" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "d.json").read_text())["fields"][0]["cells"]) == 48
    assert main(["eval", "detector", "--checkpoint", str(tiny_detector), "--data", str(folder), "--json",
                 str(tmp_path / "e.json"), "--results", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["fields"] == 6 and set(report["per_class"]) == set(BLOOD_CELLS.names)
    assert 0 <= report["mAP50"] <= 1 and report["counting"]["WBC"]["mae"] > 0
    results = json.loads((tmp_path / "r.json").read_text())
    assert {"image_id", "category_id", "bbox", "score", "file_name"} <= set(results[0])


def test_every_file_analyze_and_detect_write_follows_the_documented_schema(tmp_path, tiny_detector, tiny_cells):
    """The output schema (docs/output-schema.md, ``leukolens.predict.output.SCHEMAS``) checked on real files: every
    key documented, none missing, every value of its documented type."""
    out, folder = tmp_path / "out", _sample_folder(tmp_path)
    analyze([folder], out=out, detector=tiny_detector, cells=tiny_cells, log=print)
    for name in FIELDS:
        record = json.loads((out / name.replace(".jpg", ".json")).read_text())
        assert validate(record, "field") == []
        assert record["schema_version"] == SCHEMA_VERSION
    assert validate(json.loads((out / "summary.json").read_text()), "summary") == []
    assert main(["detect", str(folder), "--checkpoint", str(tiny_detector), "--json",
                 str(tmp_path / "d.json")]) == 0
    assert validate(json.loads((tmp_path / "d.json").read_text()), "detect") == []
    # The checker catches what the schema forbids: a renamed key, a missing key, a wrong type.
    record = json.loads((out / "BloodImage_00007.json").read_text())
    record["cells"][0]["label"] = record["cells"][0].pop("type")
    del record["notes"]
    record["width"] = "640"
    problems = validate(record, "field")
    assert len(problems) == 3, problems


def test_cells_are_cropped_from_the_detector_float_boxes(tmp_path, tiny_detector, tiny_cells):
    """The typed path end to end: detections carry float xyxy pixel boxes and the canvas size; the cell model reads
    the crop of the float box (not of the 0.1 px rounded box written to JSON)."""
    from leukolens.predict import CellReader, Detector
    from leukolens.predict.fields import load_field

    image, _ = load_field(_sample_folder(tmp_path) / FIELDS[0])
    found = Detector.from_checkpoint(tiny_detector, engine="torch").detect([image])[0]
    assert found.canvas_size == (640, 480) and found.format == "xyxy" and not found.normalized
    assert found.boxes.dtype == np.float32 and len(found) == 48
    reader = CellReader.from_checkpoint(tiny_cells, engine="torch")
    (cells,) = reader.read_cells([(image, found)], read=("WBC",))
    first = cells[0]
    assert first.box.values == tuple(float(v) for v in found.boxes[0]) and first.number == 1
    assert first.label == first.prediction.label and first.detector_class == "WBC"
    direct = reader.predict_crops(np.stack([reader.crop(image, tuple(found.boxes[0]))]))[0]
    # One crop alone and in a batch of 48 take different kernels: equal up to float rounding.
    assert first.prediction.probabilities == pytest.approx(direct.probabilities, abs=1e-5)


# ------------------------------------------------------------------------------------------------------ scale
def _field_scale(out, stem):
    return json.loads((out / f"{stem}.json").read_text())["scale"]


def test_a_field_without_red_cells_records_the_letterbox_fallback(tmp_path, tiny_detector, tiny_cells):
    # the tiny detector finds white cells only: no red cell to tell the scale, so the field is letterboxed
    out = tmp_path / "out"
    analyze([_sample_folder(tmp_path)], out=out, detector=tiny_detector, cells=tiny_cells, overlays=False)
    scale = _field_scale(out, "BloodImage_00007")
    assert scale == {"microns_per_pixel": None, "factor": 0.1, "method": FALLBACK, "red_cells": 0, "fields": 2,
                     "tiles": 1}  # 64 px input / 640 px field; the sample's two fields were tried
    assert validate(json.loads((out / "BloodImage_00007.json").read_text()), "field") == []


def test_microns_per_pixel_overrides_the_estimate_and_a_huge_field_is_tiled(
    tmp_path, tiny_detector, tiny_cells, monkeypatch
):
    from leukolens.predict.fields import Detector

    folder = tmp_path / "sample"
    folder.mkdir()
    Image.open(sample_path("bccd") / "BCCD" / "JPEGImages" / FIELDS[0]).resize((2592, 1944)).save(folder / "big.png")
    inputs = []
    run = Detector.run
    monkeypatch.setattr(Detector, "run", lambda self, canvases, **kw: inputs.append(canvases.shape) or run(
        self, canvases, **kw))
    out = tmp_path / "out"
    analyze([folder], out=out, detector=tiny_detector, cells=tiny_cells, overlays=False, microns_per_pixel=0.04)
    scale = _field_scale(out, "big")
    # the tiny detector learnt a 80.6 * 64 / 512 = 10.075 px red cell; 7.5 µm at 0.04 µm/px is 187.5 native px:
    # factor 10.075 / 187.5 = 0.053733, the field 139 x 104 working px; overlap min(ceil(2.4 * 10.075), 32) = 25:
    # ceil((139 - 25) / (64 - 25)) = 3 tiles across, ceil((104 - 25) / 39) = 3 down
    assert scale["method"] == OVERRIDE and scale["microns_per_pixel"] == 0.04 and scale["red_cells"] == 0
    assert scale["factor"] == pytest.approx(10.075 / 187.5, abs=1e-5) and scale["tiles"] == 9
    # the 9 tiles of one shape in batches of 8 (analyze's batch size), none larger than the input
    assert sorted(inputs) == [(1, 64, 64, 3), (8, 64, 64, 3)]
    assert json.loads((out / "big.json").read_text())["width"] == 2592


def test_an_unknown_scale_mode_or_a_bad_scale_is_refused(tmp_path, tiny_detector):
    with pytest.raises(LeukolensError, match="unknown scale 'zoom'"):
        analyze([tmp_path], out=tmp_path / "out", detector=tiny_detector, scale="zoom")
    with pytest.raises(LeukolensError, match="microns per pixel must be positive"):
        analyze([tmp_path], out=tmp_path / "out", detector=tiny_detector, microns_per_pixel=0)


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["auto", "letterbox"])
def test_the_shipped_detector_finds_the_white_cell_of_a_field_seen_at_twice_the_magnification(
    tmp_path, tiny_cells, scale
):
    folder = tmp_path / "sample"
    folder.mkdir()
    # BCCD's BloodImage_00007 upsampled 2x (1280 x 960): its one white cell is annotated at (193, 92, 387, 285)
    Image.open(sample_path("bccd") / "BCCD" / "JPEGImages" / FIELDS[0]).resize((1280, 960), Image.BILINEAR).save(
        folder / "zoomed.png"
    )
    out = tmp_path / "out"
    analyze([folder], out=out, cells=tiny_cells, overlays=False, scale=scale)
    record = json.loads((out / "zoomed.json").read_text())
    assert validate(record, "field") == []
    wbc = [c["box_xyxy"] for c in record["cells"] if c["detector_class"] == "WBC"]
    truth = np.array([[386, 184, 774, 570]], np.float32)
    if scale == "auto":
        # BCCD letterboxed (640 -> 512) is the learnt scale: the field upsampled 2x wants about 0.4
        assert record["scale"]["method"] == RED_CELLS and record["scale"]["red_cells"] >= 3
        assert record["scale"]["factor"] == pytest.approx(0.4, rel=0.15)
        learnt = learnt_rbc_diameter(input_size=512, metrics=load_detector(default_detector()).metrics)
        assert record["scale"]["microns_per_pixel"] == pytest.approx(
            RBC_MICRONS * record["scale"]["factor"] / learnt, rel=0.01  # both rounded in the JSON
        )
        assert len(wbc) == 1 and box_iou(truth, np.array(wbc, np.float32))[0, 0] >= 0.7
    else:
        assert record["scale"]["method"] == LETTERBOX and record["scale"]["factor"] == pytest.approx(0.4)


def test_the_cell_model_adapts_to_the_sample_once_it_has_enough_white_cells(tmp_path, tiny_detector, tiny_cells,
                                                                           monkeypatch):
    import leukolens.analyze as pipeline

    folder = _sample_folder(tmp_path)
    adapted = analyze([folder], out=tmp_path / "a", detector=tiny_detector, cells=tiny_cells, batch_size=1, adapt=True)
    plain = analyze([folder], out=tmp_path / "p", detector=tiny_detector, cells=tiny_cells)
    # 48 white cells a field: the first field is not enough (64), so both fields wait and adapt together.
    assert adapted["notes"] == ["cell model adapted to this sample's first 64 white cells"] and plain["notes"] == []
    first = json.loads((tmp_path / "a" / f"{FIELDS[0].rsplit('.', 1)[0]}.json").read_text())["cells"][0]
    unadapted = json.loads((tmp_path / "p" / f"{FIELDS[0].rsplit('.', 1)[0]}.json").read_text())["cells"][0]
    assert first["box_xyxy"] == unadapted["box_xyxy"]
    assert first["type_probabilities"] != unadapted["type_probabilities"]  # new normalisation statistics
    monkeypatch.setattr(pipeline, "ADAPT_MIN_CELLS", 200)
    few = analyze([folder], out=tmp_path / "f", detector=tiny_detector, cells=tiny_cells, adapt=True)
    assert few["notes"] == ["96 white cells: too few to adapt the cell model to this sample"]


# ------------------------------------------------------------------------------------------------------ interpretation
def _detector_finding_only(tmp_path, heatmap_bias):
    """The rigged detector with its class peaks set by ``heatmap_bias`` (WBC, RBC, Platelets): all low finds
    nothing, RBC high finds red cells only."""
    checkpoint = every_cell_a_wbc_detector()
    bias = [k for k in checkpoint.state_dict if k.startswith("heatmap.") and k.endswith(".bias")][-1]
    checkpoint.state_dict[bias] = torch.tensor(heatmap_bias, dtype=checkpoint.state_dict[bias].dtype)
    return save_detector(checkpoint, tmp_path / "rigged-detector.pt")


@pytest.mark.parametrize(("case", "heatmap_bias", "fields", "white"), [
    ("an empty sample", [-10.0, -10.0, -10.0], FIELDS, 0),
    ("no white cell", [-10.0, 3.0, -10.0], FIELDS, 0),
    ("one field", None, FIELDS[:1], 48),
])
def test_too_small_a_sample_says_not_enough_cells_and_still_writes_each_field(
    tmp_path, tiny_detector, tiny_cells, capsys, case, heatmap_bias, fields, white
):
    folder = tmp_path / "sample"
    folder.mkdir()
    for name in fields:
        shutil.copy(sample_path("bccd") / "BCCD" / "JPEGImages" / name, folder / name)
    detector = tiny_detector if heatmap_bias is None else _detector_finding_only(tmp_path, heatmap_bias)
    out = tmp_path / "out"
    assert main(["analyze", str(folder), "--out", str(out), "--detector", str(detector), "--cells",
                 str(tiny_cells)]) == 0, case
    printed = capsys.readouterr().out
    assert "suggestion: not enough cells (supported)" in printed and "not a diagnosis" in printed
    for name in fields:
        record = json.loads((out / name.replace(".jpg", ".json")).read_text())
        assert validate(record, "field") == [] and (out / name.replace(".jpg", ".png")).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert validate(summary, "summary") == []
    reading = summary["interpretation"]
    assert reading["white_cells_counted"] == white and reading["suggestion"]["name"] == "not enough cells"
    assert reading["suggestion"]["notes"] == [
        f"{white} white cells counted; at least 100 are needed to suggest anything"]
    assert reading["also_possible"] == [] and reading["suggestion"]["evidence"][0]["count"] == white


def test_a_sample_of_unreadable_images_still_writes_a_summary_with_not_enough_cells(tmp_path, tiny_detector, capsys):
    folder = tmp_path / "sample"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert main(["analyze", str(folder), "--out", str(tmp_path / "out"), "--detector", str(tiny_detector)]) == 2
    assert "none of the 1 images could be read" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert validate(summary, "summary") == [] and summary["interpretation"]["suggestion"]["name"] == "not enough cells"


def test_a_sample_with_enough_white_cells_is_interpreted_from_the_cells_written(tmp_path, tiny_detector, tiny_cells):
    folder = _sample_folder(tmp_path)
    shutil.copy(sample_path("bccd") / "BCCD" / "JPEGImages" / "BloodImage_00021.jpg", folder)
    out = tmp_path / "out"
    summary = analyze([folder], out=out, detector=tiny_detector, cells=tiny_cells, overlays=False, log=print)
    reading = summary["interpretation"]
    assert validate(summary, "summary") == [] and reading["white_cells_counted"] == 144
    assert reading["suggestion"]["name"] != "not enough cells" and reading["suggestion"]["evidence"]
    # the differential's counts are the types written per field (the tiny model has no blast score: no Blast row)
    written = {}
    for path in out.glob("BloodImage_*.json"):
        for cell in json.loads(path.read_text())["cells"]:
            written[cell["type"]] = written.get(cell["type"], 0) + 1
    assert {name: row["count"] for name, row in reading["differential"].items() if row["count"]} == written
    assert reading["blasts"]["assessed"] is False and "Blast" not in reading["differential"]
    assert {name: row["count"] for name, row in summary["differential"].items()} == written  # unchanged beside it


def test_the_blast_percent_is_counted_and_adjusted_beside_it_with_the_checkpoints_rates(tmp_path, tiny_detector):
    from leukolens.analyze import FieldModels, ModelSpec
    from leukolens.models.blast import BLAST_MORPHOLOGY, BlastCallRates, BlastScorer
    from leukolens.sample.interpret import rogan_gladen

    rng = np.random.default_rng(0)  # a scorer on the prototype margin alone, between random directions: some called
    rates = BlastCallRates(9, 10, 10, 100)
    scorer = BlastScorer(
        morphology=BLAST_MORPHOLOGY, examples=rng.normal(size=(30, 1280)).astype(np.float32),
        example_sources=("blast.png",) * 30, normals=rng.normal(size=(30, 1280)).astype(np.float32),
        scores=("prototype",), mean=np.zeros(1), spread=np.ones(1), weights=np.ones(1), bias=0.0, threshold=0.5,
        k_examples=3, k_normals=3, call_rates=rates)
    checkpoint = tiny_cell_checkpoint()
    checkpoint.blast = scorer.as_dict()
    cells = save_checkpoint(checkpoint, tmp_path / "cells-with-blast.pt")
    folder = _sample_folder(tmp_path)
    shutil.copy(sample_path("bccd") / "BCCD" / "JPEGImages" / "BloodImage_00021.jpg", folder)
    summary = analyze([folder], out=tmp_path / "out", detector=tiny_detector, cells=cells, overlays=False,
                      log=lambda _: None)
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    assert validate(summary, "summary") == []
    blasts = summary["interpretation"]["blasts"]
    assert 0 < blasts["count"] < blasts["total"] == 144
    assert blasts["percent"] == round(100 * blasts["count"] / 144, 1)  # what the rules test
    adjusted = blasts["adjusted"]
    assert adjusted["percent"] == round(100 * rogan_gladen(blasts["count"] / 144, 0.9, 0.1), 1)
    assert adjusted["blasts_called"] == 9 and adjusted["false_positive_rate"] == 0.1
    # a cluster reads the cells on its workers: the rates come from the checkpoint file
    spec = ModelSpec(detector=tiny_detector, cells=cells)
    assert FieldModels(detector=None, reader=None).blast_call_rates(spec) == rates
    assert FieldModels(detector=None, reader=None).blast_call_rates(ModelSpec(tiny_detector, None)) is None


def test_with_the_scale_known_each_white_cell_carries_its_diameter_and_the_file_reads_back(tmp_path, tiny_detector):
    from leukolens.models.size import fit_size_prior
    from leukolens.predict.output import field_from_json, field_json

    checkpoint = tiny_cell_checkpoint()
    sizes = np.concatenate([np.full(20, 10.0), np.full(20, 17.0)]) * np.exp(np.linspace(-0.1, 0.1, 40))
    checkpoint.size = fit_size_prior(sizes, ["Lymphocyte"] * 20 + ["Monocyte"] * 20, PBC_CLASSES.names).as_dict()
    cells = save_checkpoint(checkpoint, tmp_path / "cells.pt")
    out = tmp_path / "out"
    analyze([_sample_folder(tmp_path)], out=out, detector=tiny_detector, cells=cells, overlays=False,
            microns_per_pixel=0.1)
    document = json.loads((out / "BloodImage_00007.json").read_text())
    assert validate(document, "field") == []
    read = [c for c in document["cells"] if "type" in c]
    assert read
    for cell in read:
        x1, y1, x2, y2 = cell["box_xyxy"]
        assert cell["diameter_um"] == pytest.approx(max(x2 - x1, y2 - y1) * 0.1, abs=0.01)
    assert field_json(field_from_json(document), document["detector"], document["analysis"]) == document
