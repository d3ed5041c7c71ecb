"""The page at ``/``: self-contained (no network resource), and driven in a real headless Chromium where Debian's
``chromium`` and Playwright are installed (skipped with the reason elsewhere)."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.web.conftest import need_web

need_web()


def test_the_page_is_one_file_that_fetches_nothing_from_the_network(service):
    page = service.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)
    assert "http://" not in page.text and "https://" not in page.text
    for path in ("/samples", "/cells/", "/search?", "/sign", "sessionStorage", "dataTransfer"):
        assert path in page.text


def test_the_page_in_headless_chromium():
    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed here (apt-get install chromium, then pip install playwright)")
    pytest.importorskip("playwright", reason="Playwright is not installed: pip install playwright")
    pytest.skip("the Chromium page test is not written yet: see docs/web.md, what is not done")
