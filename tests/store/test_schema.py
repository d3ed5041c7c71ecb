"""The schema and its migrations: from an empty file, from the previous version (a database written by hand at
version 1), a database newer than the code, a migration that fails half way."""

import sqlite3

import pytest

from leukolens.store import SCHEMA_VERSION, ArchiveError, SQLiteArchive
from leukolens.store.schema import MIGRATIONS, Migration, has_fts5, migrate, schema_version

TABLES = {"images", "samples", "fields", "cells", "reviews", "audit", "signatures"}


def _tables(path):
    with sqlite3.connect(path) as c:
        return {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_an_empty_folder_gets_every_migration_in_wal_mode_with_foreign_keys(tmp_path):
    archive = SQLiteArchive.open(tmp_path / "data")
    assert archive.applied_migrations == [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
    c = archive._connection()
    assert schema_version(c) == SCHEMA_VERSION
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert c.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert TABLES <= _tables(archive.path)
    assert archive.text_index == has_fts5()
    archive.close()
    reopened = SQLiteArchive.open(tmp_path / "data")
    assert reopened.applied_migrations == []  # nothing applied twice
    reopened.close()


def test_a_version_1_database_written_by_hand_is_migrated_and_keeps_its_cells(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "archive.sqlite3", isolation_level=None) as c:
        migrate(c, target=1)
        c.execute("INSERT INTO samples (id, name, created, updated, status) VALUES "
                  "('0123456789abcdef0123456789abcdef', 'old', '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z', 'done')")
        c.execute("INSERT INTO fields (id, sample_id, position, name, result, done) VALUES "
                  "(7, '0123456789abcdef0123456789abcdef', 1, 'f1', '{\"cells\": []}', 1)")
        c.execute("INSERT INTO cells (id, field_id, number, x1, y1, x2, y2, detector_class, detector_score, "
                  "model_type, sentence) VALUES (70, 7, 1, 0, 0, 9, 9, 'WBC', 0.9, 'Monocyte', "
                  "'A large cell with prominent nucleoli.')")
        assert schema_version(c) == 1
        assert "cells_text" not in {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
    archive = SQLiteArchive.open(data)
    assert archive.applied_migrations == [2]
    assert schema_version(archive._connection()) == SCHEMA_VERSION
    (cell,) = archive.cells("0123456789abcdef0123456789abcdef")
    assert (cell.id, cell.model_type, cell.sentence) == (70, "Monocyte", "A large cell with prominent nucleoli.")
    hits = archive.search_text("large cells with prominent nucleoli")
    assert [h.cell_id for h in hits] == [70]  # the cell written before the index existed is indexed
    archive.close()


def test_a_database_newer_than_the_code_is_refused(tmp_path):
    SQLiteArchive.open(tmp_path / "data").close()
    with sqlite3.connect(tmp_path / "data" / "archive.sqlite3") as c:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ArchiveError, match="newer than this leukolens"):
        SQLiteArchive.open(tmp_path / "data")


def test_a_failing_migration_leaves_the_database_at_the_previous_version(tmp_path):
    def half_done(c):
        c.execute("CREATE TABLE half (x INTEGER)")
        raise RuntimeError("disk on fire")

    path = tmp_path / "archive.sqlite3"
    c = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(RuntimeError, match="disk on fire"):
        migrate(c, migrations=(*MIGRATIONS, Migration(SCHEMA_VERSION + 1, "broken", half_done)))
    assert schema_version(c) == SCHEMA_VERSION  # the earlier ones kept, the broken one rolled back whole
    assert "half" not in _tables(path) and TABLES <= _tables(path)
    assert migrate(c) == []
    c.close()


def test_migrations_are_numbered_one_by_one():
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
