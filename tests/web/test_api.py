"""The JSON API end to end with tiny models: upload, analysis, review, signature, search, downloads."""

from __future__ import annotations

import io

from PIL import Image

from tests.web.conftest import make_config, need_web, upload, wait_done

need_web()
from fastapi.testclient import TestClient  # noqa: E402

from leukolens.web.app import create_app  # noqa: E402


def _analysed(service, demo_fields, loaded_models) -> str:
    response = upload(service, demo_fields)
    assert response.status_code == 202, response.text
    sample_id = response.json()["id"]
    assert service.get(f"/api/samples/{sample_id}").json()["status"] == "queued"
    assert service.app.state.queue.run_one(loaded_models) == sample_id
    return sample_id


def test_a_sample_is_uploaded_analysed_reviewed_and_signed(service, demo_fields, loaded_models):
    sample_id = _analysed(service, demo_fields, loaded_models)
    sample = service.get(f"/api/samples/{sample_id}").json()
    assert sample["status"] == "done" and sample["fields_done"] == sample["fields_total"] == 2
    assert [f["name"] for f in sample["fields"]] == ["BloodImage_00007", "BloodImage_00015"]
    assert sum(row["count"] for row in sample["summary"]["differential"].values()) == 96  # 48 white cells a field
    before = sample["summary"]["interpretation"]
    listed = service.get("/api/samples").json()["samples"]
    assert [s["id"] for s in listed] == [sample_id]

    body = service.get(f"/api/samples/{sample_id}/cells").json()
    cells = body["cells"]
    assert len(cells) == 96 and "blast" in body["review_calls"]
    cell = cells[0]
    assert cell["type"] == cell["model_type"] and cell["review"] is None and cell["probabilities"]
    answer = service.patch(f"/api/cells/{cell['id']}", json={"type": "blast", "who": "jdoe"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["cell"]["type"] == "blast" and answer.json()["cell"]["review"]["who"] == "jdoe"
    after = service.get(f"/api/samples/{sample_id}").json()["summary"]
    assert after["reviewed"] is True and after["interpretation"]["differential"] != before["differential"]
    assert after["interpretation"]["blasts"]["count"] == before["blasts"]["count"] + 1
    model_row = after["interpretation"]["differential"][cell["model_type"]]
    assert model_row["count"] == before["differential"][cell["model_type"]]["count"] - 1
    audit = service.get(f"/api/samples/{sample_id}/audit").json()["audit"]
    assert [(a["action"], a["to_value"]) for a in audit] == [("reclassify", "blast")]

    signed = service.post(f"/api/samples/{sample_id}/sign", json={"who": "dr-smith"})
    assert signed.status_code == 200 and signed.json()["who"] == "dr-smith"
    refused = service.patch(f"/api/cells/{cell['id']}", json={"type": "smudge", "who": "jdoe"})
    assert refused.status_code == 409 and "signed" in refused.json()["detail"]
    assert service.get(f"/api/samples/{sample_id}").json()["signed"] is True


def test_search_images_and_downloads(service, demo_fields, loaded_models):
    sample_id = _analysed(service, demo_fields, loaded_models)
    cells = service.get(f"/api/samples/{sample_id}/cells").json()["cells"]
    word = cells[0]["sentence"].split()[0]
    hits = service.get("/api/search", params={"q": word}).json()["hits"]
    assert hits and all(h["sample_id"] == sample_id for h in hits)
    assert word.lower() in hits[0]["sentence"].lower()
    similar = service.get(f"/api/cells/{cells[0]['id']}/similar", params={"limit": 5}).json()["hits"]
    assert len(similar) == 5 and cells[0]["id"] not in [h["cell_id"] for h in similar]

    crop = service.get(f"/api/cells/{cells[0]['id']}/image")
    assert crop.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(crop.content)).format == "JPEG"
    field_id = service.get(f"/api/samples/{sample_id}").json()["fields"][0]["id"]
    for kind in ("image", "overlay"):
        picture = service.get(f"/api/fields/{field_id}/{kind}")
        assert Image.open(io.BytesIO(picture.content)).size == (640, 480)

    report = service.get(f"/api/samples/{sample_id}/report")
    assert report.status_code == 200 and "<html" in report.text.lower() and "data:image/jpeg" in report.text
    document = service.get(f"/api/samples/{sample_id}/json").json()
    assert len(document["cells"]) == 96 and document["sample"]["id"] == sample_id
    csv = service.get(f"/api/samples/{sample_id}/csv")
    assert csv.headers["content-type"].startswith("text/csv") and len(csv.text.strip().splitlines()) > 96
    assert "attachment" in csv.headers["content-disposition"]


def test_a_sample_in_the_queue_cannot_be_downloaded_yet(service, demo_fields):
    sample_id = upload(service, demo_fields[:1]).json()["id"]
    answer = service.get(f"/api/samples/{sample_id}/report")
    assert answer.status_code == 409 and "queued" in answer.json()["detail"]


def test_the_worker_thread_analyses_in_the_background(tmp_path, tiny_models, demo_fields):
    app = create_app(make_config(tmp_path, tiny_models, start_workers=True))
    with TestClient(app) as client:
        sample_id = upload(client, demo_fields).json()["id"]
        assert client.get("/api/status").status_code == 200  # answers while the analysis runs
        assert wait_done(client, sample_id)["status"] == "done"


def test_a_sample_left_running_is_resumed_at_start_up(tmp_path, tiny_models, demo_fields, loaded_models):
    config = make_config(tmp_path, tiny_models)
    with TestClient(create_app(config)) as client:
        sample_id = upload(client, demo_fields).json()["id"]
        archive = client.app.state.archive
        archive.set_status(sample_id, "running")  # as a killed service leaves it, one field done
        first = archive.pending_fields(sample_id)[0]
        queue = client.app.state.queue
        queue._queue.get_nowait()
        queue._queue.task_done()
    with TestClient(create_app(config)) as client:
        archive = client.app.state.archive
        assert archive.get_sample(sample_id).status == "queued"
        assert client.app.state.queue.run_one(loaded_models) == sample_id
        sample = client.get(f"/api/samples/{sample_id}").json()
        assert sample["status"] == "done" and sample["fields_done"] == 2
        assert archive.field(first.id).done
