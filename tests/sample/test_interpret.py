"""The sample interpretation on samples built cell by cell with the real records: intervals against known values, each
rule firing and not firing, the secondary blast % adjusted for the blast call's error rates (beside the counted one
the rules test), the not-enough-cells path, the docs' tables against the code's, the JSON schema."""

import dataclasses
from pathlib import Path

import pytest

from leukolens.models.blast import BlastCallRates
from leukolens.predict.output import validate
from leukolens.predict.results import AnalyzedField, AttributePrediction, CellPrediction, PredictedCell
from leukolens.records import Box, BoxFormat
from leukolens.sample import format_summary, interpret, interpretation_json, summary_json, wilson_interval
from leukolens.sample.differential import differential
from leukolens.sample.interpret import (
    BORDERLINE,
    CONFLICTS,
    FEATURES,
    MEASURES,
    MET,
    NOT_ASSESSED,
    NOT_MET,
    NOT_WHITE,
    POSSIBLE,
    RULES,
    SUPPORTED,
    Rule,
    adjusted_share,
    evaluate,
    markdown_tables,
    rogan_gladen,
    row_probabilities,
    sort_cells,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
PBC = ("Basophil", "Eosinophil", "Erythroblast", "Immature granulocyte", "Lymphocyte", "Monocyte", "Neutrophil")
# What WBCAtt annotators say of a typical cell of each type (the commonest values in its training set).
TYPICAL = {
    "Neutrophil": dict(cell_size="big", nucleus_shape="segmented-bilobed", nuclear_cytoplasmic_ratio="low",
                       chromatin_density="densely", granule_type="small", granule_colour="pink", granularity="yes"),
    "Lymphocyte": dict(cell_size="small", nucleus_shape="unsegmented-round", nuclear_cytoplasmic_ratio="high",
                       chromatin_density="densely", granule_type="nil", granule_colour="nil", granularity="no"),
    "Monocyte": dict(cell_size="big", nucleus_shape="unsegmented-indented", nuclear_cytoplasmic_ratio="low",
                     chromatin_density="loosely", granule_type="nil", granule_colour="nil", granularity="no"),
    "Eosinophil": dict(cell_size="big", nucleus_shape="segmented-bilobed", nuclear_cytoplasmic_ratio="low",
                       chromatin_density="densely", granule_type="round", granule_colour="red", granularity="yes"),
    "Basophil": dict(cell_size="small", nucleus_shape="irregular", nuclear_cytoplasmic_ratio="low",
                     chromatin_density="densely", granule_type="coarse", granule_colour="purple", granularity="yes"),
    "Immature granulocyte": dict(cell_size="big", nucleus_shape="unsegmented-indented",
                                 nuclear_cytoplasmic_ratio="low", chromatin_density="loosely", granule_type="small",
                                 granule_colour="pink", granularity="yes"),
}
MYELOBLAST = dict(cell_size="big", nucleus_shape="unsegmented-round", nuclear_cytoplasmic_ratio="high",
                  chromatin_density="loosely", granule_type="small", granule_colour="purple", granularity="yes")
LYMPHOBLAST = dict(cell_size="small", nucleus_shape="unsegmented-round", nuclear_cytoplasmic_ratio="high",
                   chromatin_density="loosely", granule_type="nil", granule_colour="nil", granularity="no")
UNCLEAR_BLAST = dict(cell_size="big", nucleus_shape="unsegmented-round", nuclear_cytoplasmic_ratio="high",
                     chromatin_density="loosely", granule_type="nil", granule_colour="nil", granularity="no")


def prediction(label, *, attributes=None, blast=None, suspected=False, atypical=False, probabilities=None,
               classes=PBC):
    """A cell model reading: the label at probability 1 unless ``probabilities`` are given; attributes certain."""
    attributes = TYPICAL.get(label, {}) if attributes is None else attributes
    probabilities = probabilities or {c: float(c == label) for c in dict.fromkeys((*classes, label))}
    return CellPrediction(
        label, probabilities[label], probabilities,
        {name: AttributePrediction(value, 1.0, {value: 1.0}) for name, value in attributes.items()},
        atypicality=0.9 if atypical else 0.1, atypical=atypical, blast_probability=blast, blast_suspected=suspected,
    )


def field(stem, predictions, *, detector_classes=None):
    """A field of cells (prediction None: a cell the cell model did not read) with their detector classes."""
    detector_classes = detector_classes or ["WBC"] * len(predictions)
    cells = [
        PredictedCell(Box((0, 0, 10, 10), BoxFormat.XYXY), p.label if p else kind, number=i + 1, detector_class=kind,
                      detector_score=0.9, prediction=p)
        for i, (p, kind) in enumerate(zip(predictions, detector_classes))
    ]
    return stem, AnalyzedField(f"{stem}.jpg", 100, 100, cells=cells)


def sample(counts, *, blast_attributes=LYMPHOBLAST, scored=True, per_field=50, **extra):
    """Fields holding ``counts`` (type -> cells; ``Blast`` -> suspected blasts typed Lymphocyte) with a blast score
    on every cell when ``scored``; ``extra`` adds cells: name -> list of predictions."""
    cells = []
    for name, n in counts.items():
        for _ in range(n):
            if name == "Blast":
                cells.append(prediction("Lymphocyte", attributes=blast_attributes, blast=0.95, suspected=True))
            else:
                cells.append(prediction(name, blast=0.0 if scored else None))
    for more in extra.values():
        cells += more
    return [field(f"f{i // per_field}", cells[i:i + per_field]) for i in range(0, len(cells), per_field)]


DETECTOR = {"checkpoint": "detector.pt", "score_threshold": 0.5, "classes": ["WBC", "RBC", "Platelets"]}
NORMAL = {"Neutrophil": 120, "Lymphocyte": 56, "Monocyte": 14, "Eosinophil": 6, "Basophil": 2,
          "Immature granulocyte": 2}


# ------------------------------------------------------------------------------------------------------ intervals
# Known values: Wilson's score interval without continuity correction, as scipy's
# binomtest(k, n).proportion_ci(method="wilson") and Newcombe (1998, Statistics in Medicine 17:857) give them.
@pytest.mark.parametrize(("count", "total", "low", "high"), [
    (0, 100, 0.0, 0.03699),  # none seen in 100 cells still allows up to 3.7%
    (20, 100, 0.13337, 0.28883),
    (100, 100, 0.96301, 1.0),
    (1, 10, 0.01788, 0.40415),
    (40, 200, 0.15045, 0.26086),
])
def test_wilson_interval_matches_known_values(count, total, low, high):
    assert wilson_interval(count, total) == pytest.approx((low, high), abs=1e-5)


def test_wilson_interval_of_nothing_is_everything():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_percentages_and_intervals_come_from_counts_not_rounded_percents():
    # 1 of 3: 33.3%; its interval from 1/3, not from 33%
    reading = interpret(sample({"Neutrophil": 2, "Lymphocyte": 1}), minimum_cells=1)
    m = reading.rows["Lymphocyte"]
    assert m.percent == pytest.approx(100 / 3)
    assert m.interval == pytest.approx(tuple(100 * v for v in wilson_interval(1, 3)))


# ---------------------------------------------------------------------------------------------------- the differential
def test_blasts_are_their_own_row_whatever_their_type_and_smudge_and_unread_cells_stay_out_of_the_100():
    cells = [
        prediction("Neutrophil", blast=0.1), prediction("Lymphocyte", blast=0.9, suspected=True),
        prediction("Blast", classes=(*PBC, "Blast", "Smudge")), prediction("Smudge", classes=(*PBC, "Blast", "Smudge")),
        prediction("Lymphocyte", blast=0.2), None, None,
    ]
    reading = interpret([field("a", cells, detector_classes=["WBC"] * 6 + ["RBC"])], minimum_cells=1)
    assert reading.white_cells == 4
    assert reading.rows["Blast"].count == 2 and reading.rows["Blast"].total == 4
    assert reading.rows["Lymphocyte"].count == 1 and reading.rows["Neutrophil"].count == 1
    assert "Smudge" not in reading.rows and sum(m.count for m in reading.rows.values()) == 4
    assert [(c.field, c.cell) for c in reading.blasts.measured.cells] == [("a", 2), ("a", 3)]
    assert reading.smudge.measured.count == 1 and reading.smudge.measured.total == 5
    assert [(c.field, c.cell) for c in reading.unidentified] == [("a", 6)]  # the red cell (7) is no white cell
    assert list(reading.rows)[:1] == ["Blast"] and reading.rows["Basophil"].count == 0  # every class, most first
    assert "1 white cells not identified" in reading.notes[0]


def test_expected_counts_spread_each_cell_over_its_probabilities():
    unsure = prediction("Neutrophil", blast=0.5, probabilities={"Neutrophil": 0.6, "Lymphocyte": 0.4})
    sure = prediction("Lymphocyte", blast=0.0, probabilities={"Neutrophil": 0.0, "Lymphocyte": 1.0})
    assert row_probabilities(unsure) == pytest.approx({"Blast": 0.5, "Neutrophil": 0.3, "Lymphocyte": 0.2})
    reading = interpret([field("a", [unsure, sure])], minimum_cells=1)
    assert reading.rows["Blast"].expected_percent == pytest.approx(25.0)
    assert reading.rows["Lymphocyte"].expected_percent == pytest.approx(60.0)
    assert reading.rows["Neutrophil"].count == 1 and reading.rows["Neutrophil"].expected_percent == pytest.approx(15)


def test_without_a_blast_score_blasts_are_not_assessed_nor_zero():
    reading = interpret(sample(NORMAL, scored=False))
    assert "Blast" not in reading.rows and reading.blasts.status == NOT_ASSESSED
    assert any("does not call blasts" in note for note in reading.notes)
    assert reading.suggestion.name == "no evidence of leukemia" and reading.suggestion.status == POSSIBLE
    assert reading.suggestion.notes == ("blasts not assessed: an acute leukemia is not excluded",)
    assert interpretation_json(reading)["blasts"]["assessed"] is False


# ------------------------------------------------------------------------------------------------------ flags
FLAG_CASES = {
    # flag: (a 200-cell sample where it fires, the normal sample where it does not)
    "blasts present": {**NORMAL, "Neutrophil": 119, "Blast": 1},
    "left shift": {**NORMAL, "Neutrophil": 110, "Immature granulocyte": 12},
    "eosinophilia": {**NORMAL, "Neutrophil": 106, "Eosinophil": 20},
    "basophilia": {**NORMAL, "Neutrophil": 112, "Basophil": 10},
}


@pytest.mark.parametrize("flag", FLAG_CASES)
def test_each_flag_fires_on_its_sample_and_not_on_a_normal_one(flag):
    assert sum(FLAG_CASES[flag].values()) == 200
    fired = {f.rule.conclusion: f for f in interpret(sample(FLAG_CASES[flag])).flags}
    assert set(fired) == {flag}
    assert fired[flag].measured.count == FLAG_CASES[flag].get(
        {"blasts present": "Blast", "left shift": "Immature granulocyte", "eosinophilia": "Eosinophil",
         "basophilia": "Basophil"}[flag])
    assert len(fired[flag].measured.cells) == fired[flag].measured.count
    assert interpret(sample(NORMAL)).flags == ()


def test_a_flag_inside_the_reference_range_by_its_interval_is_borderline():
    # 7% eosinophils of 200: over 6%, but the interval (4.2-11.4%) reaches into the reference range
    finding = evaluate(next(r for r in RULES if r.conclusion == "eosinophilia"),
                       sort_cells(sample({**NORMAL, "Neutrophil": 112, "Eosinophil": 14})))
    assert finding.status == BORDERLINE and finding.holds
    strong = evaluate(finding.rule, sort_cells(sample({**NORMAL, "Neutrophil": 96, "Eosinophil": 30})))
    assert strong.status == MET


def test_atypical_lymphocytes_flag_counts_lymphocytes_flagged_atypical():
    atypical = [prediction("Lymphocyte", blast=0.0, atypical=True) for _ in range(8)]
    fired = {f.rule.conclusion: f for f in interpret(sample({**NORMAL, "Lymphocyte": 48}, atypical=atypical)).flags}
    assert fired["atypical lymphocytes"].measured.count == 8 and fired["atypical lymphocytes"].measured.total == 56
    few = [prediction("Lymphocyte", blast=0.0, atypical=True) for _ in range(2)]
    fired = {f.rule.conclusion for f in interpret(sample({**NORMAL, "Lymphocyte": 54}, atypical=few)).flags}
    assert "atypical lymphocytes" not in fired  # 2 of 56 lymphocytes: 3.6%


def test_smudge_cells_flag_needs_a_model_that_sees_smudge_cells():
    classes = (*PBC, "Smudge")
    smudge = [prediction("Smudge", blast=0.0, classes=classes) for _ in range(20)]
    fired = {f.rule.conclusion: f for f in interpret(sample(NORMAL, smudge=smudge)).flags}
    assert fired["smudge cells"].measured.count == 20 and fired["smudge cells"].measured.total == 220
    reading = interpret(sample(NORMAL))
    assert reading.smudge.status == NOT_ASSESSED and "smudge cells" not in {f.rule.conclusion for f in reading.flags}


# ------------------------------------------------------------------------------------------------------ suggestions
def test_a_normal_sample_shows_no_evidence_of_leukemia():
    reading = interpret(sample(NORMAL))
    assert reading.suggestion.name == "no evidence of leukemia" and reading.suggestion.status == SUPPORTED
    assert {f.rule.conclusion for f in reading.suggestion.findings} == {"acute leukemia", "CML", "CLL"}
    assert reading.also_possible == () and reading.contradictions == ()


@pytest.mark.parametrize(("blast_attributes", "lineage", "myeloid", "lymphoid"), [
    (MYELOBLAST, "myeloid", MET, NOT_MET),
    (LYMPHOBLAST, "lymphoid", NOT_MET, MET),
    (UNCLEAR_BLAST, "lineage unclear", NOT_MET, NOT_MET),
])
def test_acute_leukemia_supported_with_its_lineage_from_blast_morphology(blast_attributes, lineage, myeloid, lymphoid):
    reading = interpret(sample({**NORMAL, "Neutrophil": 40, "Lymphocyte": 36, "Blast": 100},
                               blast_attributes=blast_attributes))
    assert reading.suggestion.name == f"acute leukemia, {lineage}" and reading.suggestion.status == SUPPORTED
    findings = {f.rule.measure: f for f in reading.suggestion.findings}
    assert findings["blasts"].measured.count == 100 and findings["blasts"].measured.total == 200
    assert findings["blasts"].status == MET and len(findings["blasts"].measured.cells) == 100
    assert findings["myeloid-looking blasts"].status == myeloid
    assert findings["lymphoid-looking blasts"].status == lymphoid
    assert reading.blasts.measured.percent == 50.0


def test_acute_leukemia_near_the_threshold_is_only_possible_and_says_so():
    # 22% of 200: over 20%, but the interval (16.8-28.2%) reaches below
    reading = interpret(sample({**NORMAL, "Neutrophil": 76, "Lymphocyte": 56, "Blast": 44}))
    assert reading.suggestion.name.startswith("acute leukemia") and reading.suggestion.status == POSSIBLE
    (half,) = [c for c in reading.contradictions if c.kind == "suggestion"]
    assert "only half supported" in half.reason and "22.0% (95% CI 16.8-28.2, 44/200)" in half.reason
    # 16%: under 20%, the interval still reaches it
    reading = interpret(sample({**NORMAL, "Neutrophil": 88, "Blast": 32}))
    assert reading.suggestion.name.startswith("acute leukemia") and reading.suggestion.status == POSSIBLE
    # 8%: under 20% whole
    assert interpret(sample({**NORMAL, "Neutrophil": 104, "Blast": 16})).suggestion.name == "no evidence of leukemia"


def test_a_call_resting_on_uncertain_cells_is_downgraded_by_the_expected_counts():
    doubtful = [prediction("Lymphocyte", attributes=LYMPHOBLAST, blast=0.52, suspected=True) for _ in range(60)]
    reading = interpret(sample({**NORMAL, "Neutrophil": 60}, doubtful=doubtful))
    assert reading.rows["Blast"].count == 60 and reading.blasts.measured.percent == 30.0
    assert reading.suggestion.status == POSSIBLE
    assert any("expected counts" in note for note in reading.suggestion.notes)


def test_cml_left_shift_with_basophilia_and_few_blasts():
    cml = {"Neutrophil": 180, "Immature granulocyte": 80, "Basophil": 30, "Eosinophil": 30, "Lymphocyte": 60,
           "Monocyte": 16, "Blast": 4}
    reading = interpret(sample(cml))
    assert reading.suggestion.name == "CML" and reading.suggestion.status == SUPPORTED
    findings = {(f.rule.role, f.rule.measure): f.status for f in reading.suggestion.findings}
    assert findings == {("criterion", "immature granulocytes"): MET, ("criterion", "basophils"): MET,
                        ("criterion", "blasts"): MET, ("supporting", "eosinophils"): BORDERLINE}
    assert {f.rule.conclusion for f in reading.flags} == {"blasts present", "left shift", "basophilia",
                                                          "eosinophilia"}
    no_basophils = interpret(sample({**cml, "Basophil": 0, "Neutrophil": 210}))
    assert no_basophils.suggestion.name == "no evidence of leukemia"


def test_cll_small_mature_lymphocytes_and_smudge_cells():
    classes = (*PBC, "Smudge")
    lymphocytes = [prediction("Lymphocyte", blast=0.0, classes=classes) for _ in range(150)]
    smudge = [prediction("Smudge", blast=0.0, classes=classes) for _ in range(40)]
    others = [prediction("Neutrophil", blast=0.0, classes=classes) for _ in range(50)]
    reading = interpret(sample({}, lymphocytes=lymphocytes, smudge=smudge, others=others))
    assert reading.suggestion.name == "CLL" and reading.suggestion.status == SUPPORTED
    findings = {f.rule.measure: f for f in reading.suggestion.findings}
    assert findings["small mature lymphocytes"].measured.count == 150 and findings["smudge cells"].status == MET
    # large lymphocytes with open chromatin are not CLL's
    large = dict(TYPICAL["Lymphocyte"], cell_size="big", chromatin_density="loosely")
    big = [prediction("Lymphocyte", attributes=large, blast=0.0, classes=classes) for _ in range(150)]
    assert interpret(sample({}, lymphocytes=big, smudge=smudge, others=others)).suggestion.name != "CLL"
    # a model without a smudge class: CLL only possible, and the contradiction says why
    plain = [prediction("Lymphocyte", blast=0.0) for _ in range(150)]
    reading = interpret(sample({"Neutrophil": 50}, lymphocytes=plain))
    assert reading.suggestion.name == "CLL" and reading.suggestion.status == POSSIBLE
    assert any("smudge cells not assessed" in c.reason for c in reading.contradictions)


# ---------------------------------------------------------------------------------------------------- adjusted blast %
RATES = BlastCallRates(45, 50, 25, 500)  # TPR 0.90, FPR 0.05


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.2, 0.5, 0.8, 1.0])
def test_known_rates_give_back_the_true_fraction(fraction):
    # a call with TPR 0.9 and FPR 0.05 calls f x 0.9 + (1 - f) x 0.05 of a sample with f blasts
    observed = fraction * 0.9 + (1 - fraction) * 0.05
    assert rogan_gladen(observed, 0.9, 0.05) == pytest.approx(fraction)
    count = round(200 * observed)
    assert count == pytest.approx(200 * observed)  # these fractions give whole counts of 200
    assert adjusted_share(count, 200, RATES).share == pytest.approx(fraction)


def test_adjustment_is_clipped_to_0_and_1():
    assert rogan_gladen(0.02, 0.9, 0.05) == 0.0  # fewer called than the false positives alone
    assert rogan_gladen(0.95, 0.9, 0.05) == 1.0  # more called than a sample of blasts only gives
    assert adjusted_share(2, 200, RATES).share == 0.0 and adjusted_share(200, 200, RATES).share == 1.0


def test_no_adjustment_when_the_call_is_too_weak_or_there_is_nothing_to_adjust():
    weak = BlastCallRates(5, 20, 50, 500)  # TPR 0.25, FPR 0.10: 0.15 apart
    assert adjusted_share(40, 200, weak) is None
    assert adjusted_share(40, 200, weak, min_separation=0.1) is not None
    assert adjusted_share(0, 0, RATES) is None


def test_interval_grows_with_the_count_and_holds_the_estimate():
    previous = (0.0, 0.0)
    for count in range(0, 201, 5):
        a = adjusted_share(count, 200, RATES)
        assert 0 <= a.low <= a.share <= a.high <= 1, count
        assert a.low >= previous[0] and a.high >= previous[1], count
        previous = (a.low, a.high)
        # at least as wide as the counted share's interval mapped with the rates as measured
        low, high = wilson_interval(count, 200)
        assert a.low <= rogan_gladen(low, 0.9, 0.05) + 1e-12 and a.high >= rogan_gladen(high, 0.9, 0.05) - 1e-12


def test_interval_also_covers_the_rates_own_uncertainty():
    # the same rates from ten times fewer cells: a wider interval around the same estimate
    few = adjusted_share(60, 200, BlastCallRates(9, 10, 5, 100))
    many = adjusted_share(60, 200, BlastCallRates(90, 100, 50, 1000))
    assert few.share == pytest.approx(many.share)
    assert few.low < many.low and few.high > many.high
    # rates whose intervals overlap (3/4 against 1/4): the adjusted share could be anything
    overlapping = adjusted_share(60, 200, BlastCallRates(3, 4, 1, 4), min_separation=0.1)
    assert (overlapping.low, overlapping.high) == (0.0, 1.0)


def _blast_sample(blasts: int) -> list:
    """200 cells, ``blasts`` of them called blast, the rest a normal differential."""
    return sample({**NORMAL, "Neutrophil": 120 - blasts, "Blast": blasts})


def test_the_rules_test_the_counted_blast_percent_and_the_adjusted_one_is_only_reported():
    # 10 of 200 called blast, what false positives alone give at FPR 0.05: adjusted 0%, blasts present as counted
    fields = _blast_sample(10)
    reading = interpret(fields, blast_call=RATES)
    assert reading.blasts.measured.percent == 5.0 and reading.adjusted_blasts.share == 0.0
    assert reading.blasts.status == MET and "blasts present" in {f.rule.conclusion for f in reading.flags}
    assert dataclasses.replace(reading, adjusted_blasts=None) == interpret(fields)  # nothing else changes
    # 20 of 200 (10%) by a call that finds half the blasts: adjusted 16.7%, still no evidence of leukemia
    fields = _blast_sample(20)
    reading = interpret(fields, blast_call=BlastCallRates(50, 100, 10, 500))  # TPR 0.5, FPR 0.02
    assert reading.adjusted_blasts.share == pytest.approx((0.10 - 0.02) / 0.48)
    assert reading.blasts.measured.percent == 10.0 and reading.suggestion.name == "no evidence of leukemia"
    assert dataclasses.replace(reading, adjusted_blasts=None) == interpret(fields)


def test_no_adjusted_blast_percent_without_rates_with_a_blast_class_or_for_a_weak_call():
    assert interpret(_blast_sample(30)).adjusted_blasts is None
    assert interpret(_blast_sample(30), blast_call=BlastCallRates(5, 20, 50, 500)).adjusted_blasts is None  # 0.15
    classes = (*PBC, "Blast")
    typed = [prediction("Blast", classes=classes, blast=0.9, suspected=True) for _ in range(30)]
    own = interpret(sample({**NORMAL, "Neutrophil": 90}, typed=typed), blast_call=RATES)
    assert own.adjusted_blasts is None and own.blasts.measured.percent == 15.0
    assert interpret(sample(NORMAL, scored=False), blast_call=RATES).adjusted_blasts is None  # not assessed


def test_summary_carries_the_counted_blast_percent_and_the_adjusted_one_beside_it():
    fields = _blast_sample(44)
    reading = interpret(fields, blast_call=RATES)
    summary = summary_json(differential(fields), fields_read=len(fields), skipped=[], notes=[], detector=DETECTOR,
                           seconds=1.0, interpretation=reading)
    assert validate(summary, "summary") == []
    blasts = summary["interpretation"]["blasts"]
    assert (blasts["count"], blasts["total"], blasts["percent"]) == (44, 200, 22.0)
    assert (blasts["low"], blasts["high"]) == (16.8, 28.2)  # Wilson, from the counts
    adjusted = blasts.pop("adjusted")
    assert adjusted["percent"] == 20.0 and adjusted["low"] < 16.8 < 28.2 < adjusted["high"]  # (0.22 - 0.05) / 0.85
    assert {k: adjusted[k] for k in ("true_positive_rate", "blasts_called", "blasts", "false_positive_rate",
                                     "normals_called", "normals")} == {
        "true_positive_rate": 0.9, "blasts_called": 45, "blasts": 50, "false_positive_rate": 0.05,
        "normals_called": 25, "normals": 500}
    assert "left out" in adjusted["rates_from"] and "validation cells" in adjusted["rates_from"]
    assert validate(summary, "summary") == []  # written before the estimate existed: still valid
    evidence = {f["measure"]: f for f in summary["interpretation"]["suggestion"]["evidence"]}
    assert evidence["blasts"]["percent"] == 22.0 and "adjusted" not in evidence["blasts"]
    blasts["adjusted"] = adjusted
    text = format_summary(summary, "out")
    assert "blasts: 22.0% (95% CI 16.8-28.2, 44/200)" in text
    assert ("  adjusted for the blast call's error rates (not used by the rules): 20.0% (95% CI "
            in text) and "sensitivity 0.90 from 45/50 blast examples, false-positive rate 0.050 from 25/500" in text
    plain = interpretation_json(interpret(fields))["blasts"]
    assert plain["adjusted"] is None and plain["percent"] == 22.0
    blasts["adjusted"] = None
    assert "adjusted for" not in format_summary(summary, "out")


# ------------------------------------------------------------------------------------------------------ contradictions
def test_a_cell_whose_type_and_attributes_disagree_is_flagged():
    eosinophil_granules = dict(TYPICAL["Lymphocyte"], granule_type="round", granule_colour="red", granularity="yes")
    blast_like = dict(TYPICAL["Neutrophil"], nucleus_shape="unsegmented-round", chromatin_density="loosely")
    cells = [prediction("Lymphocyte", attributes=eosinophil_granules, blast=0.0),
             prediction("Neutrophil", attributes=blast_like, blast=0.0),
             prediction("Neutrophil", blast=0.0),  # typical: no contradiction
             prediction("Neutrophil", attributes=blast_like, blast=0.9, suspected=True)]  # a blast: not checked
    contradictions = [c for c in interpret([field("a", cells)], minimum_cells=1).contradictions if c.kind == "cell"]
    assert [(c.cell.cell, c.type) for c in contradictions] == [(1, "Lymphocyte"), (2, "Neutrophil")]
    assert dict(contradictions[0].attributes) == {"granule_type": "round"}
    assert dict(contradictions[1].attributes) == {"nucleus_shape": "unsegmented-round", "chromatin_density": "loosely"}
    assert "a round nucleus with fine chromatin" in contradictions[1].reason


def test_no_type_of_a_typical_cell_contradicts_itself():
    for name, attributes in TYPICAL.items():
        cell = prediction(name, attributes=attributes, blast=0.0)
        reading = interpret([field("a", [cell])], minimum_cells=1)
        assert [c for c in reading.contradictions if c.kind == "cell"] == [], name


# ---------------------------------------------------------------------------------------------------- not enough cells
@pytest.mark.parametrize("fields", [
    [],  # an empty sample
    [field("a", [None, None], detector_classes=["RBC", "Platelets"])],  # no white cell
    [field("a", [prediction("Neutrophil", blast=0.0)] * 48)],  # one field
    [field("a", [None] * 150)],  # white cells found, none typed (no cell model)
])
def test_too_few_white_cells_give_not_enough_cells_and_nothing_else(fields):
    reading = interpret(fields)
    assert reading.suggestion.name == "not enough cells" and reading.also_possible == ()
    assert reading.suggestion.findings[0].measured.count == reading.white_cells < 100
    assert "at least 100 are needed" in reading.suggestion.notes[0]
    summary = summary_json(differential(fields), fields_read=len(fields), skipped=[], notes=[], detector=DETECTOR,
                           seconds=1.0, interpretation=reading)
    assert validate(summary, "summary") == []
    text = format_summary(summary, "out")
    assert "suggestion: not enough cells (supported)" in text and "not a diagnosis" in text


def test_the_minimum_is_justified_by_the_interval_at_20_percent_blasts():
    low, high = wilson_interval(20, 100)
    assert 0.13 < low and high < 0.29  # 100 cells: 20% blasts tells 13-29%
    low, high = wilson_interval(10, 50)
    assert high - low > 0.2  # 50 cells: over 20 points wide


# ------------------------------------------------------------------------------------------------------ the tables
def test_the_docs_hold_the_code_tables_verbatim():
    doc = (DOCS / "interpretation.md").read_text()
    for name, table in markdown_tables().items():
        assert table in doc, f"docs/interpretation.md: the {name} table differs from the code; paste:\n{table}"


def test_every_rule_names_a_measure_and_a_known_role():
    assert {r.measure for r in RULES} <= set(MEASURES)
    assert {r.role for r in RULES} == {"gate", "flag", "criterion", "supporting", "lineage"}
    assert all(f in FEATURES for c in CONFLICTS for f, _ in c.features)
    assert Rule("CML", "criterion", "blasts", "<", 10, "").test == "< 10%"
    assert RULES[0].test == "< 100 cells"


def test_every_key_of_the_summary_and_its_interpretation_is_documented():
    from leukolens.predict.output import SCHEMAS

    doc = (DOCS / "output-schema.md").read_text()
    summary = SCHEMAS["summary"]["properties"]
    reading = summary["interpretation"]["properties"]
    finding = reading["flags"]["items"]["properties"]
    for key in [*summary, *reading, *finding, *reading["suggestion"]["properties"]]:
        assert f"| `{key}`" in doc or f"`{key}`" in doc, key
    for status in [*finding["status"]["enum"], *reading["suggestion"]["properties"]["status"]["enum"]]:
        assert f"`{status}`" in doc and f"`{status}`" in (DOCS / "interpretation.md").read_text(), status


def test_not_white_agrees_with_analyze():
    from leukolens.analyze import NOT_WHITE as ANALYZE_NOT_WHITE

    assert NOT_WHITE == ANALYZE_NOT_WHITE


# ------------------------------------------------------------------------------------------------------ JSON and text
def test_summary_with_interpretation_validates_and_prints_readably():
    fields = sample({**NORMAL, "Neutrophil": 76, "Lymphocyte": 56, "Blast": 44},
                    mixed=[prediction("Lymphocyte", attributes=dict(TYPICAL["Lymphocyte"], granule_type="coarse"),
                                      blast=0.0)])
    summary = summary_json(differential(fields), fields_read=len(fields), skipped=[], notes=[], detector=DETECTOR,
                           seconds=2.0, interpretation=interpret(fields))
    assert validate(summary, "summary") == []
    document = summary["interpretation"]
    assert document["white_cells_counted"] == 201 and document["blasts"]["count"] == 44
    assert document["blasts"]["percent"] == 21.9 and document["blasts"]["low"] == 16.7
    assert document["suggestion"]["status"] == "possible"
    assert document["suggestion"]["evidence"][0]["cells"][0] == {"field": "f3", "cell": 7}
    assert [c["kind"] for c in document["contradictions"]] == ["suggestion", "cell"]
    assert "not a diagnosis" in document["disclaimer"]
    del summary["interpretation"]["flags"][0]["status"]
    assert validate(summary, "summary") != []
    text = format_summary(summary_json(differential(fields), fields_read=5, skipped=[], notes=[], detector=DETECTOR,
                                       seconds=2.0, interpretation=interpret(fields)), "out")
    assert "WBC differential (201 cells typed):" in text
    assert "  Neutrophil                76   37.8    31.4-44.7     37.8" in text
    assert "  Blast                     44   21.9    16.7-28.1     20.8" in text  # expected: 44 x 0.95 blast score
    assert "blasts: 21.9% (95% CI 16.7-28.1, 44/201)" in text
    assert "flag: blasts present: blasts 21.9%" in text
    assert "suggestion: acute leukemia, lymphoid (possible)" in text
    assert "contradictions (2):" in text and "f4 #1: typed Lymphocyte, but granule_type coarse" in text
    assert text.splitlines()[-1].startswith("Decision support for review")
