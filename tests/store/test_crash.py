"""A process killed (SIGKILL) in the middle of an analysis: the fields it completed are there, the one it was
writing is not there at all, the database is consistent and the sample resumes from where it stopped."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from leukolens.store import DONE, RUNNING, SQLiteArchive
from tests.store.helpers import field_result

REPO = Path(__file__).resolve().parents[2]
CHILD = textwrap.dedent("""
    import sys, time
    import leukolens.store.sqlite as sqlite
    from leukolens.store import RUNNING, SQLiteArchive
    from tests.store.helpers import field_result

    archive = SQLiteArchive.open(sys.argv[1])
    images = [(f"f{i}", archive.put_image(f"image {i}".encode())) for i in (1, 2, 3)]
    sample = archive.create_sample(images=images)
    archive.set_status(sample, RUNNING)
    first, second, third = archive.pending_fields(sample)
    archive.complete_field(first.id, field_result("f1", ["Lymphocyte"] * 5))
    archive.complete_field(second.id, field_result("f2", ["Monocyte"] * 3))

    def stalled():  # called inside the third field's transaction, after its cells are inserted
        print(sample, flush=True)
        time.sleep(120)

    sqlite.now = stalled
    archive.complete_field(third.id, field_result("f3", ["Neutrophil"] * 7))
    print("not killed", flush=True)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_a_kill_mid_analysis_keeps_every_completed_field_and_the_sample_resumes(tmp_path):
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(data)], stdout=subprocess.PIPE, text=True, env=env,
                             cwd=REPO)
    try:
        sample = child.stdout.readline().strip()  # the third field's transaction is open now
        assert len(sample) == 32, f"the child stopped early (exit {child.poll()})"
        started = time.perf_counter()
        with SQLiteArchive.open(data) as reader:  # WAL: a reader does not wait for the stalled writer
            assert [f.name for f in reader.pending_fields(sample)] == ["f3"]
        assert time.perf_counter() - started < 5
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    with sqlite3.connect(data / "archive.sqlite3") as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert c.execute("PRAGMA foreign_key_check").fetchall() == []
    archive = SQLiteArchive.open(data)
    record = archive.get_sample(sample)
    assert (record.status, record.fields_total, record.fields_done) == (RUNNING, 3, 2)
    done = [f for f in archive.fields(sample) if f.done]
    assert [(f.name, len(f.result["cells"])) for f in done] == [("f1", 5), ("f2", 3)]
    cells = archive.cells(sample)
    assert [(c.field, c.model_type) for c in cells] == [("f1", "Lymphocyte")] * 5 + [("f2", "Monocyte")] * 3
    (pending,) = archive.pending_fields(sample)  # the half-written field left nothing behind
    assert pending.name == "f3" and pending.result is None and archive.read_image(pending.image_hash) == b"image 3"

    archive.complete_field(pending.id, field_result("f3", ["Neutrophil"] * 7))  # resume: only what is left
    archive.set_status(sample, DONE)
    assert len(archive.cells(sample)) == 15 and archive.interpretation(sample).white_cells == 15
    archive.close()
