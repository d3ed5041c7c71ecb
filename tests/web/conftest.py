"""The service with tiny untrained models (a rigged detector finding 48 white cells per field, a small cell
model) over a fresh archive: API tests run in seconds."""

from __future__ import annotations

import time

import pytest

from leukolens.demo import sample_path
from leukolens.models.checkpoint import save_checkpoint
from leukolens.models.detector import save_detector
from leukolens.web import ServeConfig
from leukolens.web.worker import Models
from tests.conftest import every_cell_a_wbc_detector, tiny_cell_checkpoint


def need_web() -> None:
    """Skip the calling test module unless the web extra (FastAPI) and httpx (TestClient) are installed."""
    pytest.importorskip("fastapi", reason="the web extra is not installed: pip install -e '.[web]'")
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx: pip install -e '.[dev]'")

FIELDS = ("BloodImage_00007.jpg", "BloodImage_00015.jpg")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> tuple:
    folder = tmp_path_factory.mktemp("web-models")
    detector = save_detector(every_cell_a_wbc_detector(), folder / "tiny-detector.pt")
    cells = save_checkpoint(tiny_cell_checkpoint(), folder / "tiny-cells.pt")
    return detector, cells


@pytest.fixture(scope="session")
def demo_fields() -> list[tuple[str, bytes]]:
    folder = sample_path("bccd") / "BCCD" / "JPEGImages"
    return [(name, (folder / name).read_bytes()) for name in FIELDS]


def make_config(tmp_path, tiny_models, **overrides) -> ServeConfig:
    detector, cells = tiny_models
    settings = {"data_dir": tmp_path / "data", "detector": detector, "cells": cells, "engine": "torch",
                "start_workers": False, **overrides}
    return ServeConfig(**settings)


@pytest.fixture(scope="session")
def loaded_models(tiny_models, tmp_path_factory):
    return Models.load(make_config(tmp_path_factory.mktemp("unused"), tiny_models))


@pytest.fixture()
def service(tmp_path, tiny_models):
    """A client of a fresh service whose queue the test runs by hand (no worker thread)."""
    from fastapi.testclient import TestClient

    from leukolens.web.app import create_app

    app = create_app(make_config(tmp_path, tiny_models))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def upload(client, fields, **kwargs):
    files = [("files", (name, data, "image/jpeg")) for name, data in fields]
    return client.post("/api/samples", files=files, **kwargs)


def wait_done(client, sample_id: str, *, seconds: float = 120.0, headers=None) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sample = client.get(f"/api/samples/{sample_id}", headers=headers).json()
        if sample["status"] in ("done", "failed"):
            return sample
        time.sleep(0.2)
    raise AssertionError(f"sample {sample_id} not done after {seconds} s")
