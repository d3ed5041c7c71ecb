"""COCO AP on cases simple enough to compute by hand, and the counting error."""

import numpy as np
import pytest

from leukolens.eval.detection import (
    coco_ground_truth,
    coco_metrics,
    coco_results,
    counting_error,
    evaluate_detections,
)
from leukolens.models.detector import Detections
from leukolens.records import BLOOD_CELLS, Box, Cell, Field

pytest.importorskip("faster_coco_eval")


def _field(*cells):
    return Field("a.jpg", 200, 100, [Cell(Box(box), label) for box, label in cells])


def _found(*items):
    boxes = np.array([b for b, _, _ in items], np.float32).reshape(-1, 4)
    return Detections(boxes, np.array([s for _, s, _ in items], np.float32), np.array([k for _, _, k in items]))


def _metrics(fields, detections):
    return coco_metrics(coco_ground_truth(fields, BLOOD_CELLS), coco_results(detections), BLOOD_CELLS)


def test_perfect_predictions_score_one():
    field = _field(((10, 10, 50, 50), "WBC"), ((100, 20, 130, 50), "RBC"), ((150, 60, 160, 70), "Platelets"))
    found = _found(((10, 10, 50, 50), 0.9, 0), ((100, 20, 130, 50), 0.8, 1), ((150, 60, 160, 70), 0.7, 2))
    m = _metrics([field], [found])
    assert m["mAP"] == pytest.approx(1.0) and m["mAP50"] == pytest.approx(1.0)
    assert all(v["AP50"] == pytest.approx(1.0) for v in m["per_class"].values())


def test_a_missed_box_halves_recall():
    # Two WBCs, one found (at precision 1): precision is 1 up to recall 0.5 and 0 beyond. COCO samples 101 recall
    # points 0, 0.01, ..., 1: 51 of them are <= 0.5, so AP = 51 / 101.
    field = _field(((10, 10, 50, 50), "WBC"), ((100, 20, 140, 60), "WBC"))
    m = _metrics([field], [_found(((10, 10, 50, 50), 0.9, 0))])
    assert m["per_class"]["WBC"]["AP50"] == pytest.approx(51 / 101)
    assert m["per_class"]["RBC"]["AP50"] is None  # no RBC in the ground truth: left out of the mean
    assert m["mAP50"] == pytest.approx(51 / 101)


def test_a_false_positive_ranked_first_halves_precision():
    # One WBC; a wrong box scores higher than the right one: at recall 1 precision is 1/2 at every recall point.
    field = _field(((10, 10, 50, 50), "WBC"))
    m = _metrics([field], [_found(((120, 10, 160, 50), 0.9, 0), ((10, 10, 50, 50), 0.5, 0))])
    assert m["per_class"]["WBC"]["AP50"] == pytest.approx(0.5)
    # Ranked after the right one, the same wrong box costs nothing.
    m = _metrics([field], [_found(((120, 10, 160, 50), 0.4, 0), ((10, 10, 50, 50), 0.5, 0))])
    assert m["per_class"]["WBC"]["AP50"] == pytest.approx(1.0)


def test_counting_error_per_field():
    fields = [_field(((10, 10, 50, 50), "WBC")), _field(((10, 10, 50, 50), "WBC"), ((60, 10, 90, 50), "WBC"))]
    found = [_found(((10, 10, 50, 50), 0.9, 0), ((60, 10, 90, 50), 0.8, 0)), _found(((10, 10, 50, 50), 0.2, 0))]
    errors = counting_error(fields, found, BLOOD_CELLS, threshold=0.5)
    # Field 1: 2 counted for 1 (+1); field 2: 0 counted (0.2 < 0.5) for 2 (-2). MAE 1.5, bias -0.5.
    assert errors["WBC"] == {"mae": 1.5, "bias": -0.5, "mean_true": 1.5}
    assert errors["RBC"]["mae"] == 0


def test_no_predictions_at_all_score_zero():
    m = _metrics([_field(((10, 10, 50, 50), "WBC"))], [_found()])
    assert m["per_class"]["WBC"]["AP50"] == 0 and m["mAP"] == 0


def test_a_sparsely_annotated_field_is_judged_inside_its_regions():
    field = _field(((10, 10, 50, 50), "WBC"))
    field.regions = [Box((0, 0, 100, 100))]
    found = _found(((10, 10, 50, 50), 0.5, 0), ((120, 10, 160, 50), 0.9, 0))  # the second: outside, unlabelled
    m = evaluate_detections([field], [found], BLOOD_CELLS, threshold=0.3)
    assert m["per_class"]["WBC"]["AP50"] == pytest.approx(1.0)
    assert m["counting"]["WBC"]["mae"] == 0
