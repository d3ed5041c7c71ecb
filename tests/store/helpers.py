"""Field results for the archive tests, made the way ``analyze`` makes them: typed records written by
``predict.output.field_json`` (so the archive is fed the documented per-field JSON, not a look-alike)."""

from __future__ import annotations

from leukolens.predict.output import field_json
from leukolens.predict.results import AnalyzedField, AttributePrediction, CellPrediction, PredictedCell
from leukolens.records import Box, BoxFormat

PBC = ("Basophil", "Eosinophil", "Erythroblast", "Immature granulocyte", "Lymphocyte", "Monocyte", "Neutrophil")
DETECTOR = {"checkpoint": "detector.pt", "score_threshold": 0.5, "classes": ["WBC", "RBC", "Platelets"]}
LYMPHOCYTE = dict(cell_size="small", nucleus_shape="unsegmented-round", nuclear_cytoplasmic_ratio="high",
                  chromatin_density="densely", granule_type="nil", granule_colour="nil", granularity="no")
BLAST_LIKE = dict(cell_size="big", nucleus_shape="unsegmented-round", nuclear_cytoplasmic_ratio="high",
                  chromatin_density="loosely", granule_type="nil", granule_colour="nil", granularity="no")


def prediction(label: str, *, blast: float = 0.02, attributes: dict | None = None) -> CellPrediction:
    """A confident reading of ``label`` with a blast score (suspected above 0.5)."""
    attributes = LYMPHOCYTE if attributes is None else attributes
    probabilities = {c: 0.94 if c == label else 0.01 for c in PBC}
    return CellPrediction(
        label, probabilities[label], probabilities,
        {name: AttributePrediction(value, 0.9, {value: 0.9}) for name, value in attributes.items()},
        atypicality=0.1, atypical=False, blast_probability=blast, blast_suspected=blast > 0.5,
    )


def field_result(stem: str, labels: list[str | None], *, blasts: int = 0) -> dict:
    """The per-field JSON of a field whose white cells have these types (None: a red cell, not read); the first
    ``blasts`` white cells are suspected blasts."""
    cells = []
    for i, label in enumerate(labels):
        box = Box((10.0 * i, 5.0, 10.0 * i + 8.0, 13.0), BoxFormat.XYXY)
        if label is None:
            cells.append(PredictedCell(box, "RBC", number=i + 1, detector_class="RBC", detector_score=0.8))
            continue
        blast = i < blasts
        p = prediction(label, blast=0.9 if blast else 0.02, attributes=BLAST_LIKE if blast else None)
        cells.append(PredictedCell(box, label, {k: a.value for k, a in p.attributes.items()}, number=i + 1,
                                   detector_class="WBC", detector_score=0.9, prediction=p))
    return field_json(AnalyzedField(f"/slides/{stem}.jpg", 640, 480, cells=cells), DETECTOR)
