"""Typed results to JSON, by hand-computed cases, and the schema checker on good and broken documents."""

import numpy as np
import pytest

from leukolens.predict import weights
from leukolens.predict.output import SCHEMA_VERSION, SCHEMAS, cell_json, detections_json, field_json, validate
from leukolens.predict.results import (
    AnalyzedField,
    AttributePrediction,
    CellPrediction,
    FieldDetections,
    PredictedCell,
)

CLASSES = ("WBC", "RBC", "Platelets")


def _detections():
    boxes = np.array([[10.04, 20.06, 50.55, 60.0], [1.0, 2.0, 3.0, 4.0]], np.float32)
    return FieldDetections(boxes, np.array([0.91234, 0.5]), np.array([0, 1]), canvas_size=(640, 480), classes=CLASSES)


def _prediction(atypicality=0.71239):
    cell_size = AttributePrediction("big", 0.8, {"small": 0.2, "big": 0.8})
    return CellPrediction("Monocyte", 0.612345, {"Monocyte": 0.612345, "Lymphocyte": 0.387655},
                          {"cell_size": cell_size}, atypicality=atypicality, atypical=atypicality > 0.5)


def test_detections_know_their_format_and_canvas():
    found = _detections()
    assert len(found) == 2 and found.class_name(1) == "RBC"
    box = found.box(0)
    assert box.format == "xyxy" and not box.normalized and box.values[0] == pytest.approx(10.04, abs=1e-5)
    with pytest.raises(ValueError, match="xyxy boxes in pixels"):
        FieldDetections(found.boxes, found.scores, found.labels, (640, 480), CLASSES, normalized=True)


def test_a_field_becomes_json_rounded_at_the_edge_only():
    found = _detections()
    cells = [PredictedCell.detected(found, 0, _prediction()), PredictedCell.detected(found, 1)]
    assert cells[0].label == "Monocyte" and cells[0].attributes == {"cell_size": "big"} and cells[1].label == "RBC"
    assert cells[0].box.values[2] == pytest.approx(50.55, abs=1e-5)  # the record keeps the float box
    field = AnalyzedField("f.jpg", 640, 480, cells=cells, notes=["converted from L to RGB"])
    record = field_json(field, {"checkpoint": "d.pt", "score_threshold": 0.45, "classes": list(CLASSES)})
    assert record["schema_version"] == SCHEMA_VERSION and record["counts"] == {"WBC": 1, "RBC": 1}
    assert record["wbc_types"] == {"Monocyte": 1}
    assert record["cells"][0] == {
        "id": 1, "box_xyxy": [10.0, 20.1, 50.5, 60.0], "detector_class": "WBC", "detector_score": 0.9123,
        "type": "Monocyte", "type_probability": 0.6123,
        "type_probabilities": {"Monocyte": 0.6123, "Lymphocyte": 0.3877},
        "attributes": {"cell_size": {"value": "big", "probability": 0.8, "probabilities": {"small": 0.2, "big": 0.8}}},
        "atypicality": 0.7124, "verdict": "atypical, review", "blast_probability": None, "blast_suspected": False,
    }
    assert cell_json(cells[1]) == {"id": 2, "box_xyxy": [1.0, 2.0, 3.0, 4.0], "detector_class": "RBC",
                                   "detector_score": 0.5}
    assert validate(record, "field") == []
    assert detections_json("f.jpg", found)["cells"][0] == {"box_xyxy": [10.0, 20.1, 50.5, 60.0], "class": "WBC",
                                                          "score": 0.9123}


def test_the_checker_reports_each_problem_with_its_place():
    document = {"schema_version": 2, "query": "a blast", "hits": [{"path": "a.png", "score": "high"}], "extra": 1}
    problems = validate(document, "search")
    assert any("schema_version" in p for p in problems)
    assert any("hits/0/score" in p for p in problems)
    assert any("extra" in p for p in problems) and len(problems) == 3
    assert set(SCHEMAS) == {"field", "summary", "detect", "cells", "describe", "search"}


def test_predict_package_face():
    from leukolens.predict import CellReader, Detector, ImageTextPredictor, Predictor, default_checkpoint

    assert Predictor is CellReader and Detector.__module__ == "leukolens.predict.fields"
    assert ImageTextPredictor.__module__ == "leukolens.predict.describe"
    assert default_checkpoint() == weights.shipped("cells")


def test_the_scale_a_field_was_read_at_is_recorded_and_older_files_stay_valid():
    from leukolens.predict.scale import OVERRIDE, RED_CELLS, FieldScale

    found = _detections()
    scale = FieldScale(0.0738946, 0.794120074, 16, RED_CELLS, fields=3)
    field = AnalyzedField("f.jpg", 640, 480, cells=[PredictedCell.detected(found, 0)], scale=scale, tiles=2)
    record = field_json(field, {"checkpoint": "d.pt", "score_threshold": 0.45, "classes": list(CLASSES)})
    assert record["scale"] == {"microns_per_pixel": 0.07389, "factor": 0.79412, "method": "red cells",
                               "red_cells": 16, "fields": 3, "tiles": 2}
    assert list(record)[:6] == ["schema_version", "image", "width", "height", "detector", "scale"]
    assert validate(record, "field") == []
    assert validate({**record, "scale": {**record["scale"], "method": "guessed"}}, "field") != []
    del record["scale"]  # a version-1 file written before the scale was recorded
    assert validate(record, "field") == []
    with_scale = FieldDetections(found.boxes, found.scores, found.labels, (640, 480), CLASSES,
                                 scale=FieldScale(0.1, 1.07467, 0, OVERRIDE, fields=0))
    assert detections_json("f.jpg", with_scale)["scale"]["method"] == "override"
    assert "scale" not in detections_json("f.jpg", found)


def test_every_key_of_the_field_and_its_scale_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "output-schema.md").read_text()
    field = SCHEMAS["field"]["properties"]
    for key in [*field, *field["scale"]["properties"], *field["analysis"]["properties"]]:
        assert f"| `{key}`" in doc or f", `{key}`" in doc, key
    for method in field["scale"]["properties"]["method"]["enum"]:
        assert f"`{method}`" in doc, method
