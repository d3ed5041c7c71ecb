"""The OpenAPI document fuzzed with schemathesis: whatever a client sends, the service never answers 5xx.

The archive holds one analysed sample first, so generated ids sometimes hit real rows; uploads get random bytes
(refused with 415/422, never a 500). Skipped where schemathesis is not installed (it comes with the dev extra)."""

from __future__ import annotations

import pytest

from tests.web.conftest import make_config, need_web, upload

need_web()
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed: pip install -e '.[dev]'")
from hypothesis import HealthCheck, given, settings  # noqa: E402

MAX_EXAMPLES = 30
"""Examples per operation: 17 operations in a few seconds in process."""


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory, tiny_models, demo_fields, loaded_models):
    from fastapi.testclient import TestClient

    from leukolens.web.app import create_app

    app = create_app(make_config(tmp_path_factory.mktemp("fuzz"), tiny_models, queue_size=1000))
    with TestClient(app) as client:
        upload(client, demo_fields)
        app.state.queue.run_one(loaded_models)
        yield app


def test_no_request_gets_a_server_error(fuzzed_app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    seen: dict[str, set[int]] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case):
            label = case.operation.label
            response = case.call()
            seen.setdefault(label, set()).add(response.status_code)
            assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:300]}"
            if response.status_code >= 400:
                assert isinstance(response.json()["detail"], str), response.text[:300]

        call()
    assert len(seen) == len(operations)
    assert any(code < 300 for codes in seen.values() for code in codes)
