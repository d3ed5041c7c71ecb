"""What a sample's white cells suggest: a differential with confidence intervals, the blast percentage, the flags a
hematologist expects, and a leukemia suggestion with the numbers and cells behind it.

    >>> reading = interpret(fields)                   # [(stem, AnalyzedField), ...] from analyze
    >>> reading.suggestion.name, reading.suggestion.status
    ('CML', 'possible')

Every threshold is a row of :data:`RULES`, one table (docs/interpretation.md renders and explains it) over the
:data:`MEASURES`; :data:`CONFLICTS` lists the types and attributes that contradict each other. Percentages carry 95%
Wilson intervals from the counts; the model's own uncertainty enters as expected counts (the sum of each cell's
probabilities), a sensitivity check on a supported suggestion. The blast percentage the rules test is the count;
beside it, when the blast scorer records its sensitivity and false-positive rate, a secondary estimate adjusted for
them (:func:`adjusted_share`, Rogan-Gladen) that no rule reads. Decision support for review, not a diagnosis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from leukolens.predict.results import AnalyzedField, CellPrediction

if TYPE_CHECKING:  # the record only; the interpretation needs no torch
    from leukolens.models.blast import BlastCallRates

Z_95 = 1.959963984540054
"""The standard normal quantile of a two-sided 95% interval."""
MIN_WHITE_CELLS = 100
"""Fewer white cells counted than this: "not enough cells". 100 is the routine manual differential; below it the 95%
interval around 20% blasts is over 20 points wide (50 cells: 11.2-33.0%), so the acute-leukemia threshold cannot be
judged at all. At 100 cells it is 13.3-28.9%, at 200 (:data:`REFERENCE_WHITE_CELLS`) 15.0-26.1%."""
REFERENCE_WHITE_CELLS = 200
"""CLSI H20-A2's reference count: under it the summary notes that the intervals are wide."""
MIN_CALL_SEPARATION = 0.2
"""The blast call's sensitivity minus its false-positive rate under which no adjusted blast % is given: the adjustment
divides by that difference, so a weak call would multiply every counting error (at 0.2, by five)."""
BLAST = "Blast"
SMUDGE = "Smudge"
UNREADABLE = ("Unidentified", "Not identifiable")
"""Type labels of a cell the cell model could not read (a lab-calibrated model may have such a class)."""
NOT_WHITE = ("RBC", "Platelets")
"""Detector classes that are not white cells (the same as ``leukolens.analyze.NOT_WHITE``, one layer up)."""
DISCLAIMER = (
    "Decision support for review by a qualified person, not a diagnosis: a diagnosis of leukemia needs the "
    "smear reviewed by a hematologist, the blood count, and immunophenotyping or genetics."
)


def wilson_interval(count: int, total: int, *, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of ``count`` successes in ``total`` trials, as fractions; (0, 1) when total is 0."""
    if total <= 0:
        return 0.0, 1.0
    share = count / total
    denominator = 1 + z * z / total
    centre = (share + z * z / (2 * total)) / denominator
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / denominator
    # exactly 0 and 1 at the ends (the formula gives them up to float rounding)
    return (centre - half if count > 0 else 0.0), (centre + half if count < total else 1.0)


# ------------------------------------------------------------------------------------------------------ adjustment
def rogan_gladen(observed: float, true_positive_rate: float, false_positive_rate: float) -> float:
    """The true share behind an ``observed`` share of positive calls by a call with these error rates, clipped to
    [0, 1]: (observed - FPR) / (TPR - FPR) (Rogan and Gladen 1978; Forman 2008's adjusted classify and count).

    A call with sensitivity TPR and false-positive rate FPR on a sample with a true share f calls
    f x TPR + (1 - f) x FPR of it positive on average; this solves that for f. TPR must exceed FPR.
    """
    return min(1.0, max(0.0, (observed - false_positive_rate) / (true_positive_rate - false_positive_rate)))


@dataclass(frozen=True)
class AdjustedShare:
    """A share of positive calls adjusted for the call's error rates: the estimate and its 95% interval, as
    fractions, and the rates used."""

    share: float
    low: float
    high: float
    rates: BlastCallRates


def adjusted_share(count: int, total: int, rates: BlastCallRates, *,
                   min_separation: float = MIN_CALL_SEPARATION) -> AdjustedShare | None:
    """``count`` of ``total`` called positive, adjusted with :func:`rogan_gladen`; None when there is nothing to
    adjust (``total`` 0) or the call is too weak (TPR - FPR under ``min_separation``).

    The interval is the adjustment's extremes over the corners of three 95% Wilson intervals: the observed share's
    and those of TPR and FPR from their own counts (the adjustment is monotone in each while TPR exceeds FPR, so the
    corners hold its extremes). It covers the counting in the sample and the sampling of the few cells the rates were
    measured on; not how far those cells (e.g. monoblasts, one microscope) stand for the sample's. When the rates'
    intervals overlap, the adjusted share could be anything: 0-1.
    """
    tpr, fpr = rates.true_positive_rate, rates.false_positive_rate
    if total <= 0 or tpr - fpr < min_separation:
        return None
    share = rogan_gladen(count / total, tpr, fpr)
    tprs = wilson_interval(rates.blasts_called, rates.blasts)
    fprs = wilson_interval(rates.normals_called, rates.normals)
    if tprs[0] <= fprs[1]:
        return AdjustedShare(share, 0.0, 1.0, rates)
    corners = [rogan_gladen(p, t, f) for p in wilson_interval(count, total) for t in tprs for f in fprs]
    return AdjustedShare(share, min(corners), max(corners), rates)


# ------------------------------------------------------------------------------------------------------ features
FEATURES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "small": (("cell_size", ("small",)),),
    "dense chromatin": (("chromatin_density", ("densely",)), ("nuclear_chromatin", ("coarse",))),
    "fine chromatin": (("chromatin_density", ("loosely",)), ("nuclear_chromatin", ("open",))),
    "scant cytoplasm": (("nuclear_cytoplasmic_ratio", ("high",)), ("cytoplasm", ("scanty",))),
    "more cytoplasm": (("nuclear_cytoplasmic_ratio", ("low",)), ("cytoplasm", ("abundant",))),
    "granules": (("granularity", ("yes",)), ("granule_type", ("small", "round", "coarse"))),
    "eosinophil or basophil granules": (("granule_type", ("round", "coarse")),),
    "round unsegmented nucleus": (("nucleus_shape", ("unsegmented-round",)),),
}
"""Morphological features as attribute values: (attribute, values) pairs, WBCAtt's first, then LLD's where it has
the attribute. A feature holds when any attribute the cell model predicted has one of its values."""


def has_feature(prediction: CellPrediction, feature: str) -> bool | None:
    """Whether the cell shows ``feature``; None when the cell model predicts none of its attributes."""
    seen = [prediction.attributes[name].value in values for name, values in FEATURES[feature]
            if name in prediction.attributes]
    return any(seen) if seen else None


def feature_probability(prediction: CellPrediction, feature: str) -> float | None:
    """The model's probability of ``feature`` from the first of its attributes it predicts (None: none)."""
    for name, values in FEATURES[feature]:
        if name in prediction.attributes:
            a = prediction.attributes[name]
            return sum(a.probabilities.get(v, float(a.value == v)) for v in values)
    return None


# ------------------------------------------------------------------------------------------------------ cells
@dataclass(frozen=True)
class CellRef:
    """A cell of the sample: its field's output stem and its id in the field."""

    field: str
    cell: int


@dataclass(frozen=True)
class SortedCell:
    """A white cell and the row of the differential it counts in: a type, ``Blast``, ``Smudge`` or ``unidentified``
    (``prediction`` is None when the cell model did not read it)."""

    ref: CellRef
    row: str
    prediction: CellPrediction | None


UNIDENTIFIED = "unidentified"
NOT_COUNTED = (SMUDGE, UNIDENTIFIED)


@dataclass(frozen=True)
class SampleCells:
    """The white cells of a sample sorted into rows; ``classes`` are the cell model's types (blast and smudge rows
    aside), ``blasts_assessed`` says whether anything could call a blast (a blast score or a ``Blast`` class),
    ``blast_typed`` whether the cell model has a ``Blast`` class of its own."""

    cells: tuple[SortedCell, ...]
    classes: tuple[str, ...]
    blasts_assessed: bool
    smudge_assessed: bool
    blast_typed: bool = False

    @property
    def counted(self) -> tuple[SortedCell, ...]:
        """The cells in the 100%: smudge and unidentified cells aside."""
        return tuple(c for c in self.cells if c.row not in NOT_COUNTED)

    def row(self, name: str) -> tuple[SortedCell, ...]:
        return tuple(c for c in self.cells if c.row == name)


def sort_cells(fields: Sequence[tuple[str, AnalyzedField]]) -> SampleCells:
    """Each white cell of the fields in its row: a blast (``prediction.is_blast``) is a Blast whatever its type
    label; a ``Smudge`` label and a cell the model could not read are kept out of the 100%."""
    cells, classes, blasts_assessed, smudge_assessed, blast_typed = [], {}, False, False, False
    for stem, f in fields:
        for cell in f.cells:
            p = cell.prediction
            if p is None:
                if cell.detector_class not in NOT_WHITE:
                    cells.append(SortedCell(CellRef(stem, cell.number), UNIDENTIFIED, None))
                continue
            classes.update(dict.fromkeys((*p.probabilities, p.label)))
            blasts_assessed |= p.blast_probability is not None or BLAST in p.probabilities or p.label == BLAST
            smudge_assessed |= SMUDGE in p.probabilities or p.label == SMUDGE
            blast_typed |= BLAST in p.probabilities or p.label == BLAST
            row = BLAST if p.is_blast else SMUDGE if p.label == SMUDGE else UNIDENTIFIED if p.label in UNREADABLE \
                else p.label
            cells.append(SortedCell(CellRef(stem, cell.number), row, p))
    types = tuple(c for c in classes if c not in (BLAST, SMUDGE, *UNREADABLE))
    return SampleCells(tuple(cells), types, blasts_assessed, smudge_assessed, blast_typed)


def row_probabilities(prediction: CellPrediction) -> dict[str, float]:
    """One cell's probability of each row: its blast probability (the blast score, else a ``Blast`` class's
    probability), the rest shared among its other types in proportion to their probabilities."""
    p = prediction
    blast = p.blast_probability if p.blast_probability is not None else p.probabilities.get(BLAST, float(p.is_blast))
    others = {k: v for k, v in p.probabilities.items() if k != BLAST}
    total = sum(others.values())
    if total <= 0:
        others, total = ({p.label: 1.0}, 1.0) if p.label != BLAST else ({}, 1.0)
    rows = {BLAST: blast, **{k: (1 - blast) * v / total for k, v in others.items()}}
    for label in set(UNREADABLE) & set(rows):
        rows[UNIDENTIFIED] = rows.get(UNIDENTIFIED, 0.0) + rows.pop(label)
    return rows


# ------------------------------------------------------------------------------------------------------ measures
@dataclass(frozen=True)
class Measured:
    """What a measure counts: ``count`` of ``total`` (None for a plain count), the cells counted, the expected
    share from the model's probabilities (a fraction; None when not computed), and whether the cell model could
    measure it at all."""

    count: int
    total: int | None
    cells: tuple[CellRef, ...]
    expected: float | None = None
    assessed: bool = True

    @property
    def percent(self) -> float | None:
        """``count`` in percent of ``total`` (0 when total is 0; None for a plain count)."""
        if self.total is None:
            return None
        return 100 * self.count / self.total if self.total else 0.0

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% Wilson interval of :attr:`percent`, in percent, from the counts."""
        if self.total is None:
            return None
        low, high = wilson_interval(self.count, self.total)
        return 100 * low, 100 * high

    @property
    def expected_percent(self) -> float | None:
        return None if self.expected is None else 100 * self.expected


def _expected_share(sample: SampleCells, weight: Callable[[CellPrediction], float | None]) -> float | None:
    """Sum of ``weight`` over the read cells, over the expected number of cells counted (None if not computable)."""
    read = [c.prediction for c in sample.cells if c.prediction is not None]
    rows = [row_probabilities(p) for p in read]
    counted = sum(1 - r.get(SMUDGE, 0.0) - r.get(UNIDENTIFIED, 0.0) for r in rows)
    weights = [weight(p) for p in read]
    if counted <= 0 or any(w is None for w in weights):
        return None
    return sum(weights) / counted


def _type_share(name: str) -> Callable[[SampleCells], Measured]:
    def measure(sample: SampleCells) -> Measured:
        cells = sample.row(name)
        expected = _expected_share(sample, lambda p: row_probabilities(p).get(name, 0.0))
        assessed = sample.blasts_assessed if name == BLAST else True
        return Measured(len(cells), len(sample.counted), tuple(c.ref for c in cells), expected, assessed)

    return measure


def adjusted_blasts(sample: SampleCells, rates: BlastCallRates | None) -> AdjustedShare | None:
    """The secondary blast estimate: the share of cells called blast adjusted for the blast call's error rates. None
    when blasts are not assessed or no white cell was counted, without rates (an older fit, or blast examples added for
    one run), when the cell model types blasts itself (the rates describe the scorer's call, not those), or when
    the call is too weak to correct for (:data:`MIN_CALL_SEPARATION`)."""
    if not sample.blasts_assessed or sample.blast_typed or rates is None:
        return None
    return adjusted_share(len(sample.row(BLAST)), len(sample.counted), rates)


def _atypical_lymphocytes(sample: SampleCells) -> Measured:
    lymphocytes = sample.row("Lymphocyte")
    atypical = [c.ref for c in lymphocytes if c.prediction.atypical]
    assessed = any(c.prediction.atypicality is not None for c in lymphocytes)
    return Measured(len(atypical), len(lymphocytes), tuple(atypical), None, assessed)


def _smudge_cells(sample: SampleCells) -> Measured:
    smudge = sample.row(SMUDGE)
    read = [c.prediction for c in sample.cells if c.prediction is not None]
    expected = sum(row_probabilities(p).get(SMUDGE, 0.0) for p in read) / len(read) if read else None
    seen = len(sample.counted) + len(smudge)
    return Measured(len(smudge), seen, tuple(c.ref for c in smudge), expected, sample.smudge_assessed)


def _small_mature_lymphocyte_probability(p: CellPrediction) -> float | None:
    small, dense = feature_probability(p, "small"), feature_probability(p, "dense chromatin")
    if small is None or dense is None:
        return None
    return row_probabilities(p).get("Lymphocyte", 0.0) * small * dense


def _small_mature_lymphocytes(sample: SampleCells) -> Measured:
    lymphocytes = sample.row("Lymphocyte")
    mature = [c.ref for c in lymphocytes
              if has_feature(c.prediction, "small") and has_feature(c.prediction, "dense chromatin")]
    assessed = any(has_feature(c.prediction, "small") is not None for c in lymphocytes) or not lymphocytes
    expected = _expected_share(sample, _small_mature_lymphocyte_probability)
    return Measured(len(mature), len(sample.counted), tuple(mature), expected, assessed)


def _myeloid_looking(p: CellPrediction) -> bool | None:
    granules, cytoplasm = has_feature(p, "granules"), has_feature(p, "more cytoplasm")
    return None if granules is None and cytoplasm is None else bool(granules or cytoplasm)


def _lymphoid_looking(p: CellPrediction) -> bool | None:
    small, scant, granules = has_feature(p, "small"), has_feature(p, "scant cytoplasm"), has_feature(p, "granules")
    return None if None in (small, scant, granules) else small and scant and not granules


def _blasts_looking(looks: Callable[[CellPrediction], bool | None]) -> Callable[[SampleCells], Measured]:
    def measure(sample: SampleCells) -> Measured:
        blasts = sample.row(BLAST)
        calls = [(c.ref, looks(c.prediction)) for c in blasts]
        assessed = any(call is not None for _, call in calls)
        return Measured(sum(bool(call) for _, call in calls), len(blasts),
                        tuple(ref for ref, call in calls if call), None, assessed)

    return measure


@dataclass(frozen=True)
class Measure:
    """A number the rules test: what it counts, out of what, in what unit."""

    name: str
    counts: str
    unit: str
    compute: Callable[[SampleCells], Measured]


MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure("white cells counted", "white cells in the differential (smudge and unidentified cells aside)",
                "cells", lambda sample: Measured(len(sample.counted), None, ())),
        Measure("blasts", "cells called blast (a `Blast` type or a suspected blast), % of white cells counted", "%",
                _type_share(BLAST)),
        Measure("immature granulocytes", "`Immature granulocyte` cells (promyelocytes, myelocytes, "
                "metamyelocytes), % of white cells counted", "%", _type_share("Immature granulocyte")),
        Measure("eosinophils", "`Eosinophil` cells, % of white cells counted", "%", _type_share("Eosinophil")),
        Measure("basophils", "`Basophil` cells, % of white cells counted", "%", _type_share("Basophil")),
        Measure("atypical lymphocytes", "lymphocytes whose verdict is `atypical, review`, % of lymphocytes", "%",
                _atypical_lymphocytes),
        Measure("smudge cells", "`Smudge` cells, % of white cells seen (counted + smudge)", "%", _smudge_cells),
        Measure("small mature lymphocytes", "lymphocytes that are small with dense chromatin, % of white cells "
                "counted", "%", _small_mature_lymphocytes),
        Measure("myeloid-looking blasts", "blasts with granules (Auer-rod-like granularity) or more cytoplasm "
                "(low N:C ratio), % of blasts", "%", _blasts_looking(_myeloid_looking)),
        Measure("lymphoid-looking blasts", "blasts that are small, with scant cytoplasm (high N:C ratio) and no "
                "granules, % of blasts", "%", _blasts_looking(_lymphoid_looking)),
    )
}


# ------------------------------------------------------------------------------------------------------ the rules
@dataclass(frozen=True)
class Rule:
    """One row of the rules table: ``conclusion`` follows (in part) when ``measure`` ``op`` ``threshold`` holds.

    ``role`` says how the row is used: ``gate`` (below it nothing is suggested), ``flag`` (reported when it holds),
    ``criterion`` (required for the suggestion ``conclusion``), ``supporting`` (listed with it, not required),
    ``lineage`` (names the lineage of an acute leukemia).
    """

    conclusion: str
    role: str
    measure: str
    op: str
    threshold: float
    basis: str

    @property
    def test(self) -> str:
        unit = MEASURES[self.measure].unit
        return f"{self.op} {self.threshold:g}{'%' if unit == '%' else ' ' + unit}"


RULES: tuple[Rule, ...] = (
    Rule("not enough cells", "gate", "white cells counted", "<", MIN_WHITE_CELLS,
         "routine 100-cell manual differential; the 95% interval at 20% blasts is 13.3-28.9% at 100 cells, "
         "11.2-33.0% at 50"),
    Rule("blasts present", "flag", "blasts", ">", 0, "no blasts in normal adult blood"),
    Rule("left shift", "flag", "immature granulocytes", ">", 2,
         "healthy adults have under 1% (analyser reference ranges); 2% allows a misread cell in 100"),
    Rule("atypical lymphocytes", "flag", "atypical lymphocytes", ">", 10,
         "a review threshold (Hoagland's criterion for infectious mononucleosis: at least 10% atypical lymphocytes)"),
    Rule("smudge cells", "flag", "smudge cells", ">", 5,
         "a review threshold: few in normal smears, often 10-30% in CLL"),
    Rule("eosinophilia", "flag", "eosinophils", ">", 6, "adult reference range 1-6%"),
    Rule("basophilia", "flag", "basophils", ">", 2, "adult reference range 0-2%"),
    Rule("acute leukemia", "criterion", "blasts", ">=", 20, "WHO 2022 (5th edition) and ICC 2022: at least 20% blasts"),
    Rule("acute leukemia", "lineage", "myeloid-looking blasts", ">", 50,
         "myeloid: granules, Auer rods, more cytoplasm (morphology only; lineage needs immunophenotyping)"),
    Rule("acute leukemia", "lineage", "lymphoid-looking blasts", ">", 50,
         "lymphoid: small, scant cytoplasm, no granules (morphology only)"),
    Rule("CML", "criterion", "immature granulocytes", ">=", 10,
         "left shift with a myelocyte bulge (myelocytes and metamyelocytes, typically 10-30% in chronic phase)"),
    Rule("CML", "criterion", "basophils", ">", 2, "basophilia, in nearly every CML"),
    Rule("CML", "criterion", "blasts", "<", 10, "few blasts: chronic phase under 10% (ICC 2022 accelerated phase "
         "10-19%, blast phase 20% or more)"),
    Rule("CML", "supporting", "eosinophils", ">", 6, "eosinophilia, common in CML"),
    Rule("CLL", "criterion", "small mature lymphocytes", ">", 50,
         "a majority of small mature lymphocytes with dense (clumped) chromatin"),
    Rule("CLL", "criterion", "smudge cells", ">", 5, "smudge cells, typical of CLL's fragile lymphocytes"),
)
"""Every rule and threshold of the interpretation; docs/interpretation.md holds the same table
(:func:`markdown_tables`). Suggestions are tried in the order they first appear: acute leukemia, CML, CLL."""
SUGGESTIONS = tuple(dict.fromkeys(r.conclusion for r in RULES if r.role == "criterion"))
NO_EVIDENCE = "no evidence of leukemia"
NOT_ENOUGH_CELLS = "not enough cells"
LINEAGES = {"myeloid-looking blasts": "myeloid", "lymphoid-looking blasts": "lymphoid"}


@dataclass(frozen=True)
class Conflict:
    """A cell of ``type`` showing every one of ``features`` (feature, present) contradicts its type."""

    type: str
    features: tuple[tuple[str, bool], ...]
    reason: str


CONFLICTS: tuple[Conflict, ...] = (
    Conflict("Lymphocyte", (("eosinophil or basophil granules", True),),
             "round granules are an eosinophil's, coarse ones a basophil's"),
    Conflict("Monocyte", (("eosinophil or basophil granules", True),),
             "round granules are an eosinophil's, coarse ones a basophil's"),
    Conflict("Neutrophil", (("round unsegmented nucleus", True), ("fine chromatin", True)),
             "a round nucleus with fine chromatin is a blast's or a monocyte's, not a neutrophil's"),
    Conflict("Neutrophil", (("granules", False),), "neutrophils have fine granules"),
    Conflict("Eosinophil", (("granules", False),), "the type is its granules"),
    Conflict("Basophil", (("granules", False),), "the type is its granules"),
)
"""Types and the attribute values that contradict them (WBCAtt's annotations: 99% of its neutrophils, eosinophils
and basophils have granules, none of its lymphocytes or monocytes round or coarse ones)."""


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def markdown_tables() -> dict[str, str]:
    """:data:`RULES`, :data:`MEASURES`, :data:`CONFLICTS` and :data:`FEATURES` as the Markdown tables of
    docs/interpretation.md (a test checks that the docs hold them verbatim)."""
    return {
        "rules": _markdown(("conclusion", "role", "measure", "test", "basis"),
                           [(r.conclusion, r.role, r.measure, f"`{r.test}`", r.basis) for r in RULES]),
        "measures": _markdown(("measure", "what it counts", "unit"),
                              [(m.name, m.counts, m.unit) for m in MEASURES.values()]),
        "conflicts": _markdown(("type", "contradicting attributes", "why"), [
            (c.type, ", ".join(f if present else f"no {f}" for f, present in c.features), c.reason)
            for c in CONFLICTS]),
        "features": _markdown(("feature", "attribute values"), [
            (name, " or ".join(f"`{a}` {'/'.join(values)}" for a, values in pairs))
            for name, pairs in FEATURES.items()]),
    }


# ------------------------------------------------------------------------------------------------------ evaluation
MET, BORDERLINE, POSSIBLE, NOT_MET, NOT_ASSESSED = "met", "borderline", "possible", "not met", "not assessed"
SUPPORTED, NOT_SUPPORTED = "supported", "not supported"
_PASSES = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b}


@dataclass(frozen=True)
class Finding:
    """A rule tested on the sample: what its measure counted, and the status: ``met`` (the whole 95% interval
    passes the threshold), ``borderline`` (the count passes, the interval straddles it), ``possible`` (only the
    interval reaches it), ``not met`` or ``not assessed`` (e.g. no blast score). A plain count: met or not met."""

    rule: Rule
    measured: Measured
    status: str

    @property
    def holds(self) -> bool:
        return self.status in (MET, BORDERLINE)


def evaluate(rule: Rule, sample: SampleCells) -> Finding:
    """Test one rule of :data:`RULES` on a sample."""
    m = MEASURES[rule.measure].compute(sample)
    passes = _PASSES[rule.op]
    point = float(m.count) if m.total is None else m.percent
    low, high = (point, point) if m.total is None else m.interval
    farthest, nearest = (low, high) if rule.op != "<" else (high, low)  # the interval's ends, from passing
    if not m.assessed:
        status = NOT_ASSESSED
    elif m.total == 0 or not passes(nearest, rule.threshold):
        status = NOT_MET
    elif passes(farthest, rule.threshold):
        status = MET
    else:
        status = BORDERLINE if passes(point, rule.threshold) else POSSIBLE
    return Finding(rule, m, status)


@dataclass(frozen=True)
class Suggestion:
    """A conclusion about the sample and the findings behind it; ``status``: ``supported`` (every required criterion
    met, and still passed on the model's expected counts), ``possible`` (none failed, some only borderline, within
    the interval or not assessed) or ``not supported``."""

    name: str
    status: str
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = ()


def _expected_fails(f: Finding) -> bool:
    expected = f.measured.expected_percent
    return expected is not None and not _PASSES[f.rule.op](expected, f.rule.threshold)


def suggest(name: str, sample: SampleCells) -> Suggestion:
    """Test the criteria of one suggestion of :data:`RULES` (``acute leukemia``, ``CML``, ``CLL``); an acute
    leukemia is named by the lineage its blasts look like."""
    findings = tuple(evaluate(r, sample) for r in RULES if r.conclusion == name and r.role != "lineage")
    required = [f for f in findings if f.rule.role == "criterion"]
    statuses = {f.status for f in required}
    notes = [f"{f.rule.measure} not assessed by this cell model" for f in required if f.status == NOT_ASSESSED]
    if statuses == {MET}:
        status = SUPPORTED
        for f in filter(_expected_fails, required):  # the model's own uncertainty: a call on cells it doubted
            status = POSSIBLE
            notes.append(f"on the expected counts from the model's probabilities, {f.rule.measure} are "
                         f"{f.measured.expected_percent:.1f}%, not {f.rule.test}: the call rests on uncertain cells")
    elif NOT_MET in statuses or statuses == {NOT_ASSESSED}:
        status = NOT_SUPPORTED
    else:
        status = POSSIBLE
    if name == "acute leukemia" and status != NOT_SUPPORTED:
        lineage = tuple(evaluate(r, sample) for r in RULES if r.conclusion == name and r.role == "lineage")
        named = [LINEAGES[f.rule.measure] for f in lineage if f.holds]
        name = f"acute leukemia, {named[0] if named else 'lineage unclear'}"
        findings += lineage
    return Suggestion(name, status, findings, tuple(notes))


@dataclass(frozen=True)
class Contradiction:
    """A cell whose type and attributes disagree (``kind`` ``cell``), or a suggestion the evidence only half
    supports (``kind`` ``suggestion``)."""

    kind: str
    reason: str
    cell: CellRef | None = None
    type: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()


def cell_contradictions(sample: SampleCells) -> list[Contradiction]:
    """Every counted cell whose attributes contradict its type (:data:`CONFLICTS`); blasts are not checked."""
    found = []
    for c in sample.counted:
        p = c.prediction
        for conflict in CONFLICTS:
            if c.row != conflict.type or any(has_feature(p, f) is not present for f, present in conflict.features):
                continue
            names = dict.fromkeys(a for f, _ in conflict.features for a, _ in FEATURES[f] if a in p.attributes)
            values = tuple((a, p.attributes[a].value) for a in names)
            shown = ", ".join(f"{a} {v}" for a, v in values)
            found.append(Contradiction("cell", f"typed {c.row}, but {shown}: {conflict.reason}", c.ref, c.row, values))
    return found


def half_supported(suggestion: Suggestion) -> Contradiction:
    """The contradiction of a suggestion that is only possible: the criteria not fully met."""
    shaky = [f for f in suggestion.findings if f.rule.role == "criterion" and f.status != MET]
    why = [f"{f.rule.measure} {finding_text(f)}, {f.status} for {f.rule.test}" for f in shaky
           if f.status != NOT_ASSESSED] + list(suggestion.notes)
    return Contradiction("suggestion", f"{suggestion.name} is only half supported: " + "; ".join(why))


def finding_text(f: Finding) -> str:
    """``12.0% (95% CI 7.0-19.8, 12/100)``, or ``48 cells`` for a plain count."""
    m = f.measured
    if m.total is None:
        return f"{m.count} cells"
    low, high = m.interval
    return f"{m.percent:.1f}% (95% CI {low:.1f}-{high:.1f}, {m.count}/{m.total})"


@dataclass(frozen=True)
class Interpretation:
    """A sample read as a hematologist would: ``white_cells`` counted (in the 100%); ``rows``, the differential
    (type -> what was counted, most first; blasts a row of their own when the cell model can call them); the
    ``blasts`` and ``smudge`` findings; the ``unidentified`` cells (out of the 100% like smudge cells); the ``flags``
    that hold; the ``suggestion`` and the others the evidence supports or leaves possible (``also_possible``);
    ``adjusted_blasts``, the blast share adjusted for the blast call's error rates, reported beside the counted one
    and read by no rule (None: not computed, :func:`adjusted_blasts`)."""

    white_cells: int
    rows: dict[str, Measured]
    blasts: Finding
    smudge: Finding
    unidentified: tuple[CellRef, ...]
    flags: tuple[Finding, ...]
    suggestion: Suggestion
    also_possible: tuple[Suggestion, ...]
    contradictions: tuple[Contradiction, ...]
    notes: tuple[str, ...]
    minimum_cells: int = MIN_WHITE_CELLS
    disclaimer: str = DISCLAIMER
    adjusted_blasts: AdjustedShare | None = None


def _rule(conclusion: str) -> Rule:
    return next(r for r in RULES if r.conclusion == conclusion)


def interpret(fields: Sequence[tuple[str, AnalyzedField]], *, minimum_cells: int = MIN_WHITE_CELLS,
              blast_call: BlastCallRates | None = None) -> Interpretation:
    """Read a sample's analysed fields (each named by its output stem) into an :class:`Interpretation`.

    Args:
        blast_call: the blast scorer's sensitivity and false-positive rate (``CellReader.blast_call_rates``), for
            the secondary adjusted blast % (:attr:`Interpretation.adjusted_blasts`); the rules test the counted one.
    """
    sample = sort_cells(fields)
    counted = len(sample.counted)
    order = (*sample.classes, *(c.row for c in sample.counted))
    names = [n for n in dict.fromkeys(order) if n != BLAST or sample.blasts_assessed]
    if sample.blasts_assessed and BLAST not in names:
        names.append(BLAST)
    rows = {n: _type_share(n)(sample) for n in names}
    rows = dict(sorted(rows.items(), key=lambda item: -item[1].count))  # most first, ties in model order
    flags = tuple(f for f in (evaluate(r, sample) for r in RULES if r.role == "flag") if f.holds)
    unidentified = tuple(c.ref for c in sample.row(UNIDENTIFIED))
    notes = []
    if unidentified:
        notes.append(f"{len(unidentified)} white cells not identified by the cell model (kept out of the 100%)")
    if counted and not sample.blasts_assessed:
        notes.append("this cell model does not call blasts (no blast score, no Blast class): blasts not assessed")
    if minimum_cells <= counted < REFERENCE_WHITE_CELLS:
        notes.append(f"{counted} white cells counted, fewer than the {REFERENCE_WHITE_CELLS} of a reference "
                     "differential (CLSI H20-A2): the intervals are wide")
    gate = evaluate(replace(_rule(NOT_ENOUGH_CELLS), threshold=minimum_cells), sample)
    candidates = [] if gate.holds else [suggest(name, sample) for name in SUGGESTIONS]
    ranked = [s for s in candidates if s.status == SUPPORTED] + [s for s in candidates if s.status == POSSIBLE]
    contradictions = cell_contradictions(sample)
    if gate.holds:
        suggestion = Suggestion(NOT_ENOUGH_CELLS, SUPPORTED, (gate,), (
            f"{counted} white cells counted; at least {minimum_cells} are needed to suggest anything",))
    elif ranked:
        suggestion = ranked[0]
        if suggestion.status == POSSIBLE:
            contradictions.insert(0, half_supported(suggestion))
    else:  # without a blast score an acute leukemia cannot be excluded
        evidence = tuple(f for s in candidates for f in s.findings if f.rule.role == "criterion")
        unseen = () if sample.blasts_assessed else ("blasts not assessed: an acute leukemia is not excluded",)
        suggestion = Suggestion(NO_EVIDENCE, POSSIBLE if unseen else SUPPORTED, evidence, unseen)
    return Interpretation(
        counted, rows, evaluate(_rule("blasts present"), sample), evaluate(_rule("smudge cells"), sample),
        unidentified, flags, suggestion, tuple(ranked[1:]), tuple(contradictions), tuple(notes), minimum_cells,
        adjusted_blasts=adjusted_blasts(sample, blast_call),
    )
