"""The differential count, checked on a sample small enough to count by hand."""

import numpy as np

from leukolens.predict.results import AnalyzedField, CellPrediction, FieldDetections, PredictedCell
from leukolens.sample.differential import differential, format_summary, summary_json


def _field(name, labels, types):
    """A field whose cells have these detector classes; ``types`` gives the cell model's type (None: not read)."""
    n = len(labels)
    found = FieldDetections(np.tile(np.array([[0, 0, 10, 10]], np.float32), (n, 1)), np.full(n, 0.9),
                            np.array(labels), canvas_size=(100, 100), classes=("WBC", "RBC", "Platelets"))
    cells = []
    for i, kind in enumerate(types):
        prediction = None
        if kind is not None:
            atypical = kind.endswith("!")
            prediction = CellPrediction(kind.rstrip("!"), 0.9, {}, atypicality=0.8 if atypical else 0.1,
                                        atypical=atypical)
        cells.append(PredictedCell.detected(found, i, prediction))
    return name, AnalyzedField(f"{name}.jpg", 100, 100, cells=cells)


def test_differential_counts_types_percent_and_flags():
    fields = [
        _field("a", [0, 1, 0, 2], ["Neutrophil", None, "Lymphocyte!", None]),
        _field("b", [0, 0, 0, 1], ["Neutrophil", "Neutrophil", "Lymphocyte", None]),
    ]
    counted = differential(fields)
    assert dict(counted.cells_found) == {"WBC": 5, "RBC": 2, "Platelets": 1} and counted.typed == 5
    assert counted.ranked() == [("Neutrophil", 3), ("Lymphocyte", 2)]
    summary = summary_json(counted, fields_read=2, skipped=[], notes=[], detector={}, seconds=2.0)
    assert summary["differential"] == {"Neutrophil": {"count": 3, "percent": 60.0},
                                       "Lymphocyte": {"count": 2, "percent": 40.0}}
    assert summary["flagged_cells"] == [{"field": "a", "cell": 3, "type": "Lymphocyte", "atypicality": 0.8}]
    assert summary["fields_per_second"] == 1.0
    text = format_summary(summary, "out")
    assert "WBC differential (5 cells typed)" in text and "atypical cells flagged for review: 1" in text


def test_a_sample_without_typed_cells_has_an_empty_differential():
    counted = differential([_field("a", [1, 2], [None, None])])
    summary = summary_json(counted, fields_read=1, skipped=[], notes=["no cell model"], detector={}, seconds=0.0)
    assert summary["wbc_typed"] == 0 and summary["differential"] == {} and summary["fields_per_second"] is None
    assert "WBC differential" not in format_summary(summary, "out")
