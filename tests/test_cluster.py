"""`analyze` on a local Dask cluster of two one-thread workers (one cluster for the whole module: starting one costs
seconds): the same files as a run in one process, a folder of samples, a worker killed mid-run, and a scheduler
that is not there or has no workers."""

import json
import os
import shutil
import signal
import threading
import time

import pytest
from PIL import Image

from leukolens.analyze import analyze, analyze_samples
from leukolens.cli import main
from leukolens.demo import sample_path
from leukolens.predict.output import validate

pytest.importorskip("distributed")

BCCD = sample_path("bccd") / "BCCD" / "JPEGImages"

pytestmark = pytest.mark.usefixtures("private_onnx_cache")


@pytest.fixture(scope="module")
def cluster(private_onnx_cache):
    from leukolens.cluster import open_cluster

    with open_cluster(workers=2, log=lambda _: None) as opened:
        yield opened


def _fields(folder, count=None):
    """The bundled BCCD fields (six) copied to ``folder``; ``count`` of them, repeated under new names if more."""
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in BCCD.glob("*.jpg"))
    for i in range(count or len(names)):
        name = names[i % len(names)]
        shutil.copy(BCCD / name, folder / (name if i < len(names) else f"copy{i}_{name}"))
    return folder


def _documents(out):
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.json")) if p.name != "summary.json"}


def _without_timing(summary):
    return {k: v for k, v in summary.items() if k not in ("seconds", "fields_per_second")}


def test_two_workers_write_the_same_files_as_one_process(tmp_path, tiny_detector, tiny_cells, cluster):
    folder = _fields(tmp_path / "sample")
    options = {"detector": tiny_detector, "cells": tiny_cells, "log": lambda _: None}
    here = analyze([folder], out=tmp_path / "here", **options)
    done = []
    there = analyze([folder], out=tmp_path / "there", cluster=cluster, progress=lambda *d: done.append(d), **options)
    assert done[-1] == (6, 6) and len(done) == 6  # one field a task
    assert _documents(tmp_path / "there") == _documents(tmp_path / "here")  # cells, types, probabilities: all
    assert len(_documents(tmp_path / "here")) == 6 and here["wbc_typed"] == 6 * 48
    assert _without_timing(there) == _without_timing(here)
    for name in ("report.html", "cells.csv"):
        assert (tmp_path / "there" / name).is_file()
    assert {p.name for p in (tmp_path / "there").glob("*.png")} == {p.name for p in (tmp_path / "here").glob("*.png")}

    # resumed on the cluster: only the field whose file went missing is analysed again
    (tmp_path / "there" / "BloodImage_00021.json").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "there").glob("BloodImage_*")}
    resumed = analyze([folder], out=tmp_path / "there", cluster=cluster, resume=True, **options)
    assert resumed["fields_resumed"] == 5 and resumed["fields_read"] == 6
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "there").glob("BloodImage_*")}
    assert [name for name in sorted(after) if after[name] != before.get(name)] == [
        "BloodImage_00021.json", "BloodImage_00021.png"]
    assert _documents(tmp_path / "there") == _documents(tmp_path / "here")


def test_the_cell_model_adapts_on_the_client_and_the_workers_use_it(tmp_path, tiny_detector, tiny_cells, cluster):
    folder = _fields(tmp_path / "sample", 3)
    options = {"detector": tiny_detector, "cells": tiny_cells, "adapt": True, "overlays": False, "report": False,
               "log": lambda _: None}
    here = analyze([folder], out=tmp_path / "here", **options)
    there = analyze([folder], out=tmp_path / "there", cluster=cluster, **options)
    assert there["notes"] == here["notes"] == ["cell model adapted to this sample's first 64 white cells"]
    # the same adapted network read every field (that adapting changes the reading is tests/test_analyze.py's)
    assert _documents(tmp_path / "there") == _documents(tmp_path / "here")


def test_a_folder_of_samples_with_one_bad_sample(tmp_path, tiny_detector, tiny_cells, cluster, capsys):
    samples = tmp_path / "samples"
    _fields(samples / "anna", 2)
    (samples / "bad").mkdir()
    (samples / "bad" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    _fields(samples / "carl", 1)
    Image.open(BCCD / "BloodImage_00007.jpg").convert("L").save(samples / "carl" / "gray.png")
    out = tmp_path / "out"
    runs = analyze_samples(samples, out=out, detector=tiny_detector, cells=tiny_cells, overlays=False,
                           log=lambda _: None)  # in this process
    assert [(r.name, r.summary is not None) for r in runs] == [("anna", True), ("bad", False), ("carl", True)]
    assert "none of the 1 images could be read" in runs[1].error
    assert runs[0].summary["fields_read"] == 2 and runs[2].summary["fields_read"] == 2
    for name in ("anna", "carl"):
        assert validate(json.loads((out / name / "summary.json").read_text()), "summary") == []
        assert (out / name / "report.html").is_file()

    # the command, on the running cluster through its scheduler's address: the same results and a table at the end
    address = cluster.client.scheduler.address
    code = main(["analyze", "--samples", str(samples), "--out", str(tmp_path / "cli"), "--scheduler", address,
                 "--detector", str(tiny_detector), "--cells", str(tiny_cells), "--no-overlays"])
    captured = capsys.readouterr()
    assert code == 1  # a sample failed
    table = captured.out.splitlines()
    assert table[0].split()[:5] == ["sample", "fields", "resumed", "skipped", "WBC"]
    assert table[1].split()[:5] == ["anna", "2", "0", "0", "96"]
    assert table[2].startswith("bad") and "failed: none of the 1 images could be read" in table[2]
    assert table[3].split()[:5] == ["carl", "2", "0", "0", "96"]
    assert "sample bad failed" in captured.err and "analysing anna: 2/2 fields" in captured.err  # plain lines
    for name in ("anna", "carl"):
        assert _documents(tmp_path / "cli" / name) == _documents(out / name)


def test_an_unreachable_scheduler_is_one_clear_line(tmp_path, tiny_detector, capsys, monkeypatch):
    import leukolens.cluster

    monkeypatch.setattr(leukolens.cluster, "CONNECT_TIMEOUT", 1.0)
    folder = _fields(tmp_path / "sample", 1)
    started = time.perf_counter()
    out = ["--out", str(tmp_path / "out"), "--detector", str(tiny_detector)]
    code = main(["analyze", str(folder), "--scheduler", "tcp://127.0.0.1:9", *out])
    err = capsys.readouterr().err
    assert code == 2 and time.perf_counter() - started < 30
    assert err.startswith("leukolens: error: cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["analyze", str(folder), "--workers", "0", *out]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err


def test_a_scheduler_without_workers_is_one_clear_line_not_a_wait(tmp_path, tiny_detector, capsys, monkeypatch):
    import distributed

    import leukolens.cluster

    monkeypatch.setattr(leukolens.cluster, "WORKERS_TIMEOUT", 1.0)
    folder = _fields(tmp_path / "sample", 1)
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None) as empty:
        address = empty.scheduler_address
        started = time.perf_counter()
        code = main(["analyze", str(folder), "--scheduler", address, "--out", str(tmp_path / "out"),
                     "--detector", str(tiny_detector)])
        seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 2 and seconds < 15
    assert err.startswith(f"leukolens: error: the Dask scheduler at {address} has no workers")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_worker_killed_mid_run_has_its_fields_done_by_another(tmp_path, tiny_detector, tiny_cells, cluster):
    """Last in the module: the killed worker's nanny starts a new one, but that takes a while."""
    folder = _fields(tmp_path / "sample", 12)
    out = tmp_path / "out"
    pids = list(cluster.client.run(os.getpid).values())
    finished = {}
    run = threading.Thread(target=lambda: finished.update(analyze(
        [folder], out=out, cluster=cluster, detector=tiny_detector, cells=tiny_cells, report=False,
        log=lambda _: None)))
    run.start()
    deadline = time.monotonic() + 120
    while not any(p.name != "summary.json" for p in out.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(pids[0], signal.SIGKILL)
    fields_at_kill = sum(1 for p in out.glob("*.json"))
    run.join(timeout=300)
    assert fields_at_kill < 12, "the run ended before the worker was killed"
    assert finished["fields_read"] == 12 and finished["fields_skipped"] == []
    for path in out.glob("*.json"):
        if path.name != "summary.json":
            assert validate(json.loads(path.read_text()), "field") == []
            assert path.with_suffix(".png").is_file()
