"""The page at ``/``: self-contained (no network resource), and driven in a real headless Chromium where Debian's
``chromium`` and Playwright are installed (skipped with the reason elsewhere).

The Chromium test serves the app with uvicorn on a free local port, with the rigged detector (48 white cells a field)
and the tiny cell model, so the analysis of the six demo fields takes seconds. Set ``LEUKOLENS_SCREENSHOTS`` to a
folder to keep a screenshot of each view (docs/web.md).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from leukolens.demo import sample_path
from tests.web.conftest import make_config, need_web

need_web()

CHROMIUM = "/usr/bin/chromium"


def test_the_page_is_one_file_that_fetches_nothing_from_the_network(service):
    page = service.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)
    assert "http://" not in page.text and "https://" not in page.text
    for path in ("/samples", "/cells/", "/search?", "/sign", "sessionStorage", "dataTransfer"):
        assert path in page.text


def chromium_path() -> str:
    """Debian's chromium, or skip the calling test with the reason (Playwright's own browsers are not used)."""
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found is None:
        pytest.skip("Debian's chromium is not installed here (apt-get install chromium; .ci/run installs it)")
    pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install -e '.[dev]'")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def live_service(tmp_path, tiny_models):
    """The app served by uvicorn in a background thread on a free local port, its analysis worker running."""
    import uvicorn

    from leukolens.web.app import create_app

    app = create_app(make_config(tmp_path, tiny_models, start_workers=True))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def differential(page) -> dict[str, int]:
    """The differential table on the page: type -> count."""
    rows = page.locator("#differential tbody tr").all()
    return {row.get_attribute("data-type"): int(row.locator("td").nth(1).inner_text()) for row in rows}


def every_image_shown(page, *, seconds: float = 30.0) -> None:
    """Wait until every image of the sample view is loaded (polled from here: the page's CSP forbids the eval that
    Playwright's ``wait_for_function`` polls with)."""
    deadline = time.monotonic() + seconds
    script = "[...document.querySelectorAll('#view img')].every((i) => i.src && i.complete && i.naturalWidth > 0)"
    while not page.evaluate(script):
        assert time.monotonic() < deadline, "the sample view's images did not load"
        time.sleep(0.1)


def test_the_page_in_headless_chromium(live_service, tmp_path):
    executable = chromium_path()
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("LEUKOLENS_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    fields = sorted((sample_path("bccd") / "BCCD" / "JPEGImages").glob("*.jpg"))
    assert len(fields) == 6
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.goto(live_service)
            expect(page.locator("#samples")).to_contain_text("none yet")
            page.screenshot(path=shots / "web-upload.png")

            # Upload the demo fields through the page's file picker; the page polls until the analysis is done.
            page.locator("#picker").set_input_files(fields)
            expect(page.locator("#differential")).to_be_visible(timeout=180_000)
            expect(page.locator("#samples .status")).to_have_text("done")
            expect(page.locator("#progress")).to_contain_text("done, 6 of 6 fields")
            tiles = page.locator(".tile")
            expect(tiles).to_have_count(6 * 48)  # the rigged detector: 48 white cells a field
            before = differential(page)
            assert sum(before.values()) == 6 * 48
            blasts_before = int(page.locator("#blasts").inner_text())
            expect(page.locator(".fields img").first).to_have_attribute("src", re.compile("^blob:"))
            every_image_shown(page)
            page.screenshot(path=shots / "web-sample.png")

            # Open a cell that the model did not call a blast, and call it one.
            tile = page.locator(".tile:not(.blast)").first
            cell_id = tile.get_attribute("data-cell")
            tile.click()
            expect(page.locator(f'.tile[data-cell="{cell_id}"]')).to_have_class(re.compile(r"\bactive\b"))
            model_type = page.locator("#cell-type").inner_text()
            assert model_type in before
            expect(page.locator("#crop")).to_have_attribute("src", re.compile("^blob:"))
            page.screenshot(path=shots / "web-cell.png")
            page.locator("#call").select_option("blast")
            page.locator("#who").fill("jdoe")
            page.locator("#reclassify").click()
            expect(page.locator("#cell-type")).to_have_text("blast")
            expect(page.locator("#cell")).to_contain_text("model: " + model_type)
            expect(page.locator("#blasts")).to_have_text(str(blasts_before + 1))
            after = differential(page)
            assert after[model_type] == before[model_type] - 1
            assert after != before
            moved = page.locator(f'.group[data-group="blast"] .tile[data-cell="{cell_id}"]')
            expect(moved).to_have_class(re.compile(r"\breviewed\b"))  # the gallery regroups the cell
            expect(page.locator('.group[data-group="blast"] h4')).to_have_text("blast (1)")
            expect(page.locator(f'.group[data-group="{model_type}"] .tile')).to_have_count(before[model_type] - 1)
            assert page.locator("#message").inner_text() == ""

            # Search every archived cell by text: a word of this cell's sentence finds cells of this sample.
            sentence = page.locator("#cell p").first.inner_text()
            word = next(w for w in re.findall(r"[a-z]{4,}", sentence.lower()))
            page.locator("#search").fill(word)
            page.locator("#search").press("Enter")
            hits = page.locator("#hits .hit")
            expect(hits.first).to_be_visible()
            assert word in hits.first.inner_text().lower()
            expect(hits.first).to_be_in_viewport()  # beside the sample, not below the open cell
            page.screenshot(path=shots / "web-search.png")
            hits.first.click()
            expect(page.locator("#cell h3")).to_contain_text("Cell ")
        finally:
            browser.close()
    assert errors == []
