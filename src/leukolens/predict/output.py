"""Prediction results as JSON: the one place typed results become dicts, and the versioned output schema.

Every JSON file that ``analyze``, ``detect``, ``predict cells``, ``describe`` and ``search`` write carries
``"schema_version": SCHEMA_VERSION``; docs/output-schema.md describes every key, and :data:`SCHEMAS` holds the same
as JSON Schemas (draft 2020-12), one per kind of file. :func:`validate` checks a document against one of them (with
``jsonschema`` when it is installed, else with the small checker here, which knows the keywords these schemas use).

Numbers are rounded here and only here: boxes to 0.1 px, scores and probabilities to 4 decimals.
:func:`field_from_json` reads an ``analyze`` field file back into its record (as rounded), so that a sample's
summary can be made from the files alone (``analyze --resume``, fields analysed on other machines).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from leukolens.predict.results import (
    ATYPICAL_VERDICT,
    AnalyzedField,
    AttributePrediction,
    CellPrediction,
    FieldDetections,
    PredictedCell,
)
from leukolens.predict.scale import METHODS as SCALE_METHODS
from leukolens.predict.scale import FieldScale
from leukolens.records import Box, BoxFormat

SCHEMA_VERSION = 1
"""Raised when a key is removed or renamed, or a value changes meaning; adding a key keeps the version."""


def _round(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in values.items()}


def _box(box) -> list[float]:
    return [round(float(v), 1) for v in box]


# ------------------------------------------------------------------------------------------------------ writers
def prediction_json(prediction: CellPrediction) -> dict:
    """One cell as ``predict cells`` writes it."""
    return {
        "source": prediction.source,
        "label": prediction.label,
        "probability": round(prediction.probability, 4),
        "probabilities": _round(prediction.probabilities),
        "attributes": _attributes_json(prediction),
        "atypicality": None if prediction.atypicality is None else round(prediction.atypicality, 4),
        "verdict": prediction.verdict,
        "blast_probability": None if prediction.blast_probability is None else round(prediction.blast_probability, 4),
        "blast_suspected": prediction.blast_suspected,
        **_diameter_json(prediction),
    }


def _diameter_json(prediction: CellPrediction) -> dict:
    """``diameter_um`` only where the cell's size is known (its field's scale was found): files stay as they were
    for cells without one."""
    return {} if prediction.diameter_um is None else {"diameter_um": round(prediction.diameter_um, 2)}


def _attributes_json(prediction: CellPrediction) -> dict:
    return {
        name: {"value": a.value, "probability": round(a.probability, 4), "probabilities": _round(a.probabilities)}
        for name, a in prediction.attributes.items()
    }


def cells_json(predictions: Sequence[CellPrediction]) -> dict:
    """The file ``predict cells --json PATH`` writes."""
    return {"schema_version": SCHEMA_VERSION, "cells": [prediction_json(p) for p in predictions]}


def cell_json(cell: PredictedCell) -> dict:
    """One cell of an analysed field: where it is, what the detector said, and the cell model's reading."""
    entry = {
        "id": cell.number,
        "box_xyxy": _box(cell.box.pixels_xyxy()),
        "detector_class": cell.detector_class,
        "detector_score": round(cell.detector_score, 4),
    }
    p = cell.prediction
    if p is not None:
        entry.update(
            {
                "type": p.label,
                "type_probability": round(p.probability, 4),
                "type_probabilities": _round(p.probabilities),
                "attributes": _attributes_json(p),
                "atypicality": None if p.atypicality is None else round(p.atypicality, 4),
                "verdict": p.verdict,
                "blast_probability": None if p.blast_probability is None else round(p.blast_probability, 4),
                "blast_suspected": p.blast_suspected,
                **_diameter_json(p),
            }
        )
    return entry


def scale_json(scale, tiles: int) -> dict:
    """The scale a field was detected at (a :class:`~leukolens.predict.scale.FieldScale`), how it was found, and
    into how many tiles the field was cut at it."""
    mpp = scale.microns_per_pixel
    return {
        "microns_per_pixel": None if mpp is None else round(mpp, 5),
        "factor": round(scale.factor, 5),
        "method": scale.method,
        "red_cells": scale.red_cells,
        "fields": scale.fields,
        "tiles": tiles,
    }


def field_json(field: AnalyzedField, detector: dict, analysis: dict | None = None) -> dict:
    """``<out>/<stem>.json`` of ``analyze``: one field, its cells and their counts; with ``analysis``, what the
    reading of its cells depended on (``analyze`` records it so that ``--resume`` keeps only fields read the same
    way; see docs/output-schema.md)."""
    cells: list[PredictedCell] = field.cells  # type: ignore[assignment]
    entry = {
        "schema_version": SCHEMA_VERSION,
        "image": str(field.image),
        "width": field.width,
        "height": field.height,
        "detector": detector,
    }
    if analysis is not None:
        entry["analysis"] = analysis
    if field.scale is not None:
        entry["scale"] = scale_json(field.scale, field.tiles)
    entry.update(
        {
            "counts": dict(Counter(c.detector_class for c in cells)),
            "wbc_types": dict(Counter(c.prediction.label for c in cells if c.prediction is not None)),
            "notes": list(field.notes),
            "cells": [cell_json(c) for c in cells],
        }
    )
    return entry


# ------------------------------------------------------------------------------------------------------ readers
def _attributes_from_json(attributes: dict) -> dict[str, AttributePrediction]:
    return {
        name: AttributePrediction(a["value"], a["probability"], dict(a["probabilities"]))
        for name, a in attributes.items()
    }


def cell_from_json(entry: dict) -> PredictedCell:
    """One cell of a field file back as the record :func:`cell_json` wrote (values as rounded there; no
    embedding)."""
    prediction = None
    if entry.get("type") is not None:
        prediction = CellPrediction(
            label=entry["type"],
            probability=entry["type_probability"],
            probabilities=dict(entry["type_probabilities"]),
            attributes=_attributes_from_json(entry.get("attributes", {})),
            atypicality=entry.get("atypicality"),
            atypical=entry.get("verdict") == ATYPICAL_VERDICT,
            blast_probability=entry.get("blast_probability"),
            blast_suspected=bool(entry.get("blast_suspected", False)),
            diameter_um=entry.get("diameter_um"),
        )
    return PredictedCell(
        box=Box(tuple(entry["box_xyxy"]), BoxFormat.XYXY, normalized=False),
        label=prediction.label if prediction else entry["detector_class"],
        attributes={n: a.value for n, a in prediction.attributes.items()} if prediction else {},
        number=entry["id"],
        detector_class=entry["detector_class"],
        detector_score=entry["detector_score"],
        prediction=prediction,
    )


def field_from_json(document: dict) -> AnalyzedField:
    """An ``analyze`` field file (:func:`field_json`, checked against ``SCHEMAS["field"]``) back as its
    :class:`~leukolens.predict.results.AnalyzedField`: what ``sample.differential`` and ``sample.interpret`` count.

    ``field_json(field_from_json(d), d["detector"], d.get("analysis")) == d`` for every document
    :func:`field_json` wrote."""
    scale, tiles = document.get("scale"), 1
    if scale is not None:
        tiles = scale["tiles"]
        scale = FieldScale(scale["microns_per_pixel"], scale["factor"], scale["red_cells"], scale["method"],
                           fields=scale["fields"])
    return AnalyzedField(
        Path(document["image"]), document["width"], document["height"],
        cells=[cell_from_json(c) for c in document["cells"]], notes=list(document["notes"]), scale=scale,
        tiles=tiles,
    )


def detections_json(image: str, detections: FieldDetections) -> dict:
    """One field as ``detect --json`` lists it."""
    width, height = detections.canvas_size
    cells = [
        {"box_xyxy": _box(detections.boxes[i]), "class": detections.class_name(i),
         "score": round(float(detections.scores[i]), 4)}
        for i in range(len(detections))
    ]
    entry = {"image": image, "width": width, "height": height}
    if detections.scale is not None:
        entry["scale"] = scale_json(detections.scale, detections.tiles)
    return {**entry, "cells": cells}


def detect_json(detector: str, threshold: float, fields: list[dict]) -> dict:
    """The file ``detect --json PATH`` writes; ``fields`` from :func:`detections_json`."""
    return {"schema_version": SCHEMA_VERSION, "detector": detector, "score_threshold": threshold, "fields": fields}


def description_json(description) -> dict:
    """One cell as ``describe`` writes it (a :class:`~leukolens.predict.describe.Description`)."""
    return {
        "source": description.source,
        "sentence": description.sentence,
        "label": description.label,
        "label_score": round(description.label_score, 4),
        "class_scores": _round(description.class_scores),
        "attributes": {k: {"value": v, "score": round(s, 4)} for k, (v, s) in description.attributes.items()},
        "blast_probability": None if description.blast_probability is None else round(description.blast_probability, 4),
        "blast_suspected": description.blast_suspected,
        "blast_reasons": list(description.blast_reasons),
    }


def describe_json(descriptions: Sequence) -> dict:
    """The file ``describe --json PATH`` writes."""
    return {"schema_version": SCHEMA_VERSION, "cells": [description_json(d) for d in descriptions]}


def search_json(query: str, hits: Sequence[tuple[str, float]]) -> dict:
    """The file ``search --json PATH`` writes."""
    return {"schema_version": SCHEMA_VERSION, "query": query, "hits": [{"path": p, "score": s} for p, s in hits]}


# ------------------------------------------------------------------------------------------------------ schemas
def _object(properties: dict, *, required: Sequence[str] | None = None, extra: bool = False) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
        "additionalProperties": extra,
    }


def _map(values: dict) -> dict:
    return {"type": "object", "additionalProperties": values}


def _array(items: dict) -> dict:
    return {"type": "array", "items": items}


_NUMBER = {"type": "number"}
_INTEGER = {"type": "integer"}
_STRING = {"type": "string"}
_VERSION = {"const": SCHEMA_VERSION}
_BOX = {"type": "array", "items": _NUMBER, "minItems": 4, "maxItems": 4}
_ATYPICALITY = {"type": ["number", "null"]}
_VERDICT = {"enum": ["typical", "atypical, review"]}
_ATTRIBUTES = _map(_object({"value": _STRING, "probability": _NUMBER, "probabilities": _map(_NUMBER)}))
_DETECTOR = _object({"checkpoint": _STRING, "score_threshold": _NUMBER, "classes": _array(_STRING)})
_SCALE = _object(
    {
        "microns_per_pixel": {"type": ["number", "null"]},
        "factor": _NUMBER,
        "method": {"enum": list(SCALE_METHODS)},
        "red_cells": _INTEGER,
        "fields": _INTEGER,
        "tiles": _INTEGER,
    }
)
# What the reading of a field's cells depended on, as `analyze` ran (leukolens.analyze; docs/output-schema.md)
_ANALYSIS = _object(
    {
        "cell_model": {"type": ["string", "null"]},
        "cell_model_sha256": {"type": ["string", "null"]},
        "match_stain": {"type": "boolean"},
        "views": _INTEGER,
        "size": {"type": "boolean"},
        "adapt": {"type": "boolean"},
        "blast_examples": _array(_STRING),
        "scale": _STRING,
        "microns_per_pixel": {"type": ["number", "null"]},
    },
    # Files written before cells were read in several views have no "views" (they read one), nor "size" before the
    # size prior: still valid, and `analyze --resume` reads them again, as their analysis differs.
    required=["cell_model", "cell_model_sha256", "match_stain", "adapt", "blast_examples", "scale",
              "microns_per_pixel"],
)
# A whole slide's <stem>.json says how the slide was read (leukolens.analyze_slide; docs/output-schema.md)
_SLIDE = _object(
    {
        "reader": {"enum": ["tifffile", "openslide", "pillow"]},
        "levels": _array({"type": "array", "items": _INTEGER, "minItems": 2, "maxItems": 2}),
        "file_microns_per_pixel": {"type": ["number", "null"]},
        "window": _INTEGER,
        "overlap": _INTEGER,
        "windows": _INTEGER,
        "thumbnail_scale": _NUMBER,
        "damaged_tiles": _array(
            _object({"level": _INTEGER, "x": _INTEGER, "y": _INTEGER, "width": _INTEGER, "height": _INTEGER,
                     "reason": _STRING})
        ),
        "seconds": _NUMBER,
    }
)

_CELL_READING = {
    "type": _STRING,
    "type_probability": _NUMBER,
    "type_probabilities": _map(_NUMBER),
    "attributes": _ATTRIBUTES,
    "atypicality": _ATYPICALITY,
    "verdict": _VERDICT,
    "blast_probability": _ATYPICALITY,
    "blast_suspected": {"type": "boolean"},
    "diameter_um": _NUMBER,  # only where the field's scale was found
}
_FIELD_CELL = _object(
    {"id": _INTEGER, "box_xyxy": _BOX, "detector_class": _STRING, "detector_score": _NUMBER, **_CELL_READING},
    required=("id", "box_xyxy", "detector_class", "detector_score"),
)
_PREDICTION = _object(
    {
        "source": _STRING,
        "label": _STRING,
        "probability": _NUMBER,
        "probabilities": _map(_NUMBER),
        "attributes": _ATTRIBUTES,
        "atypicality": _ATYPICALITY,
        "verdict": _VERDICT,
        "blast_probability": _ATYPICALITY,
        "blast_suspected": {"type": "boolean"},
        "diameter_um": _NUMBER,  # only where the cell's scale was known
    },
    required=("source", "label", "probability", "probabilities", "attributes", "atypicality", "verdict",
              "blast_probability", "blast_suspected"),
)
_DESCRIPTION = _object(
    {
        "source": _STRING,
        "sentence": _STRING,
        "label": _STRING,
        "label_score": _NUMBER,
        "class_scores": _map(_NUMBER),
        "attributes": _map(_object({"value": _STRING, "score": _NUMBER})),
        "blast_probability": _ATYPICALITY,
        "blast_suspected": {"type": "boolean"},
        "blast_reasons": _array(_STRING),
    }
)
_SKIPPED = _object({"image": _STRING, "reason": _STRING})
_FLAGGED = _object({"field": _STRING, "cell": _INTEGER, "type": _STRING, "atypicality": _ATYPICALITY})
# summary.json's interpretation (leukolens.sample.interpret; docs/interpretation.md)
_PERCENT = {"type": ["number", "null"]}
_CELL_REFS = _array(_object({"field": _STRING, "cell": _INTEGER}))
# the secondary blast estimate, adjusted for the blast call's error rates; null: not computed
_ADJUSTED = {**_object({"percent": _NUMBER, "low": _NUMBER, "high": _NUMBER, "true_positive_rate": _NUMBER,
                        "blasts_called": _INTEGER, "blasts": _INTEGER, "false_positive_rate": _NUMBER,
                        "normals_called": _INTEGER, "normals": _INTEGER, "rates_from": _STRING}),
             "type": ["object", "null"]}
_FINDING = _object(
    {
        "rule": _STRING,
        "role": {"enum": ["gate", "flag", "criterion", "supporting", "lineage"]},
        "measure": _STRING,
        "test": _STRING,
        "status": {"enum": ["met", "borderline", "possible", "not met", "not assessed"]},
        "count": _INTEGER,
        "total": {"type": ["integer", "null"]},
        "percent": _PERCENT,
        "low": _PERCENT,
        "high": _PERCENT,
        "expected_percent": _PERCENT,
        "cells": _CELL_REFS,
    }
)
_SUGGESTION = _object(
    {
        "name": _STRING,
        "status": {"enum": ["supported", "possible", "not supported"]},
        "evidence": _array(_FINDING),
        "notes": _array(_STRING),
    }
)
_INTERPRETATION = _object(
    {
        "white_cells_counted": _INTEGER,
        "minimum_white_cells": _INTEGER,
        "differential": _map(
            _object({"count": _INTEGER, "percent": _NUMBER, "low": _NUMBER, "high": _NUMBER,
                     "expected_percent": _PERCENT})
        ),
        "blasts": _object(
            {"assessed": {"type": "boolean"}, **{k: _FINDING["properties"][k] for k in (
                "count", "total", "percent", "low", "high", "expected_percent", "cells")}, "adjusted": _ADJUSTED},
            # the adjusted estimate was added in version 1: older summaries stay valid
            required=("assessed", "count", "total", "percent", "low", "high", "expected_percent", "cells"),
        ),
        "not_counted": _object(
            {
                "smudge": _object({"assessed": {"type": "boolean"}, "count": _INTEGER, "cells": _CELL_REFS}),
                "unidentified": _object({"count": _INTEGER, "cells": _CELL_REFS}),
            }
        ),
        "flags": _array(_FINDING),
        "suggestion": _SUGGESTION,
        "also_possible": _array(_SUGGESTION),
        "contradictions": _array(
            _object(
                {
                    "kind": {"enum": ["cell", "suggestion"]},
                    "reason": _STRING,
                    "field": {"type": ["string", "null"]},
                    "cell": {"type": ["integer", "null"]},
                    "type": {"type": ["string", "null"]},
                    "attributes": _map(_STRING),
                }
            )
        ),
        "notes": _array(_STRING),
        "rules": _STRING,
        "disclaimer": _STRING,
    }
)

SCHEMAS: dict[str, dict] = {
    "field": _object(
        {
            "schema_version": _VERSION,
            "image": _STRING,
            "width": _INTEGER,
            "height": _INTEGER,
            "detector": _DETECTOR,
            "analysis": _ANALYSIS,
            "scale": _SCALE,
            "counts": _map(_INTEGER),
            "wbc_types": _map(_INTEGER),
            "notes": _array(_STRING),
            "cells": _array(_FIELD_CELL),
            "slide": _SLIDE,
        },
        # `scale`, `slide` (whole slides only) and `analysis` were added in version 1 (adding a key keeps the
        # version): files written before them stay valid
        required=("schema_version", "image", "width", "height", "detector", "counts", "wbc_types", "notes", "cells"),
    ),
    "summary": _object(
        {
            "schema_version": _VERSION,
            "fields_read": _INTEGER,
            "fields_resumed": _INTEGER,
            "fields_skipped": _array(_SKIPPED),
            "cells_found": _map(_INTEGER),
            "wbc_typed": _INTEGER,
            "differential": _map(_object({"count": _INTEGER, "percent": _NUMBER})),
            "atypical_flagged": _INTEGER,
            "flagged_cells": _array(_FLAGGED),
            "notes": _array(_STRING),
            "detector": _DETECTOR,
            "seconds": _NUMBER,
            "fields_per_second": {"type": ["number", "null"]},
            "interpretation": _INTERPRETATION,
        },
        # `interpretation` and `fields_resumed` were added in version 1 (adding a key keeps the version): older
        # summaries stay valid
        required=("schema_version", "fields_read", "fields_skipped", "cells_found", "wbc_typed", "differential",
                  "atypical_flagged", "flagged_cells", "notes", "detector", "seconds", "fields_per_second"),
    ),
    "detect": _object(
        {
            "schema_version": _VERSION,
            "detector": _STRING,
            "score_threshold": _NUMBER,
            "fields": _array(
                _object(
                    {
                        "image": _STRING,
                        "width": _INTEGER,
                        "height": _INTEGER,
                        "scale": _SCALE,
                        "cells": _array(_object({"box_xyxy": _BOX, "class": _STRING, "score": _NUMBER})),
                    },
                    required=("image", "width", "height", "cells"),
                )
            ),
        }
    ),
    "cells": _object({"schema_version": _VERSION, "cells": _array(_PREDICTION)}),
    "describe": _object({"schema_version": _VERSION, "cells": _array(_DESCRIPTION)}),
    "search": _object(
        {"schema_version": _VERSION, "query": _STRING, "hits": _array(_object({"path": _STRING, "score": _NUMBER}))}
    ),
}
"""JSON Schema of each kind of output file: ``field`` and ``summary`` (analyze), ``detect``, ``cells`` (predict
cells), ``describe``, ``search``."""
for _kind, _schema in SCHEMAS.items():
    _schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    _schema["title"] = f"leukolens {_kind} output, schema version {SCHEMA_VERSION}"


# ------------------------------------------------------------------------------------------------------ checking
def validate(document, kind: str) -> list[str]:
    """What is wrong with ``document`` as an output file of ``kind`` (a key of :data:`SCHEMAS`); empty when valid."""
    schema = SCHEMAS[kind]
    try:
        import jsonschema
    except ImportError:
        return _check(document, schema, "$")
    validator = jsonschema.Draft202012Validator(schema)
    return [f"$/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "null": type(None),
    "boolean": bool,
}


def _is(value, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    return isinstance(value, _TYPES[name])


def _check(value, schema: dict, where: str) -> list[str]:
    """The subset of JSON Schema the schemas above use: type, const, enum, properties, required,
    additionalProperties, items, minItems, maxItems."""
    if "const" in schema and value != schema["const"]:
        return [f"{where}: {value!r} is not {schema['const']!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    types = schema.get("type")
    if types is not None and not any(_is(value, t) for t in ([types] if isinstance(types, str) else types)):
        return [f"{where}: {value!r} is not of type {types}"]
    problems = []
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        problems += [f"{where}: missing key {k!r}" for k in schema.get("required", ()) if k not in value]
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                problems += _check(item, properties[key], f"{where}/{key}")
            elif extra is False:
                problems.append(f"{where}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                problems += _check(item, extra, f"{where}/{key}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            problems.append(f"{where}: {len(value)} items")
        if "items" in schema:
            for i, item in enumerate(value):
                problems += _check(item, schema["items"], f"{where}/{i}")
    return problems
