"""Between the archive's rows and the pipeline's records: a per-field JSON result into cell rows (checked), a stored
cell back into a :class:`~leukolens.predict.results.PredictedCell` with the reviewer's call applied (what
``interpret`` recounts), and a sentence for a cell that came without one.

A reviewer's call changes what a cell counts as, never what the cell model said (that stays in the cell's row):

- a type of the cell model (``Monocyte``): the cell counts there, with certainty (probability 1), and is no longer a
  suspected blast;
- ``blast``: the cell counts in the Blast row whatever its type;
- ``smudge``: the cell counts as a smudge cell (outside the 100%);
- ``artefact`` or ``not a WBC``: the cell leaves the sample's white cells altogether.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from leukolens.predict.results import AnalyzedField, AttributePrediction, CellPrediction, PredictedCell
from leukolens.records import SCHEMAS, Box, BoxFormat
from leukolens.sample.interpret import BLAST, SMUDGE
from leukolens.store.archive import (
    NOT_COUNTED_CALLS,
    REVIEW_BLAST,
    REVIEW_SMUDGE,
    ArchiveError,
    StoredCell,
)
from leukolens.text.sentences import compose, content_of

MAX_CELLS_PER_FIELD = 100_000
MAX_EMBEDDING = 8192
ATYPICAL_VERDICT = "atypical, review"  # leukolens.predict.results.ATYPICAL_VERDICT
CELL_COLUMNS = (
    "number", "x1", "y1", "x2", "y2", "detector_class", "detector_score", "model_type", "type_probability",
    "probabilities", "attributes", "atypicality", "atypical", "blast_probability", "blast_suspected", "sentence",
    "embedding",
)
"""The ``cells`` columns :func:`cell_rows` fills, in order (``field_id`` goes first)."""


# ------------------------------------------------------------------------------------------------------ checks
def _number(value: object, what: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ArchiveError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _text(value: object, what: str, *, optional: bool = False, longest: int = 200) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > longest:
        raise ArchiveError(f"{what} must be a non-empty string of at most {longest} characters, got {value!r:.80}")
    return value


def _probabilities(value: object, what: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ArchiveError(f"{what} must be an object of probabilities, got {type(value).__name__}")
    return {_text(k, f"{what} key"): _number(v, f"{what}[{k!r}]") for k, v in value.items()}


def _attributes(value: object, what: str) -> dict[str, dict]:
    if not isinstance(value, Mapping):
        raise ArchiveError(f"{what} must be an object, got {type(value).__name__}")
    out = {}
    for name, a in value.items():
        if not isinstance(a, Mapping):
            raise ArchiveError(f"{what}[{name!r}] must be an object with value, probability, probabilities")
        out[_text(name, f"{what} name")] = {
            "value": _text(a.get("value"), f"{what}[{name!r}].value"),
            "probability": _number(a.get("probability", 1.0), f"{what}[{name!r}].probability"),
            "probabilities": _probabilities(a.get("probabilities", {}), f"{what}[{name!r}].probabilities"),
        }
    return out


def embedding_blob(vector: object, what: str = "embedding") -> bytes:
    """An embedding as the stored BLOB: float32, little-endian, 1 to :data:`MAX_EMBEDDING` finite numbers."""
    try:
        array = np.asarray(vector, dtype="<f4")
    except (TypeError, ValueError):
        raise ArchiveError(f"{what} must be a vector of numbers") from None
    if array.ndim != 1 or not 0 < array.size <= MAX_EMBEDDING or not np.isfinite(array).all():
        raise ArchiveError(f"{what} must be a 1-D vector of 1 to {MAX_EMBEDDING} finite numbers, got {array.shape}")
    return array.tobytes()


def field_json_text(result: Mapping) -> str:
    """The result as stored: strict JSON (no NaN), refused when it is not JSON at all."""
    try:
        return json.dumps(result, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise ArchiveError(f"a field result must be JSON: {error}") from None


# ------------------------------------------------------------------------------------------------------ cell rows
def cell_sentence(cell: Mapping) -> str | None:
    """A sentence for a read cell from its type and attribute values (the canonical wording of
    :mod:`leukolens.text.sentences`), with "Suspected blast." or "Atypical, for review." when they hold; None for a
    cell the cell model did not read."""
    label = cell.get("type")
    if not label:
        return None
    values = {name: a["value"] for name, a in (cell.get("attributes") or {}).items()}
    schema = next((s for s in SCHEMAS.values() if values and set(values) <= set(s.names)), None)
    try:
        content = content_of(label, values, schema=schema) if schema else (("class", label),)
        sentence = compose(content, schema=schema or next(iter(SCHEMAS.values())))
    except (KeyError, ValueError):  # a value the phrase bank does not know: say it plainly
        sentence = f"{label}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in values.items()) + "."
    if cell.get("blast_suspected"):
        sentence += " Suspected blast."
    if cell.get("verdict") == ATYPICAL_VERDICT:
        sentence += " Atypical, for review."
    return sentence


def cell_rows(
    result: Mapping,
    *,
    sentences: Mapping[int, str] | None = None,
    embeddings: Mapping[int, object] | None = None,
) -> list[tuple]:
    """The ``cells`` rows of a per-field result (docs/output-schema.md), values in :data:`CELL_COLUMNS` order.

    Raises:
        ArchiveError: the result is not a field (no ``cells`` list), a cell lacks a key or has a bad value, two
            cells share a number, or a sentence or embedding is for a cell the field does not have.
    """
    if not isinstance(result, Mapping) or not isinstance(result.get("cells"), list):
        raise ArchiveError("a field result is an object with a list of 'cells' (docs/output-schema.md)")
    cells = result["cells"]
    if len(cells) > MAX_CELLS_PER_FIELD:
        raise ArchiveError(f"{len(cells)} cells in one field: at most {MAX_CELLS_PER_FIELD}")
    sentences, embeddings = dict(sentences or {}), dict(embeddings or {})
    rows, numbers = [], set()
    for i, cell in enumerate(cells):
        what = f"cell {i + 1}"
        if not isinstance(cell, Mapping):
            raise ArchiveError(f"{what} must be an object")
        number = cell.get("id")
        if isinstance(number, bool) or not isinstance(number, int) or number < 1 or number in numbers:
            raise ArchiveError(f"{what}: 'id' must be a positive integer unique in the field, got {number!r}")
        numbers.add(number)
        box = cell.get("box_xyxy")
        if not isinstance(box, list | tuple) or len(box) != 4:
            raise ArchiveError(f"{what}: 'box_xyxy' must be 4 numbers")
        box = [_number(v, f"{what}: box_xyxy") for v in box]
        read = cell.get("type") is not None
        sentence = sentences.get(number, cell_sentence(cell) if read else None)
        embedding = embeddings.get(number)
        rows.append((
            number, *box,
            _text(cell.get("detector_class"), f"{what}: detector_class"),
            _number(cell.get("detector_score"), f"{what}: detector_score"),
            _text(cell.get("type"), f"{what}: type", optional=True),
            _number(cell.get("type_probability"), f"{what}: type_probability", optional=True),
            json.dumps(_probabilities(cell.get("type_probabilities") or {}, f"{what}: type_probabilities")),
            json.dumps(_attributes(cell.get("attributes") or {}, f"{what}: attributes")),
            _number(cell.get("atypicality"), f"{what}: atypicality", optional=True),
            int(cell.get("verdict") == ATYPICAL_VERDICT),
            _number(cell.get("blast_probability"), f"{what}: blast_probability", optional=True),
            int(bool(cell.get("blast_suspected"))),
            _text(sentence, f"{what}: sentence", optional=True, longest=2000),
            None if embedding is None else embedding_blob(embedding, f"{what}: embedding"),
        ))
    for name, given in (("sentence", sentences), ("embedding", embeddings)):
        unknown = sorted(set(given) - numbers)
        if unknown:
            raise ArchiveError(f"a {name} for cells the field does not have: {unknown[:5]}")
    return rows


# ------------------------------------------------------------------------------------------------------ records
def model_prediction(cell: StoredCell) -> CellPrediction | None:
    """The cell model's call on a stored cell, as the record ``analyze`` made (None when it did not read it)."""
    if cell.model_type is None:
        return None
    return CellPrediction(
        label=cell.model_type,
        probability=cell.type_probability if cell.type_probability is not None else 1.0,
        probabilities=dict(cell.probabilities),
        attributes={
            name: AttributePrediction(a["value"], a["probability"], dict(a["probabilities"]))
            for name, a in cell.attributes.items()
        },
        atypicality=cell.atypicality,
        atypical=cell.atypical,
        source=f"{cell.field}#{cell.number}",
        blast_probability=cell.blast_probability,
        blast_suspected=cell.blast_suspected,
    )


def _certain(probabilities: Mapping[str, float], label: str) -> dict[str, float]:
    return {**{k: 0.0 for k in probabilities}, label: 1.0}


def reviewed_prediction(prediction: CellPrediction | None, call: str) -> CellPrediction:
    """The prediction a cell counts with once a reviewer called it ``call`` (not an artefact: those leave)."""
    base = prediction or CellPrediction(label=call, probability=1.0, probabilities={})
    if call == REVIEW_BLAST:
        label = BLAST if BLAST in base.probabilities or prediction is None else base.label
        return replace(base, label=label, blast_probability=1.0, blast_suspected=True)
    not_blast = None if base.blast_probability is None else 0.0
    label = SMUDGE if call == REVIEW_SMUDGE else call
    if label == BLAST:  # a model with a Blast class: the reviewer confirms it
        return replace(base, label=BLAST, probability=1.0, probabilities=_certain(base.probabilities, BLAST),
                       blast_probability=1.0 if base.blast_probability is not None else None)
    return replace(base, label=label, probability=1.0, probabilities=_certain(base.probabilities, label),
                   blast_probability=not_blast, blast_suspected=False)


def predicted_cell(cell: StoredCell, *, reviewed: bool = True) -> PredictedCell | None:
    """A stored cell as ``analyze`` made it, the reviewer's call applied when ``reviewed`` (None: the reviewer took
    it out of the count, an artefact or not a white cell)."""
    prediction = model_prediction(cell)
    if reviewed and cell.review is not None:
        if cell.review.type in NOT_COUNTED_CALLS:
            return None
        prediction = reviewed_prediction(prediction, cell.review.type)
    return PredictedCell(
        box=Box(cell.box_xyxy, BoxFormat.XYXY, normalized=False),
        label=prediction.label if prediction else cell.detector_class,
        attributes={n: a.value for n, a in prediction.attributes.items()} if prediction else {},
        number=cell.number,
        detector_class=cell.detector_class,
        detector_score=cell.detector_score,
        prediction=prediction,
    )


def analyzed_field(result: Mapping, cells: list[PredictedCell]) -> AnalyzedField:
    """A stored field's record (its image path is only a label here: nothing opens it)."""
    return AnalyzedField(
        Path(str(result.get("image", ""))), int(result.get("width", 0)), int(result.get("height", 0)),
        cells=cells, notes=list(result.get("notes", [])),
    )
