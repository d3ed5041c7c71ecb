"""The SQLite archive through its interface: samples and their statuses, fields done one transaction each, images
stored once, nothing from outside reaching the file system, reviews beside the model's calls with their audit rows,
the differential recomputed with the reviews, signatures, searches."""

import threading

import numpy as np
import pytest

from leukolens.predict.output import validate
from leukolens.sample import interpretation_json
from leukolens.store import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    Archive,
    ArchiveError,
    ConflictError,
    ImageStore,
    NotFoundError,
    content_hash,
)
from tests.store.helpers import field_result


def _done_sample(archive, fields):
    """A done sample of ``fields``: name -> per-field result."""
    sample = archive.create_sample(images=[(name, None) for name in fields])
    archive.set_status(sample, RUNNING)
    for f in archive.pending_fields(sample):
        archive.complete_field(f.id, fields[f.name])
    archive.set_status(sample, DONE, summary={"fields_read": len(fields)})
    return sample


def test_the_sqlite_archive_is_an_archive(archive):
    assert isinstance(archive, Archive)


# ------------------------------------------------------------------------------------------------------ samples
def test_a_sample_goes_from_queued_to_done_field_by_field(archive):
    sample = archive.create_sample(images=[("f1", None), ("f2", None)], name="patient 7")
    record = archive.get_sample(sample)
    assert (record.status, record.fields_total, record.fields_done, record.summary) == (QUEUED, 2, 0, None)
    archive.set_status(sample, RUNNING)
    first, second = archive.pending_fields(sample)
    archive.complete_field(first.id, field_result("f1", ["Lymphocyte", None, "Neutrophil"]))
    assert [f.name for f in archive.pending_fields(sample)] == ["f2"]
    with pytest.raises(ConflictError, match="1 fields not analysed"):
        archive.set_status(sample, DONE)
    with pytest.raises(ConflictError, match="already done"):
        archive.complete_field(first.id, field_result("f1", ["Monocyte"]))
    archive.complete_field(second.id, field_result("f2", ["Monocyte"]))
    archive.set_status(sample, DONE, summary={"fields_read": 2})
    record = archive.get_sample(sample)
    assert (record.status, record.fields_done, record.name) == (DONE, 2, "patient 7")
    assert record.summary == {"fields_read": 2}
    cells = archive.cells(sample)
    assert [(c.field, c.number, c.detector_class, c.model_type) for c in cells] == [
        ("f1", 1, "WBC", "Lymphocyte"), ("f1", 2, "RBC", None), ("f1", 3, "WBC", "Neutrophil"),
        ("f2", 1, "WBC", "Monocyte")]
    assert cells[0].box_xyxy == (0.0, 5.0, 8.0, 13.0)
    assert cells[0].probabilities["Lymphocyte"] == 0.94 and cells[0].attributes["cell_size"]["value"] == "small"
    stored = archive.field(first.id).result
    assert stored == field_result("f1", ["Lymphocyte", None, "Neutrophil"]) and validate(stored, "field") == []
    with pytest.raises(ConflictError, match="cannot become queued"):
        archive.set_status(sample, QUEUED)
    with pytest.raises(ConflictError, match="is done"):
        archive.add_fields(sample, [("f3", None)])


def test_a_failed_sample_keeps_its_error_and_can_be_queued_again(archive):
    sample = archive.create_sample(images=[("f1", None)])
    archive.set_status(sample, RUNNING)
    archive.set_status(sample, FAILED, error="the detector ran out of memory")
    assert archive.get_sample(sample).error == "the detector ran out of memory"
    assert [s.id for s in archive.list_samples(status=FAILED)] == [sample]
    archive.set_status(sample, QUEUED)
    assert archive.get_sample(sample).error is None
    with pytest.raises(ArchiveError, match="unknown status"):
        archive.set_status(sample, "finished")


def test_samples_are_listed_newest_first_and_unknown_ids_are_not_found(archive):
    ids = [archive.create_sample() for _ in range(3)]
    assert [s.id for s in archive.list_samples()] == ids[::-1]
    assert [s.id for s in archive.list_samples(limit=1, offset=1)] == [ids[1]]
    for bad in ("0" * 32, "nope", 42, None):
        with pytest.raises(NotFoundError):
            archive.get_sample(bad)
    with pytest.raises(NotFoundError):
        archive.cell(10**6)
    with pytest.raises(ArchiveError, match="limit"):
        archive.list_samples(limit=0)


def test_a_bad_cell_in_a_result_stores_nothing_of_the_field(archive):
    sample = archive.create_sample(images=[("f1", None)])
    (pending,) = archive.pending_fields(sample)
    result = field_result("f1", ["Lymphocyte", "Monocyte", "Neutrophil"])
    result["cells"][2]["box_xyxy"] = [0, 0, "wide", 1]
    with pytest.raises(ArchiveError, match="cell 3: box_xyxy"):
        archive.complete_field(pending.id, result)
    assert archive.cells(sample) == [] and [f.id for f in archive.pending_fields(sample)] == [pending.id]
    with pytest.raises(ArchiveError, match="list of 'cells'"):
        archive.complete_field(pending.id, {"image": "x"})
    with pytest.raises(ArchiveError, match="sentence for cells the field does not have"):
        archive.complete_field(pending.id, field_result("f1", ["Monocyte"]), sentences={5: "A cell."})


def test_fields_are_completed_from_several_threads(archive):
    names = [f"f{i}" for i in range(8)]
    sample = archive.create_sample(images=[(n, None) for n in names])
    archive.set_status(sample, RUNNING)
    errors = []

    def work(field):
        try:
            archive.complete_field(field.id, field_result(field.name, ["Lymphocyte"] * 5))
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(f,)) for f in archive.pending_fields(sample)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and archive.pending_fields(sample) == []
    assert len(archive.cells(sample)) == 40


# ------------------------------------------------------------------------------------------------------ images
def test_images_are_stored_once_by_content_hash(archive):
    data, other = b"\x89PNG field one", b"\x89PNG field two"
    first = archive.put_image(data)
    assert first == archive.put_image(data) == content_hash(data)
    second = archive.put_image(other)
    sample = archive.create_sample(images=[("a", first), ("b", first), ("c", second)])
    assert [f.image_hash for f in archive.fields(sample)] == [first, first, second]
    files = [p for p in (archive.data_dir / "images").rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == sorted([first, second])  # no copy, no temporary file left
    assert archive.read_image(first) == data and archive.image_path(first).read_bytes() == data
    assert archive._connection().execute("SELECT count(*) FROM images").fetchone()[0] == 2


def test_an_image_damaged_on_disk_is_not_served(archive):
    image_hash = archive.put_image(b"field")
    archive.image_path(image_hash).write_bytes(b"fielD")
    with pytest.raises(ArchiveError, match="damaged"):
        archive.read_image(image_hash)


@pytest.mark.parametrize("bad", [
    "../../etc/passwd", "/etc/passwd", "..", "a" * 63, "A" * 64, "a" * 62 + "/.", "0" * 64 + "/../x",
    "../" + "a" * 61, "a" * 64 + "\x00", "", None, 42,
])
def test_a_path_or_anything_but_a_hash_never_reaches_the_file_system(archive, bad):
    for call in (archive.read_image, archive.image_path, archive.images.path):
        with pytest.raises(ArchiveError):
            call(bad)
    with pytest.raises(ArchiveError):
        archive.create_sample(images=[("field", bad)]) if bad is not None else archive.images.path(bad)


def test_field_names_are_only_text_and_unknown_hashes_are_refused(archive, tmp_path):
    sample = archive.create_sample(images=[("../../outside", None), ("/etc/passwd", None)])
    assert [f.name for f in archive.fields(sample)] == ["../../outside", "/etc/passwd"]
    assert not (tmp_path / "outside").exists()
    assert sorted(p.name for p in archive.data_dir.iterdir()) <= ["archive.sqlite3", "archive.sqlite3-shm",
                                                                  "archive.sqlite3-wal", "images"]
    with pytest.raises(NotFoundError, match="store it with put_image"):
        archive.create_sample(images=[("f", "b" * 64)])
    with pytest.raises(ConflictError, match="already has a field named"):
        archive.add_fields(sample, [("/etc/passwd", None)])
    assert ImageStore(tmp_path / "other").path("c" * 64).is_relative_to((tmp_path / "other").resolve())


# ------------------------------------------------------------------------------------------------------ reviews
def _lymphocyte_sample(archive, count=120):
    fields = {f"f{i}": field_result(f"f{i}", ["Lymphocyte"] * 40) for i in range(count // 40)}
    return _done_sample(archive, fields)


def test_a_reclassification_is_kept_beside_the_model_call_and_audited(archive):
    sample = _lymphocyte_sample(archive)
    cell = archive.cells(sample)[5]
    changed = archive.reclassify(cell.id, "monocyte", who=" jdoe ")  # any case; the name trimmed
    assert (changed.model_type, changed.type, changed.review.type, changed.review.who) == (
        "Lymphocyte", "Monocyte", "Monocyte", "jdoe")
    again = archive.reclassify(cell.id, "blast", who="dr-smith")
    assert (again.model_type, again.type) == ("Lymphocyte", "blast")
    log = archive.audit_log(sample)
    assert [(e.who, e.action, e.cell_id, e.from_value, e.to_value) for e in log] == [
        ("jdoe", "reclassify", cell.id, "Lymphocyte", "Monocyte"),
        ("dr-smith", "reclassify", cell.id, "Monocyte", "blast")]
    assert all(e.at.endswith("Z") for e in log) and log[0].at <= log[1].at
    with pytest.raises(ArchiveError, match="cannot call a cell 'Megakaryocyte'"):
        archive.reclassify(cell.id, "Megakaryocyte", who="jdoe")
    with pytest.raises(ArchiveError, match="must be named"):
        archive.reclassify(cell.id, "Monocyte", who="  ")
    assert len(archive.audit_log(sample)) == 2  # the refused calls wrote nothing
    assert "not a WBC" in archive.review_types(sample) and "Neutrophil" in archive.review_types(sample)


def test_reclassifications_recompute_the_differential_and_the_suggestion(archive):
    sample = _lymphocyte_sample(archive)
    before = archive.interpretation(sample)
    assert before.white_cells == 120 and before.rows["Lymphocyte"].count == 120 and before.blasts.measured.count == 0
    cells = archive.cells(sample)
    for cell in cells[:30]:
        archive.reclassify(cell.id, "blast", who="jdoe")
    archive.reclassify(cells[30].id, "Monocyte", who="jdoe")
    archive.reclassify(cells[31].id, "smudge", who="jdoe")
    archive.reclassify(cells[32].id, "artefact", who="jdoe")
    archive.reclassify(cells[33].id, "not a WBC", who="jdoe")
    after = archive.interpretation(sample)
    assert after.white_cells == 120 - 3  # smudge outside the 100%, the artefact and the non-WBC gone
    assert (after.rows["Blast"].count, after.rows["Monocyte"].count, after.rows["Lymphocyte"].count) == (30, 1, 86)
    assert after.blasts.measured.count == 30 and after.blasts.measured.total == 117
    assert after.smudge.measured.count == 1
    assert after.suggestion.name.startswith("acute leukemia") and before.suggestion.name != after.suggestion.name
    document = interpretation_json(after)
    assert document["differential"]["Blast"]["count"] == 30
    model_only = archive.sample_fields(sample, reviewed=False)
    assert sum(len(f.cells) for _, f in model_only) == 120  # the model's calls are all still there
    assert len(archive.audit_log(sample)) == 34


def test_a_reviewer_can_turn_a_suspected_blast_back_into_its_type(archive):
    sample = _done_sample(archive, {"f1": field_result("f1", ["Lymphocyte"] * 100, blasts=25)})
    assert archive.interpretation(sample).blasts.measured.count == 25
    suspected = [c for c in archive.cells(sample) if c.blast_suspected]
    for cell in suspected[:20]:
        archive.reclassify(cell.id, "Lymphocyte", who="jdoe")
    reading = archive.interpretation(sample)
    assert reading.blasts.measured.count == 5 and reading.rows["Lymphocyte"].count == 95
    assert all(c.blast_suspected for c in archive.cells(sample)[:25])  # the model's call unchanged


def test_a_signed_sample_cannot_be_changed(archive):
    running = archive.create_sample(images=[("f1", None)])
    with pytest.raises(ConflictError, match="not done"):
        archive.sign(running, who="dr-smith")
    sample = _lymphocyte_sample(archive, 40)
    cell = archive.cells(sample)[0]
    signature = archive.sign(sample, who="dr-smith")
    record = archive.get_sample(sample)
    assert record.signed and record.signatures == (signature,) and signature.meaning == "reviewed and signed"
    with pytest.raises(ConflictError, match="signed"):
        archive.reclassify(cell.id, "Monocyte", who="jdoe")
    assert [(e.action, e.who, e.to_value) for e in archive.audit_log(sample)] == [
        ("sign", "dr-smith", "reviewed and signed")]


# ------------------------------------------------------------------------------------------------------ search
def test_text_search_finds_cells_by_their_sentences(archive, monkeypatch):
    sample = _done_sample(archive, {"f1": field_result("f1", ["Lymphocyte"] * 6 + [None], blasts=2)})
    cells = archive.cells(sample)
    assert cells[0].sentence.endswith("Suspected blast.") and cells[6].sentence is None
    assert "small" in cells[3].sentence.lower()
    hits = archive.search_text("suspected blasts")
    assert {h.cell_id for h in hits} == {cells[0].id, cells[1].id} and all(h.sample_id == sample for h in hits)
    injected = archive.search_text("' OR 1=1; DROP TABLE cells; --\" NEAR(")  # only words reach the query
    assert isinstance(injected, list) and len(archive.cells(sample)) == 7
    assert archive.search_text("   ") == []
    monkeypatch.setattr(archive, "text_index", False)  # the fallback without FTS5
    like = archive.search_text("suspected blast")
    assert {h.cell_id for h in like} == {cells[0].id, cells[1].id}


def test_example_search_finds_the_nearest_embeddings(archive):
    sample = _done_sample(archive, {"f1": field_result("f1", ["Lymphocyte"] * 4)})
    ids = [c.id for c in archive.cells(sample)]
    vectors = {ids[0]: [1, 0, 0], ids[1]: [0.9, 0.1, 0], ids[2]: [0, 1, 0], ids[3]: [-1, 0, 0]}
    archive.set_embeddings({k: np.array(v, dtype=np.float32) for k, v in vectors.items()})
    hits = archive.similar_cells(ids[0], limit=3)
    assert [h.cell_id for h in hits] == [ids[1], ids[2], ids[3]]
    assert hits[0].score == pytest.approx(0.9 / np.hypot(0.9, 0.1), abs=1e-5)
    assert [h.cell_id for h in archive.search_embedding(np.array([0, 2, 0]), limit=1)] == [ids[2]]
    with pytest.raises(ArchiveError, match="finite"):
        archive.set_embeddings({ids[0]: [np.nan, 1, 0]})
    with pytest.raises(NotFoundError):
        archive.set_embeddings({10**6: [1, 0, 0]})
