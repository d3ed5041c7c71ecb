import dataclasses
from pathlib import Path

import pytest

from leukolens.records import (
    LLD_SCHEMA,
    LLD_TO_WBCATT,
    NOT_APPLICABLE,
    PBC_CLASSES,
    UNKNOWN,
    WBCATT_SCHEMA,
    WBCATT_TO_LLD,
    Attribute,
    Box,
    BoxFormat,
    Cell,
    Dataset,
    Field,
    differences,
    schema_mapping,
)


def test_box_conversions_match_hand_computed_values():
    # A 100x50 image; centre (50, 25), size 20x20 pixels.
    yolo = Box((0.5, 0.5, 0.2, 0.4), BoxFormat.CXCYWH, normalized=True)
    assert yolo.pixels_xyxy((100, 50)) == pytest.approx((40, 15, 60, 35))
    coco = yolo.convert(BoxFormat.XYWH, normalized=False, image_size=(100, 50))
    assert coco.values == pytest.approx((40, 15, 20, 20))
    assert coco.format is BoxFormat.XYWH and not coco.normalized
    back = coco.convert(BoxFormat.CXCYWH, normalized=True, image_size=(100, 50))
    assert back.values == pytest.approx(yolo.values)
    assert yolo.close_to(coco, image_size=(100, 50))
    assert not yolo.close_to(Box((41, 15, 60, 35)), image_size=(100, 50))


def test_box_unit_change_needs_the_image_size():
    with pytest.raises(ValueError, match="image size"):
        Box((0.5, 0.5, 0.2, 0.2), BoxFormat.CXCYWH, normalized=True).pixels_xyxy()


def test_box_format_is_explicit_and_validated():
    assert Box((0, 0, 1, 1), "xywh").format is BoxFormat.XYWH
    with pytest.raises(ValueError):
        Box((0, 0, 1, 1), "ltrb")
    with pytest.raises(ValueError):
        Box((0, 0, 1))


def test_vocabulary_lookups_name_the_vocabulary_on_error():
    assert PBC_CLASSES.index("Monocyte") == 5
    assert PBC_CLASSES.name_of(2) == "Erythroblast"
    with pytest.raises(KeyError, match="pbc"):
        PBC_CLASSES.index("Myeloblast")
    with pytest.raises(KeyError, match="0..6"):
        PBC_CLASSES.name_of(7)


def test_schemas_have_the_published_attributes():
    assert LLD_SCHEMA.names == (
        "cell_size",
        "nuclear_chromatin",
        "nuclear_shape",
        "nucleolus",
        "cytoplasm",
        "cytoplasmic_basophilia",
        "cytoplasmic_vacuoles",
    )
    assert len(WBCATT_SCHEMA) == 11
    assert LLD_SCHEMA["cell_size"].values == ("small", "medium", "large")


def test_lld_tool_spellings_resolve_to_canonical_names():
    assert LLD_SCHEMA["Chromation"].name == "nuclear_chromatin"
    assert LLD_SCHEMA["nuclear_chromatio"].name == "nuclear_chromatin"
    assert LLD_SCHEMA["Nucleous"].name == "nucleolus"
    assert LLD_SCHEMA["Nucleus"].name == "nucleolus"
    with pytest.raises(KeyError):
        LLD_SCHEMA["granularity"]


def test_reserved_values_cannot_be_attribute_values():
    with pytest.raises(ValueError, match="reserved"):
        Attribute("x", ("yes", NOT_APPLICABLE))


LYMPHOCYTE = {
    "cell_size": "small",
    "cell_shape": "round",
    "nucleus_shape": "unsegmented-round",
    "nuclear_cytoplasmic_ratio": "high",
    "chromatin_density": "densely",
    "cytoplasm_vacuole": "no",
    "cytoplasm_texture": "clear",
    "cytoplasm_colour": "blue",
    "granule_type": "nil",
    "granule_colour": "nil",
    "granularity": "no",
}


def test_wbcatt_to_lld_mapping_of_a_lymphocyte():
    assert WBCATT_TO_LLD.apply(LYMPHOCYTE) == {
        "cell_size": "small",
        "nuclear_chromatin": "coarse",
        "nuclear_shape": "regular",
        "nucleolus": UNKNOWN,
        "cytoplasm": "scanty",
        "cytoplasmic_basophilia": UNKNOWN,
        "cytoplasmic_vacuoles": "absent",
    }


def test_mapping_of_shared_values_and_what_does_not_map():
    monocyte = dict(
        LYMPHOCYTE,
        cell_size="big",
        nucleus_shape="unsegmented-indented",
        nuclear_cytoplasmic_ratio="low",
        chromatin_density="loosely",
        cytoplasm_vacuole="yes",
    )
    lld = WBCATT_TO_LLD.apply(monocyte)
    assert (
        lld["cell_size"],
        lld["nuclear_shape"],
        lld["cytoplasm"],
        lld["nuclear_chromatin"],
        lld["cytoplasmic_vacuoles"],
    ) == ("large", "irregular", "abundant", "open", "prominent")
    # Back to WBCAtt: one-to-one values return, the rest are unknown rather than invented.
    wbcatt = LLD_TO_WBCATT.apply(lld)
    assert wbcatt["nuclear_cytoplasmic_ratio"] == "low" and wbcatt["chromatin_density"] == "loosely"
    assert wbcatt["cytoplasm_vacuole"] == "yes" and wbcatt["cell_size"] == "big"
    assert wbcatt["nucleus_shape"] == UNKNOWN  # "irregular" does not say which WBCAtt shape
    assert wbcatt["granularity"] == UNKNOWN
    assert LLD_TO_WBCATT.apply({"cell_size": "medium"})["cell_size"] == UNKNOWN
    assert WBCATT_TO_LLD.apply({"chromatin_density": NOT_APPLICABLE})["nuclear_chromatin"] == NOT_APPLICABLE


@pytest.mark.parametrize("mapping", [WBCATT_TO_LLD, LLD_TO_WBCATT])
def test_every_attribute_is_either_mapped_or_stated_as_unmapped(mapping):
    sources = {m.source for m in mapping.attributes}
    targets = {m.target for m in mapping.attributes}
    assert sources | set(mapping.unmapped_source) == set(mapping.source.names)
    assert not sources & set(mapping.unmapped_source)
    assert targets | set(mapping.unmapped_target) == set(mapping.target.names)
    for m in mapping.attributes:  # every mapped value is a real value on both sides
        for a, b in m.values:
            assert a in mapping.source[m.source].values and b in mapping.target[m.target].values
    assert schema_mapping(mapping.source, mapping.target) is mapping


def _dataset() -> Dataset:
    cell = Cell(Box((10, 10, 30, 30)), "Monocyte", {"cell_size": "big"})
    field = Field(Path("a/x.jpg"), 100, 80, [cell], [Box((0, 0, 50, 40))], split="train")
    return Dataset([field], PBC_CLASSES, WBCATT_SCHEMA)


def test_annotated_fraction_of_a_sparse_field():
    field = _dataset().fields[0]
    assert field.annotated_fraction() == pytest.approx(0.25)
    assert not field.fully_annotated
    assert Field(Path("y.jpg"), 10, 10).annotated_fraction() == 1.0


def test_differences_sees_every_change_and_ignores_moved_images():
    a, b = _dataset(), _dataset()
    b.fields[0] = dataclasses.replace(b.fields[0], image=Path("elsewhere/x.jpg"))
    assert differences(a, b) == []
    b.fields[0].cells[0].attributes["cell_size"] = "small"
    b.fields[0].cells[0].box = Box((0.2, 0.25, 0.2, 0.25), BoxFormat.CXCYWH, normalized=True)  # same pixels
    b.fields[0].split = "test"
    found = differences(a, b)
    assert any("attributes" in d for d in found) and any("split" in d for d in found)
    assert not any("box" in d for d in found)


def test_a_model_head_target_is_the_records_attribute():
    from leukolens.models.cellnet import AttributeSpec as from_models
    from leukolens.records import AttributeSpec

    assert AttributeSpec is Attribute and from_models is Attribute
    # A head built from a schema without the display title is the same attribute (checkpoints store no titles).
    head = AttributeSpec(LLD_SCHEMA["nucleolus"].name, LLD_SCHEMA["nucleolus"].values)
    assert head == LLD_SCHEMA["nucleolus"] and hash(head) == hash(LLD_SCHEMA["nucleolus"])
    assert head != Attribute("nucleolus", ("prominent", "inconspicuous"))  # code order is part of it
    with pytest.raises(ValueError, match="reserved"):
        AttributeSpec("cytoplasm", ("scanty", NOT_APPLICABLE))
