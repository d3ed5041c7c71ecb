"""Pascal VOC: the real BCCD set, hand-written fixtures with CVAT attributes and the side file, broken files."""

import json
from pathlib import Path

import pytest

from leukolens.io.common import InputError, ProblemLog
from leukolens.io.voc import read_voc, write_voc
from leukolens.records import (
    BLOOD_CELLS,
    LLD_SCHEMA,
    NOT_APPLICABLE,
    UNKNOWN,
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

# --------------------------------------------------------------------------------------------- real data set


@pytest.fixture(scope="module")
def bccd(shared_data):
    log = ProblemLog()
    return read_voc(shared_data / "bccd", log=log), log


def test_bccd_counts_splits_and_its_two_point_boxes(bccd, shared_data):
    dataset, log = bccd
    assert len(dataset) == 364
    assert dataset.classes is BLOOD_CELLS and dataset.schema is None and dataset.name == "bccd"
    assert {s: len(f) for s, f in dataset.splits.items()} == {"train": 205, "val": 87, "test": 72}
    # The XML files hold 372 WBC, 4,155 RBC and 361 platelet boxes; two RBC "boxes" are single points
    # (xmin = xmax, ymin = ymax), which no detector can train on: they are reported and left out.
    assert dataset.class_counts() == {"WBC": 372, "RBC": 4153, "Platelets": 361}
    assert [(Path(p.path).name, p.line, p.kind) for p in log.problems] == [
        ("BloodImage_00338.xml", 163, "box-range"),
        ("BloodImage_00343.xml", 55, "box-range"),
    ]
    assert "RBC box (504, 337, 504, 337) has xmax <= xmin" in log.problems[0].message
    # The problems name the class they left out, so a summary can still account for all 4,155 RBC boxes.
    assert [p.label for p in log.problems] == ["RBC", "RBC"]
    assert all(f.domain == Domain(source="BCCD") for f in dataset.fields)
    assert {f.size for f in dataset.fields} == {(640, 480)}
    first = next(f for f in dataset.fields if f.id == "BloodImage_00000")
    assert first.split == "val" and first.image == shared_data / "bccd" / "BCCD" / "JPEGImages" / "BloodImage_00000.jpg"
    assert first.cells[0] == Cell(Box((260, 177, 491, 376), BoxFormat.XYXY, normalized=False), "WBC")
    # Boxes touching the border (xmax = 640 of a 640-pixel image) are valid.
    assert Box((555, 356, 640, 455)) in [c.box for c in first.cells]


def test_bccd_reads_from_the_folder_holding_annotations_too(bccd, shared_data):
    dataset, _ = bccd
    direct = read_voc(shared_data / "bccd" / "BCCD", log=ProblemLog())
    assert differences(dataset, direct, compare_paths=True) == []


def test_bccd_voc_round_trip(bccd, tmp_path):
    dataset, _ = bccd
    report = write_voc(dataset, tmp_path / "out")
    assert (report.fields, report.cells) == (364, 4886)
    assert (tmp_path / "out" / "JPEGImages" / "BloodImage_00000.jpg").is_symlink()
    assert (tmp_path / "out" / "ImageSets" / "Main" / "val.txt").read_text().split()[0] == "BloodImage_00000"
    log = ProblemLog()
    back = read_voc(tmp_path / "out", log=log)
    assert log.problems == []
    assert differences(dataset, back) == []
    assert back.classes is BLOOD_CELLS and back.name == "bccd"  # kept by the side file, not the folder "out"


# ------------------------------------------------------------------------------------------------ fixtures
def _object(name: str, box: tuple, attributes: dict | None = None) -> str:
    xml = f"<object><name>{name}</name><bndbox>"
    xml += "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    xml += "</bndbox>"
    if attributes:
        xml += (
            "<attributes>"
            + "".join(f"<attribute><name>{n}</name><value>{v}</value></attribute>" for n, v in attributes.items())
            + "</attributes>"
        )
    return xml + "</object>\n"


def _voc(
    root: Path,
    objects: str,
    *,
    stem: str = "f1",
    size: str = "<width>64</width><height>48</height>",
    database: str = "Unknown",
    image: bool = True,
) -> Path:
    """A one-image VOC set; each object on its own line so that problems have a line to point at."""
    if image:
        make_image(root / "JPEGImages" / f"{stem}.jpg", (64, 48))
    xml = (
        f"<annotation>\n<filename>{stem}.jpg</filename>\n<source><database>{database}</database></source>\n"
        f"<size>{size}<depth>3</depth></size>\n{objects}</annotation>\n"
    )
    path = root / "Annotations" / f"{stem}.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(xml, encoding="utf-8")
    return path


def test_plain_voc_without_side_file(tmp_path):
    root = tmp_path / "smears"
    _voc(root, _object("Neutrophil", (1, 2, 30.5, 40)) + _object("Blast", (0, 0, 64, 48)), database="Lab A")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_text("f1\n")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("f1\n")  # ignored: it repeats train and val
    log = ProblemLog()
    dataset = read_voc(tmp_path, log=log)  # the parent of the folder holding Annotations
    assert log.problems == []
    assert dataset.classes == Vocabulary("voc", ("Blast", "Neutrophil")) and dataset.schema is None
    (field,) = dataset.fields
    assert field.split == "test" and field.domain == Domain(source="Lab A") and field.size == (64, 48)
    assert field.cells[0].box == Box((1, 2, 30.5, 40), BoxFormat.XYXY, normalized=False)
    assert [c.label for c in field.cells] == ["Neutrophil", "Blast"]


def test_cvat_attributes_with_the_side_file(tmp_path):
    objects = _object("WBC", (1, 1, 20, 20), {"Chromation": "open", "nucleolus": NOT_APPLICABLE})
    _voc(tmp_path, objects, size="<width>0</width><height>0</height>")  # labelImg's "size unknown"
    side = {
        "vocabulary": "blood-cells",
        "attribute_schema": "lld",
        "domains": {"f1": {"stain": "Giemsa"}},
        "regions": {"f1": [[0, 0, 32, 48]]},
    }
    (tmp_path / "leukolens.json").write_text(json.dumps(side))
    log = ProblemLog()
    dataset = read_voc(tmp_path, log=log)
    assert log.problems == []
    assert dataset.classes is BLOOD_CELLS and dataset.schema is LLD_SCHEMA
    (field,) = dataset.fields
    assert field.size == (64, 48)  # from the image header
    assert field.domain == Domain(stain="Giemsa") and field.regions == [Box((0, 0, 32, 48))]
    assert field.cells[0].attributes == {"nuclear_chromatin": "open", "nucleolus": NOT_APPLICABLE}


def test_write_then_read_loses_nothing(tmp_path):
    a = make_image(tmp_path / "src" / "a.jpg", (64, 48))
    b = make_image(tmp_path / "src" / "b.png", (40, 30))
    cells = [
        Cell(
            Box((0.5, 0.5, 0.25, 0.5), BoxFormat.CXCYWH, normalized=True),
            "Myeloblast",
            {"cell_size": "large", "nucleolus": NOT_APPLICABLE, "cytoplasm": UNKNOWN},
        ),
        Cell(Box((1.25, 2, 8.5, 11.5), BoxFormat.XYWH), "Lymphocyte & co"),  # XML escaping
    ]
    dataset = Dataset(
        [
            Field(a, 64, 48, cells, [Box((0, 0, 32.5, 48))], Domain(source="LLD", camera="phone"), "holdout"),
            Field(b, 40, 30, [], [], Domain(), "train"),
        ],
        Vocabulary("mine", ("Myeloblast", "Unused", "Lymphocyte & co")),
        LLD_SCHEMA,
        name="everything",
    )
    report = write_voc(dataset, tmp_path / "out", images="none")
    assert (report.fields, report.cells, dict(report.dropped)) == (2, 2, {})
    xml = (tmp_path / "out" / "Annotations" / "a.xml").read_text(encoding="utf-8")
    assert "<xmin>24</xmin>" in xml and "<xmin>1.25</xmin>" in xml and "Lymphocyte &amp; co" in xml
    assert f"<path>{a}</path>" in xml  # images left in place: the reader follows <path>
    main = tmp_path / "out" / "ImageSets" / "Main"
    assert sorted(p.name for p in main.iterdir()) == ["holdout.txt", "train.txt", "trainval.txt"]
    log = ProblemLog()
    back = read_voc(tmp_path / "out", log=log)
    assert log.problems == []
    assert differences(dataset, back) == []
    assert back.classes == dataset.classes and back.name == "everything" and back.fields[0].image == a


# ------------------------------------------------------------------------------------------------ broken files
def test_malformed_xml_is_logged_with_its_line(tmp_path):
    _voc(tmp_path, _object("WBC", (1, 1, 20, 20)), stem="good")
    bad = _voc(tmp_path, "<object><name>WBC</name>\n<bndbox><xmin>1</xmin></object>\n", stem="bad")
    log = ProblemLog()
    dataset = read_voc(tmp_path, log=log)
    (problem,) = log.problems
    assert (problem.kind, problem.path, problem.line) == ("bad-xml", str(bad), 6)
    assert "mismatched tag" in problem.message and str(bad) in str(problem)
    assert [f.id for f in dataset.fields] == ["good"]


def test_entity_expansion_is_refused_and_reported(tmp_path):
    # "Billion laughs": each entity repeats the one before ten times; lol9 would be 3 GB of text.
    entities = '<!ENTITY lol0 "lol">' + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    _voc(tmp_path, _object("WBC", (1, 1, 20, 20)), stem="good")
    bomb = tmp_path / "Annotations" / "bomb.xml"
    bomb.write_text(
        f'<?xml version="1.0"?>\n<!DOCTYPE annotation [{entities}]>\n<annotation><object><name>&lol9;'
        "</name></object></annotation>\n"
    )
    log = ProblemLog()
    dataset = read_voc(tmp_path, log=log)
    (problem,) = log.problems
    assert (problem.kind, problem.path, problem.line) == ("bad-xml", str(bomb), 2)
    assert "entity 'lol0'" in problem.message and "refused" in problem.message
    assert [f.id for f in dataset.fields] == ["good"]


def test_external_entities_are_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read me")
    bad = tmp_path / "Annotations" / "bad.xml"
    bad.parent.mkdir()
    bad.write_text(
        f'<!DOCTYPE annotation [<!ENTITY x SYSTEM "{secret}">]>\n<annotation><object><name>&x;</name>'
        "</object></annotation>\n"
    )
    log = ProblemLog()
    read_voc(tmp_path, log=log)
    assert [(p.kind, p.path) for p in log.problems] == [("bad-xml", str(bad))]
    assert "do not read me" not in log.problems[0].message


BROKEN = [
    # kind, the bad object, what the message says, the class of the skipped cell (None: the cell is kept)
    ("box-range", _object("RBC", (20, 5, 20, 9)), "RBC box (20, 5, 20, 9) has xmax <= xmin", "RBC"),
    ("box-range", _object("RBC", (10, 5, 66, 9)), "RBC box (10, 5, 66, 9) reaches outside the 64x48 image", "RBC"),
    (
        "unknown-class",
        _object("Erythroblast", (1, 1, 5, 5)),
        "class 'Erythroblast' is not in vocabulary",
        "Erythroblast",
    ),
    ("duplicate", _object("WBC", (1, 1, 20, 20)), "WBC box (1, 1, 20, 20) repeats the object at line 5", "WBC"),
    ("attribute-value", _object("RBC", (1, 1, 5, 5), {"nucleolus": "huge"}), "nucleolus value 'huge'", None),
]


@pytest.mark.parametrize("kind, bad_object, message, label", BROKEN, ids=[f"{b[0]}-{i}" for i, b in enumerate(BROKEN)])
def test_broken_object_is_logged_with_file_and_line(tmp_path, kind, bad_object, message, label):
    # Line 5 is the good object; the bad one is on line 6. A 1-pixel overshoot is tolerated.
    objects = _object("WBC", (1, 1, 20, 20)) + bad_object + _object("Platelets", (40, 30, 65, 49))
    path = _voc(tmp_path, objects)
    (tmp_path / "leukolens.json").write_text(json.dumps({"vocabulary": "blood-cells", "attribute_schema": "lld"}))
    log = ProblemLog()
    dataset = read_voc(tmp_path, log=log)
    assert [(p.kind, p.path, p.line) for p in log.problems] == [(kind, str(path), 6)]
    assert message in log.problems[0].message and f"{path}:6:" in str(log.problems[0])
    assert log.problems[0].label == label
    labels = [c.label for c in dataset.fields[0].cells]
    assert labels == (["WBC", "RBC", "Platelets"] if label is None else ["WBC", "Platelets"])
    with pytest.raises(InputError) as raised:
        read_voc(tmp_path, log=ProblemLog(strict=True))
    assert raised.value.problem.kind == kind and raised.value.problem.line == 6


def test_annotation_without_its_image(tmp_path):
    _voc(tmp_path, _object("WBC", (1, 1, 20, 20)), stem="here")
    lonely = _voc(tmp_path, _object("WBC", (1, 1, 20, 20)), stem="gone", image=False)
    log = ProblemLog()
    dataset = read_voc(tmp_path, log=log)
    (problem,) = log.problems
    assert (problem.kind, problem.path, problem.line) == ("missing-image", str(lonely), 2)
    assert "'gone.jpg' not found" in problem.message
    assert [f.id for f in dataset.fields] == ["here"]


def test_split_lists_checked_against_the_annotations(tmp_path):
    _voc(tmp_path, _object("WBC", (1, 1, 20, 20)), stem="f1")
    _voc(tmp_path, _object("WBC", (1, 1, 20, 20)), stem="f2")
    main = tmp_path / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "train.txt").write_text("f1\nghost\n")
    (main / "val.txt").write_text("f1\n")
    log = ProblemLog()
    dataset = read_voc(tmp_path, log=log)
    assert [(p.kind, Path(p.path).name, p.line) for p in log.problems] == [
        ("missing-annotation", "train.txt", 2),
        ("duplicate", "val.txt", 1),
    ]
    assert "'f1' is already in split 'train' (train.txt:1)" in log.problems[1].message
    assert {f.id: f.split for f in dataset.fields} == {"f1": "train", "f2": None}


def test_no_voc_layout_raises(tmp_path):
    with pytest.raises(InputError) as raised:
        read_voc(tmp_path, log=ProblemLog())
    assert raised.value.problem.kind == "layout"
