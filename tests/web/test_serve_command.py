"""``leukolens serve``: its options, its message without the web extra, and a real server on a local port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from leukolens.cli import build_parser, main
from tests.web.conftest import need_web


def test_serve_defaults_to_localhost_and_the_documented_limits():
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.token, args.workers, args.max_upload_mb) == ("127.0.0.1", 8000, None, 1, 50.0)


def test_without_the_web_extra_serve_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    assert main(["serve", "--data-dir", str(tmp_path)]) == 2
    assert 'pip install -e ".[web]"' in capsys.readouterr().err


def test_a_short_token_is_refused(capsys, tmp_path):
    need_web()
    assert main(["serve", "--data-dir", str(tmp_path), "--token", "short"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_server_answers_on_localhost_with_its_token(tmp_path, tiny_models):
    need_web()
    detector, cells = tiny_models
    port = _free_port()
    command = [sys.executable, "-m", "leukolens", "serve", "--data-dir", str(tmp_path / "data"), "--port", str(port),
               "--token", "a-long-token", "--detector", str(detector), "--cells", str(cells), "--engine", "torch"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(f"{base}/", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/api/status", timeout=5)
        assert refused.value.code == 401
        request = urllib.request.Request(f"{base}/api/status", headers={"Authorization": "Bearer a-long-token"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert json.load(answer)["queue"] == 0
    finally:
        server.terminate()
        server.wait(timeout=30)
