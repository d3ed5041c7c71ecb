"""The blast scorer: its three scores checked by hand, the non-negative fit, the threshold, the call's error rates
measured by the fit, and its stored form in a cell checkpoint (older checkpoints and scorers still load)."""

import dataclasses

import numpy as np
import pytest
import torch

from leukolens.data.cells import CropConfig
from leukolens.errors import LeukolensError
from leukolens.models.blast import (
    BLAST_MORPHOLOGY,
    RESEMBLES_EXAMPLES,
    BlastCallRates,
    BlastScorer,
    CellScores,
    example_images,
    fit_blast_scorer,
    nonnegative_logistic,
)
from leukolens.models.cellnet import CellNet, CellNetConfig
from leukolens.models.checkpoint import from_model, load_checkpoint, save_checkpoint
from leukolens.records import WBCATT_SCHEMA

HEAD_VALUES = {a.name: a.values for a in WBCATT_SCHEMA}


def _scorer(**changes) -> BlastScorer:
    values = dict(
        morphology=(("cell_size", ("big",), "large cell"), ("chromatin_density", ("loosely",), "fine chromatin")),
        examples=np.array([[1.0, 0.0], [0.0, 1.0]], np.float32),
        example_sources=("a.png", "b.png"),
        normals=np.array([[1.0, 1.0]], np.float32) / np.sqrt(2),
        scores=("morphology", "prototype"),
        mean=np.zeros(2),
        spread=np.ones(2),
        weights=np.array([1.0, 2.0]),
        bias=-0.5,
        threshold=0.5,
        k_examples=1,
        k_normals=1,
    )
    values.update(changes)
    return BlastScorer(**values)


def test_morphology_is_the_mean_log_probability_of_the_blast_values_with_a_floor():
    scorer = _scorer()
    probabilities = {"cell_size": np.array([[0.2, 0.8]]), "chromatin_density": np.array([[0.99, 0.01]])}
    score = scorer.morphology_score(probabilities, HEAD_VALUES)
    assert score == pytest.approx([(np.log(0.8) + np.log(0.02)) / 2])  # 0.01 counts as the floor, 0.02
    with pytest.raises(ValueError, match="attribute head 'chromatin_density'"):
        scorer.morphology_score({"cell_size": np.array([[0.2, 0.8]])}, HEAD_VALUES)


def test_prototype_margin_by_hand_and_leaving_each_example_out():
    scorer = _scorer()
    cells = np.array([[2.0, 0.0], [1.0, 1.0]])  # any length: compared as unit vectors
    assert scorer.prototype_score(cells) == pytest.approx([1 - np.sqrt(0.5), np.sqrt(0.5) - 1], abs=1e-6)
    # Each example against the other only: similarity 0, minus its similarity to the normal cell.
    left_out = scorer.prototype_score(scorer.examples, leave_self_out=True)
    assert left_out == pytest.approx([-np.sqrt(0.5), -np.sqrt(0.5)], abs=1e-6)


def test_probability_combines_the_standardised_scores_and_the_threshold_decides():
    scorer = _scorer(mean=np.array([1.0, 0.0]), spread=np.array([2.0, 1.0]))
    scores = np.array([[3.0, 0.5], [1.0, -1.0]])
    logits = np.array([1.0 * 1 + 2.0 * 0.5 - 0.5, 0.0 + 2.0 * -1 - 0.5])
    probabilities = scorer.probability_from_scores(scores)
    assert probabilities == pytest.approx(1 / (1 + np.exp(-logits)))
    assert list(scorer.suspected(probabilities)) == [True, False]


def test_reasons_name_the_features_that_read_blast_like():
    scorer = _scorer()
    assert scorer.reasons({"cell_size": {"big": 0.7, "small": 0.3}, "chromatin_density": {"loosely": 0.2}}) == (
        "large cell",
    )
    assert scorer.reasons({"cell_size": {"big": 0.1}}) == (RESEMBLES_EXAMPLES,)


def test_a_lab_adds_examples_without_changing_the_fit():
    scorer = _scorer()
    more = scorer.with_examples(np.array([[3.0, 4.0]]), ["ours.png"])
    assert more.examples.shape == (3, 2) and np.allclose(more.examples[2], [0.6, 0.8])
    assert more.example_sources == ("a.png", "b.png", "ours.png")
    assert more.threshold == scorer.threshold and np.array_equal(more.weights, scorer.weights)
    assert scorer.examples.shape == (2, 2)  # the scorer itself is unchanged
    # the fitted rates were measured with the examples before: a scorer with more has none (no adjusted blast %)
    measured = _scorer(call_rates=BlastCallRates(9, 10, 5, 100))
    assert measured.with_examples(np.array([[3.0, 4.0]]), ["ours.png"]).call_rates is None
    with pytest.raises(ValueError, match="2 embeddings but 1 sources"):
        scorer.with_examples(np.ones((2, 2)), ["x"])


def test_nonnegative_logistic_sets_a_weight_that_points_the_wrong_way_to_zero():
    rng = np.random.default_rng(0)
    targets = np.r_[np.ones(50), np.zeros(50)]
    helpful = targets * 2 + rng.normal(size=100)
    harmful = -targets * 2 + rng.normal(size=100)  # would get a negative weight
    weights, bias = nonnegative_logistic(np.c_[helpful, harmful], targets, np.ones(100), l2=1.0)
    assert weights[0] > 0.5 and weights[1] == 0.0
    stronger, _ = nonnegative_logistic(np.c_[helpful, harmful], targets, np.ones(100), l2=100.0)
    assert 0 < stronger[0] < weights[0]  # the penalty shrinks it


def _cells(rng, n, direction, *, blast: bool, atypicality: bool = True) -> CellScores:
    """Cells with embeddings around ``direction`` and attribute heads that read blast-like or not."""
    embeddings = direction + 0.3 * rng.normal(size=(n, len(direction)))
    probabilities = {}
    for a in WBCATT_SCHEMA:
        p = rng.dirichlet(np.ones(len(a.values)), size=n)
        for name, values, _ in BLAST_MORPHOLOGY:
            if name == a.name:
                column = a.values.index(values[0])
                p[:, column] = 0.9 if blast else 0.05
                p /= p.sum(axis=1, keepdims=True)
        probabilities[a.name] = p
    atypical = rng.normal(1.0 if blast else 0.0, 1.0, n) if atypicality else None
    return CellScores(probabilities, embeddings, atypical, tuple(f"cell{i}" for i in range(n)))


@pytest.mark.parametrize("atypicality", [True, False])
def test_fit_separates_blasts_sets_the_threshold_on_validation_and_round_trips(atypicality):
    rng = np.random.default_rng(1)
    blast_direction, normal_direction = np.eye(16)[0], np.eye(16)[1]
    scorer = fit_blast_scorer(
        examples=_cells(rng, 8, blast_direction, blast=True, atypicality=atypicality),
        normals=_cells(rng, 60, normal_direction, blast=False, atypicality=atypicality),
        negatives=[_cells(rng, 40, normal_direction, blast=False, atypicality=atypicality)],
        validation=(validation := _cells(rng, 40, normal_direction, blast=False, atypicality=atypicality)),
        head_values=HEAD_VALUES,
    )
    assert scorer.scores == (("morphology", "prototype", "atypicality") if atypicality else ("morphology", "prototype"))
    assert (scorer.weights >= 0).all() and scorer.weights.max() > 0
    probabilities = scorer.probability(validation.attribute_probabilities, HEAD_VALUES, validation.embeddings,
                                       validation.atypicality)
    assert scorer.threshold == pytest.approx(np.quantile(probabilities, 0.95))
    assert scorer.fitted["validation_called_blast"] <= 0.05
    assert scorer.fitted["examples_called_blast_left_out"] == 1.0
    # the call's error rates, with their counts: the examples (left out) and the validation cells over the threshold
    rates = scorer.call_rates
    assert (rates.blasts, rates.normals) == (8, 40) and rates.true_positive_rate == 1.0
    assert rates.normals_called == int(np.sum(probabilities > scorer.threshold)) == 2  # 5% of 40
    assert rates.false_positive_rate == scorer.fitted["validation_called_blast"] == 0.05
    unseen = _cells(rng, 5, blast_direction, blast=True, atypicality=atypicality)
    unseen_probabilities = scorer.probability(unseen.attribute_probabilities, HEAD_VALUES, unseen.embeddings,
                                              unseen.atypicality)
    assert scorer.suspected(unseen_probabilities).all()
    again = BlastScorer.from_dict(scorer.as_dict())
    assert again.scores == scorer.scores and again.threshold == scorer.threshold and again.call_rates == rates
    assert again.probability(unseen.attribute_probabilities, HEAD_VALUES, unseen.embeddings, unseen.atypicality) == (
        pytest.approx(unseen_probabilities, abs=1e-3))  # embeddings stored in float16


def test_fit_refuses_nothing_to_fit_on():
    rng = np.random.default_rng(0)
    some = _cells(rng, 4, np.eye(8)[0], blast=False)
    empty = {k: v[:0] for k, v in some.attribute_probabilities.items()}
    none = dataclasses.replace(some, attribute_probabilities=empty, embeddings=some.embeddings[:0],
                               atypicality=some.atypicality[:0], sources=())
    with pytest.raises(ValueError, match="no blast examples"):
        fit_blast_scorer(examples=none, normals=some, negatives=[some], validation=some, head_values=HEAD_VALUES)
    with pytest.raises(ValueError, match="no normal cells"):
        fit_blast_scorer(examples=some, normals=some, negatives=[none], validation=some, head_values=HEAD_VALUES)


def _tiny_checkpoint(**fields):
    torch.manual_seed(0)
    model = CellNet(CellNetConfig(("a", "b")), pretrained=False).eval()
    return from_model(model, CropConfig(input_size=32), **fields)


def test_the_scorer_round_trips_through_a_checkpoint(tmp_path):
    scorer = _scorer()
    path = save_checkpoint(_tiny_checkpoint(blast=scorer.as_dict()), tmp_path / "cells.pt")
    loaded = BlastScorer.from_dict(load_checkpoint(path).blast)
    assert loaded.morphology == scorer.morphology and loaded.example_sources == scorer.example_sources
    assert np.allclose(loaded.examples, scorer.examples) and np.allclose(loaded.normals, scorer.normals, atol=1e-3)
    assert loaded.scores == scorer.scores and loaded.threshold == scorer.threshold and loaded.bias == scorer.bias
    assert np.array_equal(loaded.weights, scorer.weights) and (loaded.k_examples, loaded.k_normals) == (1, 1)
    raw = torch.load(path, weights_only=True)
    assert raw["inference"]["blast"]["examples"].dtype == torch.float16


def test_call_rates_round_trip_through_a_checkpoint_and_older_scorers_load_without_them(tmp_path):
    rates = BlastCallRates(11, 12, 26, 520)
    assert rates.true_positive_rate == pytest.approx(11 / 12) and rates.false_positive_rate == 0.05
    path = save_checkpoint(_tiny_checkpoint(blast=_scorer(call_rates=rates).as_dict()), tmp_path / "cells.pt")
    assert BlastScorer.from_dict(load_checkpoint(path).blast).call_rates == rates
    older = _scorer().as_dict()
    del older["call_rates"]  # a scorer fitted before the rates were measured
    assert BlastScorer.from_dict(older).call_rates is None
    with pytest.raises(ValueError, match="0..total"):
        BlastCallRates(13, 12, 0, 10)
    with pytest.raises(ValueError, match="measured on"):
        BlastCallRates(0, 0, 0, 10)


def test_a_checkpoint_without_a_scorer_loads_and_writes_none(tmp_path):
    path = save_checkpoint(_tiny_checkpoint(), tmp_path / "cells.pt")
    assert "blast" not in torch.load(path, weights_only=True)["inference"]  # older files are written as before
    assert load_checkpoint(path).blast is None


def test_example_folders_are_refused_with_a_clear_message(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(LeukolensError, match="blast examples .*empty: no images in it"):
        example_images([empty])
    with pytest.raises(LeukolensError, match="missing: no such folder"):
        example_images([tmp_path / "missing"])
    with pytest.raises(LeukolensError, match="no such folder"):
        example_images([empty / "notes.txt"])  # a file is not a folder of examples
    nested = tmp_path / "ours" / "patient-1"
    nested.mkdir(parents=True)
    for name in ("b.PNG", "a.jpg"):
        (nested / name).write_bytes(b"")
    assert [p.name for p in example_images([tmp_path / "ours"])] == ["a.jpg", "b.PNG"]
