import random

import pytest

from leukolens.records import LLD_SCHEMA, NOT_APPLICABLE, UNKNOWN, WBCATT_SCHEMA
from leukolens.text.sentences import (
    CLASS_SENTENCES,
    SEED_SENTENCES,
    class_sentence,
    compose,
    consistent,
    content_of,
    partial_contents,
    variants,
)

BLAST = {
    "cell_size": "large",
    "nuclear_chromatin": "open",
    "nuclear_shape": NOT_APPLICABLE,
    "nucleolus": "prominent",
    "cytoplasm": "scanty",
    "cytoplasmic_basophilia": "moderate",
    "cytoplasmic_vacuoles": "absent",
}
BASOPHIL = {
    "cell_size": "big",
    "cell_shape": "round",
    "nucleus_shape": "segmented-bilobed",
    "nuclear_cytoplasmic_ratio": "low",
    "chromatin_density": "densely",
    "cytoplasm_vacuole": "no",
    "cytoplasm_texture": "clear",
    "cytoplasm_colour": "light blue",
    "granule_type": "coarse",
    "granule_colour": "purple",
    "granularity": "yes",
}


def test_canonical_lld_sentence_reads_as_written_and_leaves_out_not_applicable():
    content = content_of("Myeloblast", BLAST, schema=LLD_SCHEMA, with_class=False)
    assert "nuclear_shape" not in dict(content)
    assert compose(content, schema=LLD_SCHEMA) == (
        "A large cell with fine open chromatin and prominent nucleoli; the scanty cytoplasm is moderately basophilic, "
        "without vacuoles."
    )


def test_canonical_wbcatt_sentence_names_the_class_and_every_attribute():
    sentence = compose(content_of("Basophil", BASOPHIL, schema=WBCATT_SCHEMA), schema=WBCATT_SCHEMA)
    assert sentence == (
        "A large, round basophil with a bilobed nucleus, a low nuclear-to-cytoplasmic ratio, dense clumped chromatin "
        "and coarse purple granules; the cytoplasm is clear and light blue, without vacuoles."
    )


def test_unknown_and_out_of_schema_values_are_not_stated():
    content = content_of("Lymphocyte", {"cell_size": UNKNOWN, "cell_shape": "oval", "granularity": "no"},
                         schema=WBCATT_SCHEMA)
    assert content == (("class", "Lymphocyte"), ("granularity", "no"))
    assert compose(content, schema=WBCATT_SCHEMA) == "A lymphocyte with no granules."


@pytest.mark.parametrize("schema", [LLD_SCHEMA, WBCATT_SCHEMA], ids=lambda s: s.name)
def test_every_value_of_every_attribute_has_several_wordings(schema):
    for attribute in schema:
        for value in attribute.values:
            found = variants(((attribute.name, value),), schema=schema, count=4)
            assert len(found) >= 2, (attribute.name, value)
            assert all(s[0].isupper() and s.endswith(".") for s in found)


def test_random_wordings_are_reproducible_and_differ_from_canonical():
    content = content_of("Basophil", BASOPHIL, schema=WBCATT_SCHEMA)
    first = [compose(content, schema=WBCATT_SCHEMA, rng=random.Random(3)) for _ in range(1)]
    again = [compose(content, schema=WBCATT_SCHEMA, rng=random.Random(3)) for _ in range(1)]
    assert first == again
    assert len(set(variants(content, schema=WBCATT_SCHEMA, count=5))) == 5


def test_partial_sentences_are_true_of_their_cell_and_not_of_a_contradicting_one():
    cell = content_of("Basophil", BASOPHIL, schema=WBCATT_SCHEMA)
    other = content_of("Basophil", {**BASOPHIL, "granule_colour": "pink"}, schema=WBCATT_SCHEMA)
    rng = random.Random(0)
    for _ in range(50):
        part = partial_contents(cell, rng)
        assert part and consistent(part, cell)
        assert set(part) <= set(cell)
        if ("granule_colour", "purple") in part:
            assert not consistent(part, other)
    # A sentence stating an attribute the cell does not have is not true of it.
    assert not consistent((("nucleolus", "prominent"),), content_of("Myeloblast", {}, schema=LLD_SCHEMA))


def test_seed_sentences_are_kept_verbatim_and_every_pbc_class_has_one():
    assert SEED_SENTENCES["AML"] == "Large immature blood cells with abnormal structure."
    assert SEED_SENTENCES["CLL"] == "Small abnormal lymphocyte cells with slow progression."
    assert set(CLASS_SENTENCES) == {
        "Basophil", "Eosinophil", "Erythroblast", "Immature granulocyte", "Lymphocyte", "Monocyte", "Neutrophil"
    }
    assert class_sentence("ALL") == "Fast-growing immature lymphocyte cells in the blood."
    with pytest.raises(KeyError, match="no fixed sentence"):
        class_sentence("Myeloblast")


def test_empty_content_is_an_error():
    with pytest.raises(ValueError, match="nothing to say"):
        compose((), schema=LLD_SCHEMA)
