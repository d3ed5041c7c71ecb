"""The SQLite schema as an ordered list of migrations, applied on open.

The database's ``PRAGMA user_version`` is the number of migrations applied to it. Opening a database applies the
missing ones in order, each in its own transaction together with the new ``user_version``: a crash mid-migration
leaves the database at the previous version, and the next open tries again. The rule (docs/storage.md): a released
migration is never edited; a change to the schema is a new migration appended to :data:`MIGRATIONS`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from leukolens.store.archive import ArchiveError

CORE = (
    """CREATE TABLE images (
        hash TEXT PRIMARY KEY CHECK (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*'),
        size INTEGER NOT NULL CHECK (size >= 0),
        created TEXT NOT NULL
    )""",
    """CREATE TABLE samples (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL DEFAULT '',
        created TEXT NOT NULL,
        updated TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
        error TEXT,
        summary TEXT
    )""",
    "CREATE INDEX samples_by_created ON samples (created)",
    """CREATE TABLE fields (
        id INTEGER PRIMARY KEY,
        sample_id TEXT NOT NULL REFERENCES samples (id),
        position INTEGER NOT NULL,
        name TEXT NOT NULL,
        image_hash TEXT REFERENCES images (hash),
        result TEXT,
        done INTEGER NOT NULL DEFAULT 0 CHECK (done IN (0, 1)),
        completed TEXT,
        UNIQUE (sample_id, name),
        CHECK (done = 0 OR result IS NOT NULL)
    )""",
    "CREATE INDEX fields_by_sample ON fields (sample_id, position)",
    """CREATE TABLE cells (
        id INTEGER PRIMARY KEY,
        field_id INTEGER NOT NULL REFERENCES fields (id),
        number INTEGER NOT NULL,
        x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
        detector_class TEXT NOT NULL,
        detector_score REAL NOT NULL,
        model_type TEXT,
        type_probability REAL,
        probabilities TEXT NOT NULL DEFAULT '{}',
        attributes TEXT NOT NULL DEFAULT '{}',
        atypicality REAL,
        atypical INTEGER NOT NULL DEFAULT 0 CHECK (atypical IN (0, 1)),
        blast_probability REAL,
        blast_suspected INTEGER NOT NULL DEFAULT 0 CHECK (blast_suspected IN (0, 1)),
        sentence TEXT,
        embedding BLOB,
        UNIQUE (field_id, number)
    )""",
    """CREATE TABLE reviews (
        id INTEGER PRIMARY KEY,
        cell_id INTEGER NOT NULL REFERENCES cells (id),
        type TEXT NOT NULL,
        who TEXT NOT NULL,
        at TEXT NOT NULL
    )""",
    "CREATE INDEX reviews_by_cell ON reviews (cell_id, id)",
    """CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        who TEXT NOT NULL,
        action TEXT NOT NULL,
        sample_id TEXT NOT NULL REFERENCES samples (id),
        cell_id INTEGER REFERENCES cells (id),
        from_value TEXT,
        to_value TEXT
    )""",
    "CREATE INDEX audit_by_sample ON audit (sample_id, id)",
    """CREATE TABLE signatures (
        id INTEGER PRIMARY KEY,
        sample_id TEXT NOT NULL REFERENCES samples (id),
        who TEXT NOT NULL,
        at TEXT NOT NULL,
        meaning TEXT NOT NULL
    )""",
    "CREATE INDEX signatures_by_sample ON signatures (sample_id)",
)
"""Version 1: images, samples, fields, cells, reviews, the audit log, signatures. No ``ON DELETE CASCADE``
anywhere: nothing reviewed or audited disappears because something else was deleted."""

TEXT_INDEX = (
    """CREATE VIRTUAL TABLE cells_text USING fts5 (
        sentence, content = 'cells', content_rowid = 'id', tokenize = 'porter unicode61'
    )""",
    """CREATE TRIGGER cells_text_insert AFTER INSERT ON cells BEGIN
        INSERT INTO cells_text (rowid, sentence) VALUES (new.id, new.sentence);
    END""",
    """CREATE TRIGGER cells_text_delete AFTER DELETE ON cells BEGIN
        INSERT INTO cells_text (cells_text, rowid, sentence) VALUES ('delete', old.id, old.sentence);
    END""",
    """CREATE TRIGGER cells_text_update AFTER UPDATE OF sentence ON cells BEGIN
        INSERT INTO cells_text (cells_text, rowid, sentence) VALUES ('delete', old.id, old.sentence);
        INSERT INTO cells_text (rowid, sentence) VALUES (new.id, new.sentence);
    END""",
    "INSERT INTO cells_text (cells_text) VALUES ('rebuild')",  # the sentences already stored
)
"""The full-text index over the cells' sentences (FTS5, kept by triggers; English stems: "cells" finds "cell")."""


def has_fts5() -> bool:
    """Whether this Python's SQLite has the FTS5 extension (else text search falls back to LIKE)."""
    try:
        sqlite3.connect(":memory:").execute("CREATE VIRTUAL TABLE probe USING fts5 (x)")
    except sqlite3.OperationalError:
        return False
    return True


def has_text_index(connection: sqlite3.Connection) -> bool:
    row = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cells_text'").fetchone()
    return row is not None


def create_text_index(connection: sqlite3.Connection) -> None:
    """The FTS5 index, when this SQLite has FTS5 and the database has no index yet (a database migrated by a
    Python without FTS5 gets it the first time one with FTS5 opens it)."""
    if has_fts5() and not has_text_index(connection):
        for statement in TEXT_INDEX:
            connection.execute(statement)


def _core(connection: sqlite3.Connection) -> None:
    for statement in CORE:
        connection.execute(statement)


@dataclass(frozen=True)
class Migration:
    """One step of the schema: ``version`` is what ``user_version`` becomes once it is applied."""

    version: int
    description: str
    apply: Callable[[sqlite3.Connection], None]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "images, samples, fields, cells, reviews, audit log, signatures", _core),
    Migration(2, "full-text index over the cells' sentences (FTS5 when available)", create_text_index),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def schema_version(connection: sqlite3.Connection) -> int:
    return connection.execute("PRAGMA user_version").fetchone()[0]


def migrate(connection: sqlite3.Connection, *, target: int | None = None,
            migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply the migrations the database lacks, up to ``target`` (default: all), each in its own transaction;
    returns the versions applied. The connection must be in autocommit mode (``isolation_level=None``). A database
    already up to date is only read: opening it never waits for another process's write.

    Raises:
        ArchiveError: the database is newer than this code (written by a later leukolens), or a migration left a
            foreign key broken.
    """
    latest = migrations[-1].version if migrations else 0
    target = latest if target is None else target
    applied = []
    for migration in migrations:
        if migration.version > target:
            break
        if schema_version(connection) >= migration.version:
            continue  # checked again under the write lock below when it is not
        connection.execute("BEGIN IMMEDIATE")  # another process opening the same file waits here
        try:
            current = schema_version(connection)
            if current > latest:
                raise _too_new(current, latest)
            if current >= migration.version:
                connection.execute("ROLLBACK")
                continue
            if current != migration.version - 1:
                raise ArchiveError(f"the archive is at schema version {current}: no migration to {migration.version}")
            migration.apply(connection)
            broken = connection.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise ArchiveError(f"migration {migration.version} broke foreign keys: {broken[:3]}")
            connection.execute(f"PRAGMA user_version = {int(migration.version)}")
            connection.execute("COMMIT")
            applied.append(migration.version)
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
    if schema_version(connection) > latest:  # nothing was left to apply, but the file is newer than this code
        raise _too_new(schema_version(connection), latest)
    return applied


def _too_new(current: int, latest: int) -> ArchiveError:
    return ArchiveError(
        f"the archive is at schema version {current}, newer than this leukolens knows ({latest}): upgrade "
        "leukolens to open it"
    )
