"""Properties every reader and writer keeps, checked on inputs hypothesis makes up.

1. Whatever bytes a label file holds, reading gives reported problems (or a :class:`LeukolensError` with a message
   for input that cannot be read at all), never a traceback of another kind; in strict mode too.
2. Writing records and reading them back gives the same records, for every format that can hold them (the writer's
   report then drops nothing).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from leukolens.errors import LeukolensError
from leukolens.io import read_dataset, write_dataset
from leukolens.io.common import ProblemLog
from leukolens.records import (
    LLD_CLASSES,
    LLD_SCHEMA,
    NOT_APPLICABLE,
    SPLITS,
    UNKNOWN,
    WBCATT_CLASSES,
    WBCATT_SCHEMA,
    Box,
    BoxFormat,
    Cell,
    Dataset,
    Domain,
    Field,
    Vocabulary,
    differences,
    whole_image_box,
)
from tests.conftest import make_image

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SIZES = ((64, 48), (40, 30), (50, 50), (33, 21))
IMAGES = Path(tempfile.mkdtemp(prefix="leukolens-properties-"))
"""Images the generated data sets point at, made once: a pool of four, under distinct names."""
POOL = [make_image(IMAGES / f"img{i}{'.png' if i % 2 else '.jpg'}", size) for i, size in enumerate(SIZES)]


def _workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="leukolens-example-")


def _reads_cleanly(read: Callable[[ProblemLog], Dataset]) -> None:
    """Reading, leniently and strictly, ends in records or a LeukolensError that says something."""
    log = ProblemLog()
    try:
        read(log)
    except LeukolensError as error:
        assert str(error)
    assert all(p.message and p.path for p in log.problems)
    try:
        read(ProblemLog(strict=True))
    except LeukolensError as error:
        assert str(error)


# -------------------------------------------------------------------------------------------------- fuzzing
ANY_TEXT = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    # Lines of numbers are what label files hold: near misses find more than noise.
    st.lists(
        st.lists(
            st.one_of(
                st.integers(-3, 20).map(str),
                st.floats(allow_nan=True, allow_infinity=True).map(repr),
                st.sampled_from(["nan", "inf", "-0", "1e309", "0x1", "", "a"]),
            ),
            max_size=17,
        ).map(" ".join),
        max_size=4,
    ).map(lambda lines: "\n".join(lines).encode()),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("format", ["lld", "yolo"])
@pytest.mark.parametrize("name", ["labels/f1.txt", "data.yaml", "classes.txt", "fields.csv"])
@FUZZ
@given(data=ANY_TEXT)
# Crashes hypothesis found once: a NaN or non-ASCII digit class id, a data.yaml that is not UTF-8, not a mapping, or
# keyed by names; repeated class names; fields.csv rows longer or shorter than its header.
@example(data=b"nan 0 0 0 0 0 0 0 0 0 0 0\n\xc2\xb2 0.5 0.5 0.1 0.1\n")
@example(data=b"\x80")
@example(data=b"(")
@example(data=b"names: {a: x}\n")
@example(data=b"names: [A, A]\nA\nA\n")
@example(data=b"image,source\nf1.jpg,x,extra\nf1\n")
def test_yolo_and_lld_files_with_any_bytes(format, name, data):
    with _workdir() as work:
        root = Path(work)
        make_image(root / "images" / "f1.jpg", (20, 10))
        _write(root / "labels" / "f1.txt", b"0 0.5 0.5 0.2 0.2" + (b" 0 0 0 0 0 0 0\n" if format == "lld" else b"\n"))
        _write(root / name, data)
        _reads_cleanly(lambda log: read_dataset(root, format=format, log=log, names=("A", "B", "C")))


COCO_SPEC = {
    "info": {"description": "x", "attribute_schema": "lld"},
    "images": [{"id": 1, "file_name": "f1.jpg", "width": 20, "height": 10, "annotated_regions": [[0, 0, 10, 10]]}],
    "categories": [{"id": 1, "name": "A"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "attributes": {"cell_size": "large"}}
    ],
}


def _replace_at(spec, path: list, value):
    """A deep copy of ``spec`` with the item at ``path`` (keys and indices, chosen by position) replaced."""
    spec = json.loads(json.dumps(spec))
    node = spec
    for step in path[:-1]:
        if isinstance(node, dict) and node:
            node = node[sorted(node)[step % len(node)]]
        elif isinstance(node, list) and node:
            node = node[step % len(node)]
    if isinstance(node, dict) and node:
        node[sorted(node)[path[-1] % len(node)]] = value
    elif isinstance(node, list) and node:
        node[path[-1] % len(node)] = value
    return spec


@FUZZ
@given(
    data=st.one_of(
        ANY_TEXT,
        st.builds(_replace_at, st.just(COCO_SPEC), st.lists(st.integers(0, 9), min_size=1, max_size=5), JSON).map(
            lambda s: json.dumps(s).encode()
        ),
    )
)
@example(data=json.dumps({**COCO_SPEC, "categories": 1}).encode())  # found once: categories not a list
@example(data=json.dumps({**COCO_SPEC, "images": [{**COCO_SPEC["images"][0], "id": []}]}).encode())  # unhashable
@example(data=json.dumps({**COCO_SPEC, "images": [{**COCO_SPEC["images"][0], "annotated_regions": 5}]}).encode())
def test_coco_files_with_any_bytes(data):
    with _workdir() as work:
        root = Path(work)
        make_image(root / "f1.jpg", (20, 10))
        path = _write(root / "annotations.json", data)
        _reads_cleanly(lambda log: read_dataset(path, format="coco", log=log))


VOC_XML = (
    "<annotation><filename>{0}</filename><size><width>{1}</width><height>{2}</height></size>"
    "<object><name>{3}</name><bndbox><xmin>{4}</xmin><ymin>{5}</ymin><xmax>{6}</xmax><ymax>{7}</ymax></bndbox>"
    "<attributes><attribute><name>{8}</name><value>{9}</value></attribute></attributes></object></annotation>"
)
XML_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=8).map(
    lambda t: t.replace("&", "&amp;").replace("<", "&lt;")
)


@pytest.mark.parametrize("name", ["Annotations/f1.xml", "leukolens.json", "ImageSets/Main/train.txt"])
@FUZZ
@given(
    data=st.one_of(
        ANY_TEXT,
        st.lists(XML_TEXT, min_size=10, max_size=10).map(lambda parts: VOC_XML.format(*parts).encode()),
        JSON.map(lambda value: json.dumps(value).encode()),
    )
)
def test_voc_files_with_any_bytes(name, data):
    with _workdir() as work:
        root = Path(work)
        make_image(root / "JPEGImages" / "f1.jpg", (20, 10))
        _write(
            root / "Annotations" / "f1.xml", VOC_XML.format("f1.jpg", 20, 10, "A", 1, 1, 5, 5, "size", "large").encode()
        )
        _write(root / name, data)
        _reads_cleanly(lambda log: read_dataset(root, format="voc", log=log))


WBCATT_HEADER = "img_name,label," + ",".join(WBCATT_SCHEMA.names) + ",path\n"
CSV_FIELD = st.text(max_size=8).map(lambda t: '"' + t.replace('"', '""') + '"')


@FUZZ
@given(
    data=st.one_of(
        ANY_TEXT,
        st.lists(st.lists(CSV_FIELD, max_size=15).map(",".join), max_size=3).map(
            lambda rows: (WBCATT_HEADER + "\n".join(rows)).encode()
        ),
    )
)
def test_wbcatt_csv_with_any_bytes(data):
    with _workdir() as work:
        root = Path(work)
        make_image(root / "images" / "f1.jpg", (20, 10))
        path = _write(root / "wbcatt.csv", data)
        _reads_cleanly(lambda log: read_dataset(path, format="wbcatt", log=log))


FOLDER_NAME = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=8
).filter(lambda n: n not in (".", ".."))


@FUZZ
@given(data=ANY_TEXT, label=FOLDER_NAME, split=st.sampled_from([None, *SPLITS]))
def test_folders_with_any_image_bytes_and_folder_names(data, label, split):
    with _workdir() as work:
        root = Path(work) / "cells"
        parent = root / split if split else root
        make_image(parent / "A" / "good.png", (20, 10))
        try:
            _write(parent / label / "f1.jpg", data)
        except OSError:  # a name the file system refuses (too long in bytes) is not the reader's business
            return
        _reads_cleanly(lambda log: read_dataset(root, format="folders", log=log))


# ------------------------------------------------------------------------------------------------ round trips
def _box(size: tuple[int, int]) -> st.SearchStrategy[Box]:
    """A box inside the image, corners on half pixels."""
    width, height = size
    return st.tuples(
        st.integers(0, 2 * width - 2),
        st.integers(0, 2 * height - 2),
        st.integers(1, 2 * width),
        st.integers(1, 2 * height),
    ).map(
        lambda v: Box(
            (
                v[0] / 2,
                v[1] / 2,
                max(v[0] + 1, v[2]) / 2 if max(v[0] + 1, v[2]) <= 2 * width else width,
                max(v[1] + 1, v[3]) / 2 if max(v[1] + 1, v[3]) <= 2 * height else height,
            ),
            BoxFormat.XYXY,
            normalized=False,
        )
    )


def _attributes(schema, *, specials: tuple[str, ...], complete: bool) -> st.SearchStrategy[dict[str, str]]:
    values = {a.name: st.sampled_from(a.values + specials) for a in schema}
    if complete:
        return st.fixed_dictionaries(values)
    return st.fixed_dictionaries({}, optional=values)


DOMAINS = st.builds(
    Domain,
    source=st.sampled_from([None, "LLD", "BCCD"]),
    camera=st.sampled_from([None, "phone", "CellaVision"]),
    stain=st.sampled_from([None, "Wright", "May-Grunwald-Giemsa"]),
    sample_id=st.sampled_from([None, "P1", "P 2"]),
)


@st.composite
def detection_sets(draw, *, classes: Vocabulary, schema, attributes, regions: int, domains: bool, splits) -> Dataset:
    """Fields of the image pool with boxed cells; what the caller's format can hold, and nothing more."""
    images = draw(st.lists(st.sampled_from(range(len(POOL))), min_size=1, max_size=3, unique=True))
    split_choice = draw(splits)
    fields = []
    for i in images:
        size = SIZES[i]
        cells = draw(
            st.lists(
                st.builds(Cell, _box(size), st.sampled_from(classes.names), attributes),
                max_size=4,
                unique_by=lambda c: (c.label, c.box.values),
            )
        )
        field_regions = draw(st.lists(_box(size), max_size=regions)) if cells or regions > 1 else []
        domain = draw(DOMAINS) if domains else Domain()
        split = split_choice if not callable(split_choice) else split_choice(draw)
        fields.append(Field(POOL[i], size[0], size[1], cells, field_regions, domain, split))
    return Dataset(fields, classes, schema, name="generated")


MINE = Vocabulary("mine", ("Lymphocyte", "Unused", "Myeloblast", "Smudge cell"))
ANY_SPLIT = st.just(lambda draw: draw(st.sampled_from([None, *SPLITS])))
ONE_SPLIT = st.sampled_from([None, *SPLITS])  # one for the whole data set

# COCO and VOC (with its side file) hold everything: partial attributes, both special values, regions, domains.
EVERYTHING = detection_sets(
    classes=MINE,
    schema=LLD_SCHEMA,
    attributes=_attributes(LLD_SCHEMA, specials=(NOT_APPLICABLE, UNKNOWN), complete=False),
    regions=2,
    domains=True,
    splits=ANY_SPLIT,
)

FORMATS = {
    "coco": EVERYTHING,
    "voc": EVERYTHING,
    # LLD: all seven attributes as codes (2 is "not applicable", except for cell size), one region per field.
    "lld": detection_sets(
        classes=LLD_CLASSES,
        schema=LLD_SCHEMA,
        attributes=st.fixed_dictionaries(
            {
                a.name: st.sampled_from(a.values if a.name == "cell_size" else (*a.values, NOT_APPLICABLE))
                for a in LLD_SCHEMA
            }
        ),
        regions=1,
        domains=True,
        splits=ONE_SPLIT,
    ),
    "yolo": detection_sets(
        classes=MINE, schema=None, attributes=st.just({}), regions=0, domains=True, splits=ONE_SPLIT
    ),
}


@st.composite
def crop_sets(draw, *, attributes: bool) -> Dataset:
    """Single-cell crops: one whole-image cell per field (WBCAtt with its eleven attributes, folders without)."""
    images = draw(st.lists(st.sampled_from(range(len(POOL))), min_size=1, max_size=4, unique=True))
    split = draw(st.sampled_from([None, *SPLITS]))
    fields = []
    for i in images:
        values = draw(_attributes(WBCATT_SCHEMA, specials=(), complete=True)) if attributes else {}
        label = draw(st.sampled_from(WBCATT_CLASSES.names))
        cell = Cell(whole_image_box(SIZES[i]), label, values)
        fields.append(
            Field(POOL[i], *SIZES[i], [cell], split=draw(st.sampled_from([None, *SPLITS])) if attributes else split)
        )
    classes = WBCATT_CLASSES if attributes else Vocabulary("cells", tuple(sorted({f.cells[0].label for f in fields})))
    return Dataset(fields, classes, WBCATT_SCHEMA if attributes else None, name="generated")


FORMATS["wbcatt"] = crop_sets(attributes=True)
FORMATS["folders"] = crop_sets(attributes=False)


@pytest.mark.parametrize("format", list(FORMATS))
@ROUND_TRIP
@given(data=st.data())
def test_write_then_read_is_the_identity(format, data):
    dataset = data.draw(FORMATS[format], label="dataset")
    with _workdir() as work:
        out = Path(work) / "out"
        report = write_dataset(dataset, out, format=format)
        assert dict(report.dropped) == {}, report.summary()
        log = ProblemLog(strict=True)
        back = read_dataset(out / "annotations.json" if format == "coco" else out, format=format, log=log)
        assert differences(dataset, back) == []
        assert back.classes.names == dataset.classes.names
