"""Metrics against values worked out by hand on arrays small enough to check on paper."""

from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from leukolens.eval.metrics import (
    accuracy,
    auroc,
    balanced_accuracy,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
    per_class_recall,
    recall_at_k,
    save_confusion_png,
)

# Three classes; rows of the confusion matrix: class 0 [2, 1, 0], class 1 [0, 1, 1], class 2 [0, 0, 1].
Y_TRUE = np.array([0, 0, 0, 1, 1, 2])
Y_PRED = np.array([0, 0, 1, 1, 2, 2])


# ------------------------------------------------------------------------------------------------------ classification
def test_confusion_matrix_rows_are_true_columns_predicted():
    assert confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert confusion_matrix(Y_TRUE, Y_PRED, 4).tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]


def test_accuracy_by_hand():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)


def test_per_class_recall_by_hand_with_an_absent_class():
    recall = per_class_recall(Y_TRUE, Y_PRED, 4)
    assert recall[:3] == pytest.approx([2 / 3, 1 / 2, 1])
    assert np.isnan(recall[3])  # class 3 has no true sample


def test_balanced_accuracy_by_hand():
    expected = float((Fraction(2, 3) + Fraction(1, 2) + Fraction(1, 1)) / 3)  # 13/18
    assert balanced_accuracy(Y_TRUE, Y_PRED) == pytest.approx(expected)
    # A fourth class that never occurs is skipped, not counted as recall 0.
    assert balanced_accuracy(Y_TRUE, Y_PRED, num_classes=4) == pytest.approx(expected)


def test_macro_f1_by_hand():
    # F1 = 2TP / (2TP + FP + FN): class 0 4/5, class 1 2/4, class 2 2/3.
    expected = float((Fraction(4, 5) + Fraction(1, 2) + Fraction(2, 3)) / 3)  # 59/90
    assert macro_f1(Y_TRUE, Y_PRED) == pytest.approx(expected)
    assert macro_f1(Y_TRUE, Y_PRED, num_classes=4) == pytest.approx(expected)


def test_a_class_predicted_but_never_true():
    y_true, y_pred = [0, 0, 1, 1], [0, 2, 1, 1]
    assert balanced_accuracy(y_true, y_pred) == pytest.approx((1 / 2 + 1) / 2)  # class 2 not in y_true: skipped
    assert macro_f1(y_true, y_pred) == pytest.approx((2 / 3 + 1 + 0) / 3)  # class 2 in y_pred: F1 0, counted


def test_perfect_and_all_wrong_predictions():
    labels = np.array([0, 1, 2, 2, 1])
    assert accuracy(labels, labels) == balanced_accuracy(labels, labels) == macro_f1(labels, labels) == 1.0
    wrong = (labels + 1) % 3
    assert accuracy(labels, wrong) == balanced_accuracy(labels, wrong) == macro_f1(labels, wrong) == 0.0


@pytest.mark.parametrize(
    ("y_true", "y_pred", "num_classes", "message"),
    [
        ([0, 1], [0], None, "equal length"),
        ([], [], None, "no samples"),
        ([0.0, 1.0], [0.0, 1.0], None, "integer"),
        ([0, 3], [0, 1], 3, r"\[0, 3\)"),
        ([0, -1], [0, 1], None, "lie in"),
    ],
)
def test_bad_labels_are_refused(y_true, y_pred, num_classes, message):
    with pytest.raises(ValueError, match=message):
        balanced_accuracy(np.array(y_true), np.array(y_pred), num_classes=num_classes)


# ------------------------------------------------------------------------------------------------------ calibration
def test_expected_calibration_error_by_hand():
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    y_true = np.array([0, 1, 1, 0])  # right, wrong, right, right
    # Five bins of width 0.2, upper edge inclusive: (0.8, 1] holds 0.9 (acc 1, conf 0.9); (0.6, 0.8] holds 0.8 and
    # 0.7 (acc 1/2, conf 0.75); (0.4, 0.6] holds 0.6 (acc 1, conf 0.6).
    expected = 1 / 4 * 0.1 + 2 / 4 * 0.25 + 1 / 4 * 0.4
    assert expected_calibration_error(probabilities, y_true, bins=5) == pytest.approx(expected)


def test_expected_calibration_error_extremes():
    certain = np.eye(3)[[0, 1, 2, 1]]
    assert expected_calibration_error(certain, np.array([0, 1, 2, 1])) == 0.0  # sure and right
    assert expected_calibration_error(certain, np.array([1, 2, 0, 0])) == 1.0  # sure and wrong
    with pytest.raises(ValueError, match="no samples"):
        expected_calibration_error(np.zeros((0, 3)), np.zeros(0, int))


# ------------------------------------------------------------------------------------------------------ ranking
def test_auroc_separated_and_identical():
    assert auroc([0.1, 0.2], [0.8, 0.9]) == 1.0
    assert auroc([0.8, 0.9], [0.1, 0.2]) == 0.0
    assert auroc([1, 2, 3], [1, 2, 3]) == pytest.approx(0.5)  # 3 wins and 3 ties of 9 pairs
    assert auroc([5, 5], [5]) == pytest.approx(0.5)  # all tied


def test_auroc_ties_count_half():
    # positive 2 beats 1, ties 2, loses to 3: 1.5; positive 4 beats all three: 3. (1.5 + 3) / 6 pairs.
    assert auroc([1, 2, 3], [2, 4]) == pytest.approx(0.75)


def test_auroc_matches_counting_every_pair():
    rng = np.random.default_rng(0)
    negative, positive = rng.integers(0, 20, 300), rng.integers(5, 25, 200)  # many ties
    pairs = positive[:, None] - negative[None, :]
    expected = ((pairs > 0).sum() + 0.5 * (pairs == 0).sum()) / pairs.size
    assert auroc(negative, positive) == pytest.approx(expected)


def test_auroc_refuses_one_sided_or_nan_scores():
    with pytest.raises(ValueError, match="negatives and positives"):
        auroc([], [0.5])
    with pytest.raises(ValueError, match="nan"):
        auroc([0.1, np.nan], [0.5])


def test_recall_at_k_by_hand():
    similarity = np.array(
        [
            [0.9, 0.8, 0.1, 0.5],  # ranking 0, 1, 3, 2: relevant item 1 is second
            [0.2, 0.3, 0.4, 0.1],  # ranking 2, 1, 0, 3: relevant items 0 and 3, the first is third
            [0.4, 0.3, 0.2, 0.1],  # nothing relevant: skipped
            [0.5, 0.1, 0.2, 0.3],  # relevant item 0 is first
        ]
    )
    relevant = np.array(
        [[0, 1, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=bool
    )
    assert recall_at_k(similarity, relevant, ks=(1, 2, 3, 10)) == pytest.approx(
        {1: 1 / 3, 2: 2 / 3, 3: 1.0, 10: 1.0}
    )


def test_recall_at_k_ties_keep_item_order_and_no_answerable_query_gives_nan():
    assert recall_at_k(np.ones((1, 3)), np.array([[False, False, True]]), ks=(1, 3)) == {1: 0.0, 3: 1.0}
    result = recall_at_k(np.ones((2, 3)), np.zeros((2, 3), bool), ks=(1,))
    assert np.isnan(result[1])
    with pytest.raises(ValueError, match="positive"):
        recall_at_k(np.ones((1, 3)), np.ones((1, 3), bool), ks=(0,))


# ------------------------------------------------------------------------------------------------------ scikit-learn
def test_agrees_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 5, 200), rng.integers(0, 6, 200)
    present = np.union1d(y_true, y_pred)
    assert accuracy(y_true, y_pred) == pytest.approx(sklearn_metrics.accuracy_score(y_true, y_pred))
    assert balanced_accuracy(y_true, y_pred) == pytest.approx(
        sklearn_metrics.balanced_accuracy_score(y_true, y_pred))
    assert macro_f1(y_true, y_pred) == pytest.approx(
        sklearn_metrics.f1_score(y_true, y_pred, average="macro", labels=present))
    assert np.array_equal(confusion_matrix(y_true, y_pred, 6),
                          sklearn_metrics.confusion_matrix(y_true, y_pred, labels=range(6)))
    negative, positive = rng.normal(0, 1, 100).round(1), rng.normal(1, 1, 80).round(1)
    expected = sklearn_metrics.roc_auc_score(np.r_[np.zeros(100), np.ones(80)], np.r_[negative, positive])
    assert auroc(negative, positive) == pytest.approx(expected)


# ------------------------------------------------------------------------------------------------------ picture
def test_confusion_png_shades_rows_and_fits_long_names(tmp_path):
    names = ["Basophil", "Eosinophil", "Erythroblast", "Immature granulocyte", "Lymphocyte", "Monocyte",
             "Neutrophil", "Myeloblast", "Promyelocyte", "Band neutrophil", "Segmented neutrophil",
             "Atypical lymphocyte", "Smudge cell", "Plasma cell", "Hairy cell leukaemia variant cell"]
    matrix = np.diag(np.arange(1, 16) * 10)
    matrix[0, 1] = 3
    matrix[5] = 0  # a class with no true cell: a blank row, not a division by zero
    path = tmp_path / "out" / "confusion.png"
    save_confusion_png(matrix, names, path, title="test split")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert image.width < 1000 and image.height < 1000  # 15 long names still fit a page
        pixels = np.asarray(image).reshape(-1, 3)
    dark_blue = np.all(pixels == (8, 48, 107), axis=1).sum()  # a row share of 1 gets the darkest shade
    assert dark_blue > 13 * 20 * 20  # the 13 perfect rows, most of each cell shaded (text covers the rest)
    assert [p.name for p in path.parent.iterdir()] == ["confusion.png"]  # no temporary file left behind


def test_confusion_png_refuses_names_that_do_not_fit(tmp_path):
    with pytest.raises(ValueError, match="2 class names"):
        save_confusion_png(np.eye(3, dtype=int), ["a", "b"], tmp_path / "c.png")
