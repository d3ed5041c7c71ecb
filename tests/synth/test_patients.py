"""Diagnoses keep their documented class mixes; patients differ within them."""

from collections import Counter

import numpy as np
import pytest

from leukolens.io.common import LeukolensError
from leukolens.records import LLD_CLASSES
from leukolens.synth.cells import SMUDGE
from leukolens.synth.generate import Slide
from leukolens.synth.patients import DIAGNOSES, diagnosis_name, draw_mix, make_patient


@pytest.mark.parametrize("diagnosis", list(DIAGNOSES))
def test_every_diagnosis_keeps_its_constraints_over_drawn_cells(diagnosis):
    table = DIAGNOSES[diagnosis]
    counts: Counter = Counter()
    for seed in range(4):  # four patients, 150 cells each: the constraints must hold for the pooled 600
        patient = make_patient(diagnosis, sample_id=f"P{seed}", seed=seed, stain="Wright")
        counts.update(patient.draw_labels(np.random.default_rng(seed), 150))
    total = sum(counts.values())
    for rule in table.constraints:
        share = sum(counts[c] for c in rule.classes) / total
        assert rule.minimum <= share <= rule.maximum, f"{diagnosis}: {rule.description} {share:.3f}"


def test_the_acute_leukemias_have_over_a_fifth_blasts_in_every_patient():
    for diagnosis, blasts in (
        ("AML", ("Myeloblast", "Monoblast", "Promonocyte", "Abnormal promyelocyte")),
        ("ALL", ("Lymphoblast",)),
    ):
        for seed in range(20):
            mix = make_patient(diagnosis, sample_id="P", seed=seed, stain="Wright").mix
            assert sum(mix.get(c, 0) for c in blasts) > 0.2


def test_mixes_are_distributions_over_lld_classes_and_fixed_ranges_leave_room():
    for table in DIAGNOSES.values():
        for _, variant in table.variants:
            assert sum(high for _, high in variant.fixed.values()) < 1
            mix = draw_mix(variant, np.random.default_rng(0))
            assert abs(sum(mix.values()) - 1) < 1e-9
            assert set(mix) <= set(LLD_CLASSES.names[1:])


def test_cll_slides_carry_smudge_cells_and_normal_ones_hardly_any():
    def smudge_share(diagnosis):
        slide = Slide(make_patient(diagnosis, sample_id="P", seed=5, stain="Wright"))
        cells = [w.cell.label for ix in range(0, 12) for w in slide.white_cells(ix, 0)]
        return cells.count(SMUDGE) / len(cells)

    assert smudge_share("CLL") > 0.05
    assert smudge_share("normal") < 0.05


def test_patients_are_reproducible_and_differ_between_seeds():
    a = make_patient("AML", sample_id="P1", seed=1, stain="Giemsa")
    assert a == make_patient("AML", sample_id="P1", seed=1, stain="Giemsa")
    assert a.mix != make_patient("AML", sample_id="P1", seed=2, stain="Giemsa").mix


def test_unknown_diagnosis_is_a_clear_error():
    assert diagnosis_name("aml") == "AML"
    with pytest.raises(LeukolensError, match="unknown diagnosis 'MDS': use one of normal, ALL, AML, CLL, CML"):
        diagnosis_name("MDS")
