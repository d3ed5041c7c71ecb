"""Safe by default: the token, the upload checks, the bounded queue, and errors that are JSON without a trace."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

from tests.web.conftest import make_config, need_web, upload

need_web()
from fastapi.testclient import TestClient  # noqa: E402

from leukolens.web.app import create_app  # noqa: E402


def _client(tmp_path, tiny_models, **overrides) -> TestClient:
    return TestClient(create_app(make_config(tmp_path, tiny_models, **overrides)), raise_server_exceptions=False)


def _no_trace(response) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    assert "Traceback" not in response.text and 'File "' not in response.text
    return detail


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge image in a few hundred bytes (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(
        b"IEND", b"")


def test_with_a_token_every_api_call_needs_it(tmp_path, tiny_models, demo_fields):
    with _client(tmp_path, tiny_models, token="s3cret-token") as client:
        for response in (client.get("/api/samples"), upload(client, demo_fields[:1]),
                         client.get("/api/samples", headers={"Authorization": "Bearer wrong-token"})):
            assert response.status_code == 401
            assert "token" in _no_trace(response) and response.headers["www-authenticate"] == "Bearer"
        good = {"Authorization": "Bearer s3cret-token"}
        assert client.get("/api/samples", headers=good).status_code == 200
        assert upload(client, demo_fields[:1], headers=good).status_code == 202
        page = client.get("/")  # the page holds no data; it asks for the token
        assert page.status_code == 200 and "sessionStorage" in page.text


def test_an_oversize_upload_is_refused_with_413(tmp_path, tiny_models, demo_fields):
    with _client(tmp_path, tiny_models, max_upload_mb=0.03) as client:
        response = upload(client, demo_fields)  # 2 x 21 kB over a 31 kB cap, announced in Content-Length
        assert response.status_code == 413 and "MiB" in _no_trace(response)

        def chunks():  # no Content-Length: the cap counts the body as it arrives
            yield b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n\r\n"
            for _ in range(64):
                yield b"\0" * 1024
        response = client.post("/api/samples", content=chunks(),
                               headers={"content-type": "multipart/form-data; boundary=x"})
        assert response.status_code == 413 and "MiB" in _no_trace(response)
        assert client.get("/api/samples").json()["samples"] == []
        assert upload(client, demo_fields[:1]).status_code == 202


def test_wrong_type_truncated_tiny_and_bomb_uploads_are_refused_with_a_message(tmp_path, tiny_models, demo_fields):
    jpeg = demo_fields[0][1]
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    cases = {
        "notes.txt": (b"just some text, not an image\n", 415, "not an image"),
        "cut.jpg": (jpeg[: len(jpeg) // 2], 422, "cannot decode"),
        "empty.jpg": (b"", 422, "empty"),
        "tiny.png": (buffer.getvalue(), 422, "too small"),
        "bomb.png": (_png_header_only(8000, 8000), 422, "larger than a microscope field"),
        "huge-bomb.png": (_png_header_only(12000, 12000), 422, "decompression bomb"),
    }
    with _client(tmp_path, tiny_models) as client:
        for name, (data, status, words) in cases.items():
            response = upload(client, [demo_fields[0], (name, data)])
            assert response.status_code == status, (name, response.text)
            detail = _no_trace(response)
            assert words in detail and name.rsplit(".", 1)[0] in detail, (name, detail)
        assert client.get("/api/samples").json()["samples"] == []  # nothing stored from a refused upload


def test_unknown_ids_and_bad_requests_are_json_4xx(tmp_path, tiny_models):
    with _client(tmp_path, tiny_models) as client:
        for path in ("/api/samples/0123456789abcdef0123456789abcdef", "/api/samples/../../etc/passwd",
                     "/api/samples/..%2f..%2fetc", "/api/cells/999999", "/api/cells/999999/image",
                     "/api/fields/5/overlay", "/api/cells/999999/similar", "/api/nothing-here"):
            response = client.get(path)
            assert response.status_code == 404, (path, response.text)
            _no_trace(response)
        for response in (client.get("/api/cells/abc"), client.get("/api/cells/99999999999999999999999"),
                         client.get("/api/search"), client.patch("/api/cells/1", json={"type": "blast"}),
                         client.patch("/api/cells/1", content=b"{not json",
                                      headers={"content-type": "application/json"}),
                         client.post("/api/samples")):
            assert response.status_code == 422, response.text
            _no_trace(response)


def test_an_unexpected_error_is_a_500_without_a_trace(tmp_path, tiny_models, monkeypatch):
    with _client(tmp_path, tiny_models) as client:
        def broken(*args, **kwargs):
            raise RuntimeError("secret internals /etc/leukolens")
        monkeypatch.setattr(client.app.state.archive, "list_samples", broken)
        response = client.get("/api/samples")
        assert response.status_code == 500
        assert "internal error" in _no_trace(response) and "secret" not in response.text


def test_a_full_queue_answers_503(tmp_path, tiny_models, demo_fields):
    with _client(tmp_path, tiny_models, queue_size=1) as client:
        assert upload(client, demo_fields[:1]).status_code == 202
        response = upload(client, demo_fields[:1])
        assert response.status_code == 503 and "queue is full" in _no_trace(response)
        assert response.headers["retry-after"] == "30"


def test_responses_carry_security_headers(tmp_path, tiny_models):
    with _client(tmp_path, tiny_models) as client:
        response = client.get("/api/samples")
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'none'" in response.headers["content-security-policy"]
