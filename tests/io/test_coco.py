"""COCO JSON: hand-written fixtures (this project's layout, LLD's COCO variant, broken files) and BCCD through COCO."""

import copy
import json
from pathlib import Path

import pytest
from faster_coco_eval import COCO

from leukolens.io.coco import read_coco, write_coco
from leukolens.io.common import InputError, ProblemLog
from leukolens.io.voc import read_voc
from leukolens.records import (
    BLOOD_CELLS,
    LLD_SCHEMA,
    NOT_APPLICABLE,
    UNKNOWN,
    WBCATT_SCHEMA,
    Box,
    BoxFormat,
    Cell,
    Dataset,
    Domain,
    Field,
    Vocabulary,
    differences,
)
from tests.conftest import make_image


def _write_json(path: Path, spec: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return path


def _spec() -> dict:
    """A small COCO file in this project's layout: attributes, a region, domain metadata, an empty image."""
    return {
        "info": {"description": "tiny", "leukolens_vocabulary": "mine", "attribute_schema": "lld"},
        # Out of id order in the file, and "Monocyte" has no box: both must survive.
        "categories": [{"id": 3, "name": "Monocyte"}, {"id": 1, "name": "Myeloblast"}, {"id": 2, "name": "Lymphocyte"}],
        "images": [
            {
                "id": 10,
                "file_name": "images/a.jpg",
                "width": 64,
                "height": 48,
                "split": "train",
                "domain": {"source": "LLD", "microscope": "cheap", "magnification": "100x"},
                "annotated_regions": [[0, 0, 32, 48]],
            },
            {"id": 11, "file_name": "images/b.jpg", "width": 64, "height": 48, "split": "test"},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 10,
                "category_id": 2,
                "bbox": [20, 10, 10.5, 8],
                "area": 84,
                "iscrowd": 0,
                "attributes": {"cell_size": "small", "Chromation": "coarse", "nuclear_shape": NOT_APPLICABLE},
            },
            {"id": 2, "image_id": 10, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0},
        ],
    }


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    make_image(tmp_path / "images" / "a.jpg")
    make_image(tmp_path / "images" / "b.jpg")
    return tmp_path


# --------------------------------------------------------------------------------------------------- reading
def test_reads_attributes_regions_domain_and_empty_image(coco_dir):
    log = ProblemLog()
    dataset = read_coco(_write_json(coco_dir / "tiny.json", _spec()), log=log)
    assert log.problems == []
    assert dataset.name == "tiny"
    assert dataset.classes == Vocabulary("mine", ("Myeloblast", "Lymphocyte", "Monocyte"))
    assert dataset.schema is LLD_SCHEMA
    a, b = dataset.fields
    assert a.image == coco_dir / "images" / "a.jpg" and a.size == (64, 48) and a.split == "train"
    assert a.domain == Domain(source="LLD", microscope="cheap", magnification="100x")
    assert a.regions == [Box((0, 0, 32, 48), BoxFormat.XYXY, normalized=False)]
    assert [c.label for c in a.cells] == ["Lymphocyte", "Myeloblast"]  # file order, not category order
    first = a.cells[0]
    assert first.box == Box((20, 10, 10.5, 8), BoxFormat.XYWH, normalized=False)
    assert first.box.pixels_xyxy() == (20, 10, 30.5, 18)
    # "Chromation" is the LLD tool's spelling of nuclear chromatin.
    assert first.attributes == {"cell_size": "small", "nuclear_chromatin": "coarse", "nuclear_shape": NOT_APPLICABLE}
    assert a.cells[1].attributes == {}
    assert b.cells == [] and b.fully_annotated and b.domain == Domain() and b.split == "test"


def test_reuses_a_known_vocabulary_only_when_the_names_match(coco_dir):
    spec = _spec()
    spec["info"]["leukolens_vocabulary"] = "blood-cells"
    spec["categories"] = [{"id": 1, "name": "WBC"}, {"id": 2, "name": "RBC"}, {"id": 3, "name": "Platelets"}]
    assert read_coco(_write_json(coco_dir / "x.json", spec), log=ProblemLog()).classes is BLOOD_CELLS
    spec["categories"] = spec["categories"][:2]  # claims blood-cells but lacks platelets
    classes = read_coco(_write_json(coco_dir / "y.json", spec), log=ProblemLog()).classes
    assert classes == Vocabulary("y", ("WBC", "RBC"))


def test_lld_coco_variant_with_top_level_codes(coco_dir):
    spec = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 0, "name": "None"}, {"id": 1, "name": "Myeloblast"}],
        "annotations": [
            {
                "id": 5,
                "image_id": 1,
                "category_id": 1,
                "bbox": [2, 3, 20, 30],
                "area": 600,
                "iscrowd": 0,
                "cell_size": 2,
                "nuclear_chromatio": 0,
                "nuclear_shape": 1,
                "nucleolus": 1,
                "cytoplasm": 0,
                "cytoplasmic_basophilia": 2,
                "cytoplasmic_vacuoles": 0,
            },
            {
                "id": 6,
                "image_id": 1,
                "category_id": 0,
                "bbox": [30, 3, 20, 30],
                "area": 600,
                "iscrowd": 0,
                "nuclear_chromatio": 1,
                "nuclear_shape": 2,
                "nucleolus": 0,
                "cytoplasm": 1,
                "cytoplasmic_basophilia": 0,
                "cytoplasmic_vacuoles": 1,
            },
        ],
    }
    log = ProblemLog()
    # file_name "a.jpg" is not beside the JSON: the reader finds it in images/ beside it.
    dataset = read_coco(_write_json(coco_dir / "lld.json", spec), log=log)
    assert log.problems == []
    assert dataset.schema is LLD_SCHEMA
    assert dataset.classes.names == ("None", "Myeloblast") and dataset.classes.name == "lld"
    myeloblast, other = dataset.fields[0].cells
    assert myeloblast.attributes == {
        "cell_size": "large",
        "nuclear_chromatin": "open",
        "nuclear_shape": "irregular",
        "nucleolus": "prominent",
        "cytoplasm": "scanty",
        "cytoplasmic_basophilia": NOT_APPLICABLE,
        "cytoplasmic_vacuoles": "absent",
    }
    # No cell_size key: the cell has six attributes, and cell size is not invented.
    assert other.attributes == {
        "nuclear_chromatin": "coarse",
        "nuclear_shape": NOT_APPLICABLE,
        "nucleolus": "inconspicuous",
        "cytoplasm": "abundant",
        "cytoplasmic_basophilia": "slight",
        "cytoplasmic_vacuoles": "prominent",
    }


def test_schema_guessed_from_wbcatt_attribute_names(coco_dir):
    spec = _spec()
    del spec["info"]["attribute_schema"]
    spec["annotations"] = spec["annotations"][1:]
    spec["annotations"][0]["attributes"] = {"granule_color": "pink", "cell_shape": "round"}
    dataset = read_coco(_write_json(coco_dir / "w.json", spec), log=ProblemLog())
    assert dataset.schema is WBCATT_SCHEMA
    assert dataset.fields[0].cells[0].attributes == {"granule_colour": "pink", "cell_shape": "round"}


def test_image_root_and_size_from_the_image_header(tmp_path):
    make_image(tmp_path / "pictures" / "c.png", (30, 20))
    spec = {
        "images": [{"id": 1, "file_name": "c.png"}],
        "categories": [{"id": 1, "name": "WBC"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 30, 20]}],
    }
    dataset = read_coco(
        _write_json(tmp_path / "json" / "c.json", spec), log=ProblemLog(), image_root=tmp_path / "pictures"
    )
    assert dataset.fields[0].image == tmp_path / "pictures" / "c.png"
    assert dataset.fields[0].size == (30, 20)
    assert dataset.schema is None and dataset.fields[0].cells[0].attributes == {}


# ------------------------------------------------------------------------------------------------ broken files
def _orphan(spec):
    spec["annotations"][1]["image_id"] = 99


def _unknown_class(spec):
    spec["annotations"][1]["category_id"] = 7


def _zero_width(spec):
    spec["annotations"][1]["bbox"] = [1, 1, 0, 10]


def _outside(spec):
    spec["annotations"][1]["bbox"] = [60, 1, 10, 10]  # reaches x = 70 in a 64-pixel image


def _bad_attribute(spec):
    spec["annotations"][1]["attributes"] = {"nucleolus": "huge"}


def _region_outside(spec):
    spec["images"][0]["annotated_regions"] = [[0, 0, 100, 48]]


def _duplicate_id(spec):
    spec["annotations"].append(dict(spec["annotations"][1], bbox=[40, 20, 5, 5]))


def _missing_image(spec):
    spec["images"][1]["file_name"] = "images/gone.jpg"
    spec["annotations"].append({"id": 9, "image_id": 11, "category_id": 1, "bbox": [1, 1, 5, 5]})


BROKEN = [
    # how to break the file, the problem's kind, what its message says, cells kept in image a, class of the skipped
    # cell (None when no single cell is skipped)
    (_orphan, "orphan-annotation", "annotation id 2: no image has id 99", 1, "Myeloblast"),
    (_unknown_class, "unknown-class", "annotation id 2 (image 'a.jpg'): category_id 7", 1, None),
    (
        _zero_width,
        "box-range",
        "annotation id 2 (image 'a.jpg'): box [1, 1, 0, 10] has non-positive width",
        1,
        "Myeloblast",
    ),
    (_outside, "box-range", "box [60, 1, 10, 10] reaches outside the 64x48 image", 1, "Myeloblast"),
    (_bad_attribute, "attribute-value", "nucleolus value 'huge'", 2, None),  # the cell stays, without it
    (_region_outside, "region-range", "image id 10 ('images/a.jpg'): annotated region [0, 0, 100, 48]", 2, None),
    (_duplicate_id, "duplicate", "annotation id 2 (image 'a.jpg'): annotation id repeats", 2, "Myeloblast"),
    (
        _missing_image,
        "missing-image",
        "image id 11 ('images/gone.jpg'): image file not found; its 1 annotation is skipped",
        2,
        None,
    ),
]


@pytest.mark.parametrize(
    "break_it, kind, message, cells_in_a, label", BROKEN, ids=[b[0].__name__.strip("_") for b in BROKEN]
)
def test_broken_item_is_logged_and_skipped(coco_dir, break_it, kind, message, cells_in_a, label):
    spec = copy.deepcopy(_spec())
    break_it(spec)
    path = _write_json(coco_dir / "broken.json", spec)
    log = ProblemLog()
    dataset = read_coco(path, log=log)
    assert [p.kind for p in log.problems] == [kind]
    problem = log.problems[0]
    assert problem.path == str(path) and str(path) in str(problem)
    assert message in problem.message and problem.label == label and problem.line is None
    # The good annotation (id 1) is always kept.
    a = dataset.fields[0]
    assert len(a.cells) == cells_in_a and a.cells[0].label == "Lymphocyte"
    with pytest.raises(InputError) as raised:
        read_coco(path, log=ProblemLog(strict=True))
    assert raised.value.problem.kind == kind


def test_bad_attribute_leaves_the_rest_of_the_cell(coco_dir):
    spec = _spec()
    _bad_attribute(spec)
    dataset = read_coco(_write_json(coco_dir / "attr.json", spec), log=ProblemLog())
    assert dataset.fields[0].cells[1].label == "Myeloblast" and dataset.fields[0].cells[1].attributes == {}


def test_json_syntax_error_raises_with_its_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n "images": [\n  {"id": 1,}\n ]\n}\n', encoding="utf-8")
    with pytest.raises(InputError) as raised:
        read_coco(path, log=ProblemLog())
    assert raised.value.problem.kind == "bad-json" and raised.value.problem.line == 3
    assert str(path) in str(raised.value)


def test_strict_mode_raises_at_the_first_problem(coco_dir):
    spec = _spec()
    _unknown_class(spec)
    _outside(spec)  # the same annotation; also an orphan below, later in the file
    spec["annotations"].append({"id": 3, "image_id": 42, "category_id": 1, "bbox": [1, 1, 2, 2]})
    path = _write_json(coco_dir / "two.json", spec)
    log = ProblemLog()
    read_coco(path, log=log)
    assert [p.kind for p in log.problems] == ["unknown-class", "orphan-annotation"]
    with pytest.raises(InputError) as raised:
        read_coco(path, log=ProblemLog(strict=True))
    assert raised.value.problem.kind == "unknown-class"


# --------------------------------------------------------------------------------------------------- writing
def _dataset(root: Path) -> Dataset:
    """Everything a data set can hold: attributes (special values too), regions, domains, splits, an empty field."""
    a = make_image(root / "src" / "a.jpg", (64, 48))
    b = make_image(root / "src" / "b.png", (40, 30))
    cells = [
        Cell(
            Box((0.5, 0.5, 0.25, 0.5), BoxFormat.CXCYWH, normalized=True),
            "Myeloblast",
            {"cell_size": "large", "nucleolus": NOT_APPLICABLE, "cytoplasm": UNKNOWN},
        ),
        Cell(Box((1.25, 2, 9.75, 13.5), BoxFormat.XYXY), "Lymphocyte"),
    ]
    return Dataset(
        [
            Field(a, 64, 48, cells, [Box((0, 0, 32.5, 48))], Domain(source="LLD", camera="phone"), "train"),
            Field(b, 40, 30, [], [], Domain(), None),
        ],
        Vocabulary("mine", ("Lymphocyte", "Unused", "Myeloblast")),
        LLD_SCHEMA,
        name="everything",
    )


def test_write_then_read_loses_nothing(tmp_path):
    dataset = _dataset(tmp_path)
    report = write_coco(dataset, tmp_path / "out")
    assert report.path == tmp_path / "out" / "annotations.json"
    assert (report.fields, report.cells, report.files, dict(report.dropped)) == (2, 2, 1, {})
    spec = json.loads(report.path.read_text(encoding="utf-8"))
    assert spec["info"] == {"description": "everything", "leukolens_vocabulary": "mine", "attribute_schema": "lld"}
    assert spec["categories"] == [
        {"id": 1, "name": "Lymphocyte"},
        {"id": 2, "name": "Unused"},
        {"id": 3, "name": "Myeloblast"},
    ]
    first = spec["annotations"][0]
    assert (first["bbox"], first["area"], first["iscrowd"], first["category_id"]) == ([24, 12, 16, 24], 384, 0, 3)
    assert first["attributes"] == {"cell_size": "large", "nucleolus": "not applicable", "cytoplasm": "unknown"}
    assert spec["annotations"][1]["bbox"] == [1.25, 2, 8.5, 11.5]
    assert spec["images"][0]["file_name"] == str(tmp_path / "src" / "a.jpg")  # "none": images stay, absolute
    assert spec["images"][0]["annotated_regions"] == [[0, 0, 32.5, 48]]
    back = read_coco(report.path, log=ProblemLog())
    assert differences(dataset, back) == []
    assert back.classes == dataset.classes and back.name == "everything"
    assert COCO(str(report.path)).getAnnIds() == [1, 2]


def test_write_copies_images_beside_a_named_json_file(tmp_path):
    dataset = _dataset(tmp_path)
    report = write_coco(dataset, tmp_path / "out" / "set.json", images="copy")
    assert report.path == tmp_path / "out" / "set.json"
    spec = json.loads(report.path.read_text(encoding="utf-8"))
    assert [i["file_name"] for i in spec["images"]] == ["images/a.jpg", "images/b.png"]
    copied = tmp_path / "out" / "images" / "b.png"
    assert copied.is_file() and not copied.is_symlink()
    back = read_coco(report.path, log=ProblemLog())
    assert back.fields[1].image == tmp_path / "out" / "images" / "b.png"
    assert differences(dataset, back) == []


# --------------------------------------------------------------------------------------------------- real data
def test_bccd_through_coco(shared_data, tmp_path):
    bccd = read_voc(shared_data / "bccd", log=ProblemLog())
    report = write_coco(bccd, tmp_path / "bccd.json")
    coco = COCO(str(report.path))
    per_category = {c["name"]: len(coco.getAnnIds(catIds=[c["id"]])) for c in coco.loadCats(coco.getCatIds())}
    assert per_category == dict(bccd.class_counts()) == {"WBC": 372, "RBC": 4153, "Platelets": 361}
    assert len(coco.getImgIds()) == 364
    log = ProblemLog()
    back = read_coco(report.path, log=log)
    assert log.problems == []
    assert differences(bccd, back) == []
    assert back.classes is BLOOD_CELLS and {f.domain.source for f in back.fields} == {"BCCD"}
