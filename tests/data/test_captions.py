import numpy as np
import pytest

from leukolens.data.captions import (
    ContentCodes,
    matches_any,
    parse_combination,
    positive_matrix,
    sentence_pool,
    training_content,
)
from leukolens.io.common import LeukolensError
from leukolens.records import LLD_SCHEMA
from leukolens.text.sentences import consistent

BLAST = (("class", "Myeloblast"), ("cell_size", "large"), ("nucleolus", "prominent"))
LYMPHOCYTE = (("class", "Lymphocyte"), ("cell_size", "small"), ("nucleolus", "inconspicuous"))
NO_NUCLEOLUS_LABEL = (("class", "Basophil"), ("cell_size", "large"))


def test_positive_matrix_by_hand():
    cells = [BLAST, LYMPHOCYTE, NO_NUCLEOLUS_LABEL]
    sentences = [
        (("cell_size", "large"),),  # true of the blast and the basophil
        (("nucleolus", "prominent"),),  # only the blast: the basophil's nucleolus is not labelled
        (("class", "Lymphocyte"),),
        (("class", "Monocyte"),),  # a class no cell has: true of none
    ]
    codes = ContentCodes(cells + sentences)
    positive = positive_matrix(codes.encode(cells), codes.encode(sentences))
    expected = np.array([[1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]], dtype=bool)
    assert (positive == expected).all()
    assert all(positive[i, j] == consistent(sentences[j], cells[i]) for i in range(3) for j in range(4))


def test_sentence_pool_composed_gives_each_cell_true_sentences():
    cells = [BLAST, LYMPHOCYTE]
    pool = sentence_pool(cells, mode="composed", schema=LLD_SCHEMA, per_cell=5, seed=0)
    assert len(pool.texts) == len(set(pool.texts)) == len(pool.contents)
    for cell, chosen in zip(cells, pool.of_cell):
        assert chosen and all(consistent(pool.contents[j], cell) for j in chosen)
        assert any(pool.contents[j] == cell for j in chosen)  # the full description is among them


def test_fixed_modes_use_one_sentence_per_class_or_diagnosis():
    class_only = [(("class", "Neutrophil"),), (("class", "Neutrophil"),), (("class", "Monocyte"),)]
    pool = sentence_pool(class_only, mode="fixed", schema=None, per_cell=5, seed=0)
    assert len(pool.texts) == 2 and pool.of_cell[0] == pool.of_cell[1] != pool.of_cell[2]
    diagnosis = [(("diagnosis", "AML"),)]
    pool = sentence_pool(diagnosis, mode="diagnosis", schema=None, per_cell=5, seed=0)
    assert pool.texts == ["Large immature blood cells with abnormal structure."]


def test_training_content_by_mode(tmp_path):
    from leukolens.data.captions import CaptionedCells

    cells = CaptionedCells([None, None], [BLAST, LYMPHOCYTE], ["AML", None], ["S1", "S2"])
    assert training_content(cells, "fixed") == [(("class", "Myeloblast"),), (("class", "Lymphocyte"),)]
    with pytest.raises(LeukolensError, match="diagnosis"):
        training_content(cells, "diagnosis")
    with pytest.raises(LeukolensError, match="unknown sentence mode"):
        training_content(cells, "poetry")


def test_held_out_combinations_parse_and_match():
    combination = parse_combination("Myeloblast|cell_size=large| nucleolus = prominent")
    assert combination == (("class", "Myeloblast"), ("cell_size", "large"), ("nucleolus", "prominent"))
    assert matches_any([BLAST, LYMPHOCYTE], [combination]).tolist() == [True, False]
    with pytest.raises(LeukolensError, match="empty"):
        parse_combination(" | ")

