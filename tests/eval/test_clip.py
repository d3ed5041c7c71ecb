import numpy as np
import pytest

from leukolens.eval.clip import attribute_accuracy, classify, random_recall, read_attributes, retrieval
from leukolens.predict.describe import describe
from leukolens.records import LLD_SCHEMA


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_random_recall_by_hand():
    relevant = np.zeros((2, 4), dtype=bool)
    relevant[0, 1] = True  # one positive in four: R@1 = 1/4, R@2 = 1/2
    relevant[1, [0, 3]] = True  # two in four: R@1 = 1/2, R@2 = 1 - C(2,2)/C(4,2) = 5/6
    out = random_recall(relevant, ks=(1, 2, 10))
    assert out[1] == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert out[2] == pytest.approx((1 / 2 + 5 / 6) / 2)
    assert out[10] == pytest.approx(1.0)


def test_retrieval_counts_any_consistent_item_as_a_hit():
    cells = [(("class", "A"), ("cell_size", "small")), (("class", "A"), ("cell_size", "large"))]
    queries = [(("class", "A"),), (("cell_size", "large"),)]
    images = _unit([[1, 0], [0, 1]])
    texts = _unit([[1, 0.1], [1, -0.5]])  # the second query points at the wrong cell
    result = retrieval(images, cells, queries, texts)
    # image 0: best query is 0 (true); image 1: best query is 0 (true, "A" holds for it too)
    assert result.image_to_text[1] == 1.0
    # query 0 finds image 0 first (true); query 1's best image is image 0 (false), second image 1 (true)
    assert result.text_to_image[1] == 0.5
    assert result.text_to_image[5] == 1.0
    assert result.random_text_to_image[1] == pytest.approx((1.0 + 0.5) / 2)


def _prototypes():
    return {
        "key": "class",
        "mode": "composed",
        "classes": {"names": ["Myeloblast", "Lymphocyte"], "embeddings": _unit([[1, 0, 0], [0, 1, 0]])},
        "attributes": {
            "nucleolus": {"values": ["inconspicuous", "prominent"], "embeddings": _unit([[0, 1, 0.2], [1, 0, 0.2]])},
        },
    }


def test_class_attributes_and_description_from_prototypes():
    images = _unit([[1, 0.1, 0], [0.1, 1, 0]])
    prototypes = _prototypes()
    assert classify(images, prototypes).tolist() == [0, 1]
    assert classify(images, prototypes, among=["Lymphocyte"]).tolist() == [0, 0]
    probabilities = read_attributes(images, prototypes, scale=10.0)
    assert probabilities["nucleolus"].argmax(1).tolist() == [1, 0]
    assert np.allclose(probabilities["nucleolus"].sum(1), 1)
    contents = [(("class", "Myeloblast"), ("nucleolus", "prominent")), (("class", "Lymphocyte"),)]
    accuracy = attribute_accuracy(contents, probabilities, prototypes)
    assert accuracy == {"per_attribute": {"nucleolus": 1.0}, "mean": 1.0}  # only the labelled cell counts
    first = describe(images, prototypes, scale=10.0, schema=LLD_SCHEMA)[0]
    assert first.label == "Myeloblast"
    assert first.sentence == "A myeloblast with prominent nucleoli."
    assert first.attributes["nucleolus"][0] == "prominent" and 0.5 < first.attributes["nucleolus"][1] <= 1
