"""The sample-level benchmark's pieces that need no model: the virtual-sample composer gives the blast fraction and
cell count asked for and draws cells from small groups evenly, its fields reach the interpretation as analyze's do,
and a synthetic sample's wrong suggestion is put down to the right cause."""

from collections import Counter

import numpy as np
import pytest

from benchmarks.samples import (
    NORMAL_DIFFERENTIAL,
    PatientResult,
    as_fields,
    compose_sample,
    draw_cycled,
    failure_cause,
)
from leukolens.predict.results import AttributePrediction, CellPrediction
from leukolens.sample import interpret

NORMAL = {name: [f"{name}-{i}" for i in range(30)] for name in NORMAL_DIFFERENTIAL}
BLASTS = [f"blast-{i}" for i in range(10)]


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.10, 0.20, 0.30, 0.50, 0.80])
@pytest.mark.parametrize("cells", [100, 200])
def test_composer_gives_the_blast_fraction_and_count_asked_for(fraction, cells):
    sample = compose_sample(NORMAL, BLASTS, blast_fraction=fraction, cells=cells, proportions=NORMAL_DIFFERENTIAL,
                            seed=3)
    assert len(sample.cells) == cells
    assert sample.blast_count == round(fraction * cells)
    assert all(item.startswith(group if group == "blast" else group + "-") for group, item in sample.cells)


def test_blasts_repeat_evenly_when_there_are_too_few():
    sample = compose_sample(NORMAL, BLASTS, blast_fraction=0.8, cells=200, proportions=NORMAL_DIFFERENTIAL, seed=0)
    used = Counter(item for group, item in sample.cells if group == "blast")
    assert set(used) == set(BLASTS) and set(used.values()) == {16}  # 160 blasts from 10: each 16 times
    few = compose_sample(NORMAL, BLASTS, blast_fraction=0.05, cells=100, proportions=NORMAL_DIFFERENTIAL, seed=0)
    assert len({item for group, item in few.cells if group == "blast"}) == 5  # 5 from 10: no repeat


def test_draw_cycled_uses_every_member_before_repeating_one():
    rng = np.random.default_rng(0)
    assert sorted(draw_cycled(list("abcd"), 4, rng)) == list("abcd")
    assert Counter(draw_cycled(list("abcd"), 10, rng)).most_common()[-1][1] == 2  # each twice or three times
    assert draw_cycled([], 0, rng) == []
    with pytest.raises(ValueError):
        draw_cycled([], 1, rng)


def test_normal_types_follow_the_differential_and_seeds_repeat():
    counts = Counter()
    for seed in range(50):
        sample = compose_sample(NORMAL, BLASTS, blast_fraction=0.0, cells=200, proportions=NORMAL_DIFFERENTIAL,
                                seed=seed)
        counts.update(sample.counts())
    shares = {name: counts[name] / 10_000 for name in NORMAL_DIFFERENTIAL}
    assert all(abs(shares[n] - p) < 0.02 for n, p in NORMAL_DIFFERENTIAL.items())  # 10,000 cells: sd under 0.005
    again = compose_sample(NORMAL, BLASTS, blast_fraction=0.2, cells=200, proportions=NORMAL_DIFFERENTIAL, seed=7)
    assert again == compose_sample(NORMAL, BLASTS, blast_fraction=0.2, cells=200, proportions=NORMAL_DIFFERENTIAL,
                                   seed=7)
    with pytest.raises(ValueError):
        compose_sample(NORMAL, BLASTS, blast_fraction=1.5, cells=10, proportions=NORMAL_DIFFERENTIAL, seed=0)


def _reading(label, blast):
    probabilities = {"Lymphocyte": float(label == "Lymphocyte"), "Neutrophil": float(label != "Lymphocyte")}
    return CellPrediction(label, 1.0, probabilities, {"cell_size": AttributePrediction("big", 1.0, {"big": 1.0})},
                          blast_probability=0.9 if blast else 0.1, blast_suspected=blast)


def test_virtual_fields_reach_the_interpretation_with_their_blast_percentage():
    sample = compose_sample({"n": [_reading("Neutrophil", False)]}, [_reading("Lymphocyte", True)],
                            blast_fraction=0.3, cells=120, proportions={"n": 1.0}, seed=0)
    reading = interpret(as_fields([p for _, p in sample.cells]))
    assert reading.white_cells == 120
    assert reading.blasts.measured.count == 36 and reading.blasts.measured.percent == pytest.approx(30.0)
    assert reading.suggestion.name.startswith("acute leukemia")


def _patient(diagnosis, suggestion):
    return PatientResult("P001", diagnosis, diagnosis, "main", 10, 150, 0.0, 120, 0.0, suggestion, "supported", 1.0)


def test_failure_causes():
    assert failure_cause(_patient("AML", "acute leukemia, myeloid")) is None
    assert failure_cause(_patient("normal", "no evidence of leukemia")) is None
    assert failure_cause(_patient("CML", "not enough cells")).startswith("too few")
    assert failure_cause(_patient("normal", "acute leukemia, lymphoid")).startswith("acute against not")
    assert failure_cause(_patient("ALL", "CLL")).startswith("acute against not")
    assert failure_cause(_patient("ALL", "acute leukemia, lineage unclear")).startswith("lineage")
    assert failure_cause(_patient("CLL", "no evidence of leukemia")).startswith("non-acute")
