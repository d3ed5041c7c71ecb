"""The archive on SQLite (the standard library's sqlite3): one file, ``<data dir>/archive.sqlite3``, beside the
content-addressed images, ``<data dir>/images/``.

Every connection runs in WAL mode (readers never wait for the writer), with foreign keys enforced and
``synchronous=FULL`` (a committed transaction survives a power cut, not only a killed process). Every write is one
``BEGIN IMMEDIATE`` ... ``COMMIT``; reads that span several statements run in one read transaction, so they see one
state. Each thread gets its own connection (a web server's worker threads may share one archive object).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from leukolens.predict.results import AnalyzedField
from leukolens.sample.interpret import Interpretation, interpret
from leukolens.store.archive import (
    ACTION_RECLASSIFY,
    ACTION_SIGN,
    DONE,
    MAX_WHO,
    QUEUED,
    REVIEW_CALLS,
    STATUSES,
    TRANSITIONS,
    ArchiveError,
    AuditEntry,
    ConflictError,
    FieldRecord,
    NotFoundError,
    Review,
    SampleRecord,
    SearchHit,
    Signature,
    StoredCell,
)
from leukolens.store.images import ImageStore, check_hash
from leukolens.store.records import (
    CELL_COLUMNS,
    analyzed_field,
    cell_rows,
    embedding_blob,
    field_json_text,
    predicted_cell,
)
from leukolens.store.schema import create_text_index, has_text_index, migrate

DATABASE = "archive.sqlite3"
IMAGES = "images"
SAMPLE_ID = re.compile(r"[0-9a-f]{32}")
MAX_QUERY_WORDS = 32
MAX_LIMIT = 1000
_LATEST_REVIEW = "LEFT JOIN reviews r ON r.id = (SELECT max(id) FROM reviews WHERE cell_id = c.id)"
_CELL_SELECT = f"""
    SELECT c.id, f.sample_id, c.field_id, f.name AS field_name, c.number, c.x1, c.y1, c.x2, c.y2, c.detector_class,
           c.detector_score, c.model_type, c.type_probability, c.probabilities, c.attributes, c.atypicality,
           c.atypical, c.blast_probability, c.blast_suspected, c.sentence, c.embedding IS NOT NULL AS has_embedding,
           r.type AS review_type, r.who AS review_who, r.at AS review_at
    FROM cells c JOIN fields f ON f.id = c.field_id {_LATEST_REVIEW}"""
_HIT_SELECT = f"""
    SELECT c.id, f.sample_id, f.name, c.number, c.sentence, coalesce(r.type, c.model_type)
    FROM cells c JOIN fields f ON f.id = c.field_id {_LATEST_REVIEW}"""


def now() -> str:
    """The time of a write: ISO 8601, UTC, milliseconds (sorts as text)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_sample_id(sample_id: object) -> str:
    if not isinstance(sample_id, str) or not SAMPLE_ID.fullmatch(sample_id):
        raise NotFoundError(f"no sample {str(sample_id)[:80]!r}")
    return sample_id


def _check_id(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise NotFoundError(f"no {what} {str(value)[:80]!r}")
    return value


def _check_who(who: object) -> str:
    if not isinstance(who, str) or not who.strip() or len(who.strip()) > MAX_WHO:
        raise ArchiveError(f"who made the change must be named (1 to {MAX_WHO} characters)")
    return who.strip()


def _check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ArchiveError(f"limit must be 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


class SQLiteArchive:
    """:class:`~leukolens.store.archive.Archive` on SQLite, in a data folder (created when missing)."""

    def __init__(self, data_dir: str | Path, *, timeout: float = 30.0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DATABASE
        self.images = ImageStore(self.data_dir / IMAGES)
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        connection = self._connection()
        self.applied_migrations = migrate(connection)
        if not has_text_index(connection):
            with self._write() as c:  # a database made where FTS5 was missing, opened where it is not
                create_text_index(c)
        self.text_index = has_text_index(connection)

    @classmethod
    def open(cls, data_dir: str | Path) -> SQLiteArchive:
        return cls(data_dir)

    def __enter__(self) -> SQLiteArchive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------------- connections
    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                         check_same_thread=False)
            connection.row_factory = sqlite3.Row
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise ArchiveError(f"the archive at {self.path} cannot use WAL mode (got {mode})")
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        connection.execute(begin)
        try:
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:  # also when COMMIT itself failed: never leave a transaction open
                connection.execute("ROLLBACK")
            raise

    def _write(self):
        """One write transaction (the write lock taken at once: no deadlock between two writers)."""
        return self._transaction("BEGIN IMMEDIATE")

    def _read(self):
        """One read transaction: several statements that see one state."""
        return self._transaction("BEGIN")

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()

    # ---------------------------------------------------------------------------------------------- images
    def put_image(self, data: bytes) -> str:
        image_hash = self.images.put(data)  # the file first: a row never points at a missing file
        with self._write() as c:
            c.execute("INSERT OR IGNORE INTO images (hash, size, created) VALUES (?, ?, ?)",
                      (image_hash, len(data), now()))
        return image_hash

    def read_image(self, image_hash: str) -> bytes:
        check_hash(image_hash)
        if self._connection().execute("SELECT 1 FROM images WHERE hash = ?", (image_hash,)).fetchone() is None:
            raise NotFoundError(f"no image {image_hash}")
        return self.images.read(image_hash)

    def image_path(self, image_hash: str) -> Path:
        """The stored file of an image (for a server that sends files itself); made from the hash only."""
        self.read_image(image_hash)  # known and intact
        return self.images.path(image_hash)

    # ---------------------------------------------------------------------------------------------- samples, fields
    def _sample_row(self, c: sqlite3.Connection, sample_id: str) -> sqlite3.Row:
        row = c.execute("SELECT * FROM samples WHERE id = ?", (check_sample_id(sample_id),)).fetchone()
        if row is None:
            raise NotFoundError(f"no sample {sample_id}")
        return row

    def _insert_fields(
        self, c: sqlite3.Connection, sample_id: str, images: Sequence[tuple[str, str | None]]
    ) -> list[int]:
        start = c.execute("SELECT coalesce(max(position), 0) FROM fields WHERE sample_id = ?",
                          (sample_id,)).fetchone()[0]
        ids = []
        for i, entry in enumerate(images):
            if not isinstance(entry, tuple | list) or len(entry) != 2:
                raise ArchiveError("each field is (name, image hash or None)")
            name, image_hash = entry
            if not isinstance(name, str) or not name.strip() or len(name) > 255:
                raise ArchiveError(f"a field name must be 1 to 255 characters, got {str(name)[:80]!r}")
            if image_hash is not None:
                check_hash(image_hash)
                if c.execute("SELECT 1 FROM images WHERE hash = ?", (image_hash,)).fetchone() is None:
                    raise NotFoundError(f"no image {image_hash}: store it with put_image first")
            try:
                cursor = c.execute("INSERT INTO fields (sample_id, position, name, image_hash) VALUES (?, ?, ?, ?)",
                                   (sample_id, start + i + 1, name, image_hash))
            except sqlite3.IntegrityError:
                raise ConflictError(f"the sample already has a field named {name!r}") from None
            ids.append(cursor.lastrowid)
        return ids

    def create_sample(self, *, images: Sequence[tuple[str, str | None]] = (), name: str = "") -> str:
        if not isinstance(name, str) or len(name) > 255:
            raise ArchiveError("a sample name is at most 255 characters")
        sample_id, at = uuid.uuid4().hex, now()
        with self._write() as c:
            c.execute("INSERT INTO samples (id, name, created, updated, status) VALUES (?, ?, ?, ?, ?)",
                      (sample_id, name, at, at, QUEUED))
            self._insert_fields(c, sample_id, images)
        return sample_id

    def add_fields(self, sample_id: str, images: Sequence[tuple[str, str | None]]) -> list[int]:
        with self._write() as c:
            if self._sample_row(c, sample_id)["status"] == DONE:
                raise ConflictError(f"sample {sample_id} is done: no fields can be added")
            ids = self._insert_fields(c, sample_id, images)
            c.execute("UPDATE samples SET updated = ? WHERE id = ?", (now(), sample_id))
        return ids

    @staticmethod
    def _field(row: sqlite3.Row) -> FieldRecord:
        return FieldRecord(row["id"], row["sample_id"], row["position"], row["name"], row["image_hash"],
                           bool(row["done"]), None if row["result"] is None else json.loads(row["result"]),
                           row["completed"])

    def fields(self, sample_id: str) -> list[FieldRecord]:
        with self._read() as c:
            self._sample_row(c, sample_id)
            rows = c.execute("SELECT * FROM fields WHERE sample_id = ? ORDER BY position", (sample_id,)).fetchall()
        return [self._field(r) for r in rows]

    def field(self, field_id: int) -> FieldRecord:
        row = self._connection().execute("SELECT * FROM fields WHERE id = ?",
                                          (_check_id(field_id, "field"),)).fetchone()
        if row is None:
            raise NotFoundError(f"no field {field_id}")
        return self._field(row)

    def pending_fields(self, sample_id: str) -> list[FieldRecord]:
        return [f for f in self.fields(sample_id) if not f.done]

    def _complete(self, c: sqlite3.Connection, field_id: int, result: Mapping, sentences, embeddings) -> None:
        row = c.execute("SELECT f.done, s.id, s.status FROM fields f JOIN samples s ON s.id = f.sample_id "
                        "WHERE f.id = ?", (_check_id(field_id, "field"),)).fetchone()
        if row is None:
            raise NotFoundError(f"no field {field_id}")
        if row["done"]:
            raise ConflictError(f"field {field_id} is already done")
        if row["status"] == DONE:
            raise ConflictError(f"sample {row['id']} is done: its fields cannot change")
        text = field_json_text(result)
        rows = cell_rows(result, sentences=sentences, embeddings=embeddings)
        columns = ", ".join(("field_id", *CELL_COLUMNS))
        marks = ", ".join("?" * (len(CELL_COLUMNS) + 1))
        c.executemany(f"INSERT INTO cells ({columns}) VALUES ({marks})", [(field_id, *r) for r in rows])
        at = now()
        c.execute("UPDATE fields SET result = ?, done = 1, completed = ? WHERE id = ?", (text, at, field_id))
        c.execute("UPDATE samples SET updated = ? WHERE id = ?", (at, row["id"]))

    def complete_field(self, field_id: int, result: Mapping, *, sentences: Mapping[int, str] | None = None,
                       embeddings: Mapping[int, np.ndarray] | None = None) -> None:
        with self._write() as c:
            self._complete(c, field_id, result, sentences, embeddings)

    def add_field(self, sample_id: str, *, name: str, image_hash: str | None, result: Mapping,
                  sentences: Mapping[int, str] | None = None,
                  embeddings: Mapping[int, np.ndarray] | None = None) -> int:
        with self._write() as c:
            if self._sample_row(c, sample_id)["status"] == DONE:
                raise ConflictError(f"sample {sample_id} is done: no fields can be added")
            (field_id,) = self._insert_fields(c, sample_id, [(name, image_hash)])
            self._complete(c, field_id, result, sentences, embeddings)
        return field_id

    def set_status(self, sample_id: str, status: str, *, error: str | None = None,
                   summary: Mapping | None = None) -> None:
        if status not in STATUSES:
            raise ArchiveError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        if error is not None and (not isinstance(error, str) or len(error) > 10_000):
            raise ArchiveError("an error message is a string of at most 10,000 characters")
        summary_text = None if summary is None else field_json_text(summary)
        with self._write() as c:
            current = self._sample_row(c, sample_id)["status"]
            if status != current and status not in TRANSITIONS[current]:
                raise ConflictError(f"sample {sample_id} is {current}: it cannot become {status}")
            if status == DONE:
                pending = c.execute("SELECT count(*) FROM fields WHERE sample_id = ? AND done = 0",
                                    (sample_id,)).fetchone()[0]
                if pending:
                    raise ConflictError(f"sample {sample_id} has {pending} fields not analysed: it is not done")
            c.execute("UPDATE samples SET status = ?, error = ?, summary = coalesce(?, summary), updated = ? "
                      "WHERE id = ?", (status, error if status == "failed" else None, summary_text, now(), sample_id))

    def _sample(self, c: sqlite3.Connection, row: sqlite3.Row) -> SampleRecord:
        total, done = c.execute("SELECT count(*), coalesce(sum(done), 0) FROM fields WHERE sample_id = ?",
                                (row["id"],)).fetchone()
        signatures = tuple(
            Signature(s["sample_id"], s["who"], s["at"], s["meaning"])
            for s in c.execute("SELECT * FROM signatures WHERE sample_id = ? ORDER BY id", (row["id"],))
        )
        return SampleRecord(row["id"], row["name"], row["created"], row["updated"], row["status"], row["error"],
                            None if row["summary"] is None else json.loads(row["summary"]), total, done, signatures)

    def get_sample(self, sample_id: str) -> SampleRecord:
        with self._read() as c:
            return self._sample(c, self._sample_row(c, sample_id))

    def list_samples(self, *, status: str | None = None, limit: int = 100, offset: int = 0) -> list[SampleRecord]:
        if status is not None and status not in STATUSES:
            raise ArchiveError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ArchiveError(f"offset must be a whole number >= 0, got {offset!r}")
        with self._read() as c:
            rows = c.execute("SELECT * FROM samples WHERE ? IS NULL OR status = ? ORDER BY created DESC, rowid DESC "
                             "LIMIT ? OFFSET ?", (status, status, _check_limit(limit), offset)).fetchall()
            return [self._sample(c, r) for r in rows]

    # ---------------------------------------------------------------------------------------------- cells, reviews
    @staticmethod
    def _cell(row: sqlite3.Row) -> StoredCell:
        review = None if row["review_type"] is None else Review(row["review_type"], row["review_who"],
                                                                  row["review_at"])
        return StoredCell(
            row["id"], row["sample_id"], row["field_id"], row["field_name"], row["number"],
            (row["x1"], row["y1"], row["x2"], row["y2"]), row["detector_class"], row["detector_score"],
            row["model_type"], row["type_probability"], json.loads(row["probabilities"]),
            json.loads(row["attributes"]), row["atypicality"], bool(row["atypical"]), row["blast_probability"],
            bool(row["blast_suspected"]), row["sentence"], bool(row["has_embedding"]), review,
        )

    def cells(self, sample_id: str) -> list[StoredCell]:
        with self._read() as c:
            self._sample_row(c, sample_id)
            rows = c.execute(f"{_CELL_SELECT} WHERE f.sample_id = ? ORDER BY f.position, c.number",
                             (sample_id,)).fetchall()
        return [self._cell(r) for r in rows]

    def _cell_in(self, c: sqlite3.Connection, cell_id: int) -> StoredCell:
        row = c.execute(f"{_CELL_SELECT} WHERE c.id = ?", (_check_id(cell_id, "cell"),)).fetchone()
        if row is None:
            raise NotFoundError(f"no cell {cell_id}")
        return self._cell(row)

    def cell(self, cell_id: int) -> StoredCell:
        with self._read() as c:
            return self._cell_in(c, cell_id)

    def set_embeddings(self, embeddings: Mapping[int, np.ndarray]) -> None:
        with self._write() as c:
            for cell_id, vector in embeddings.items():
                blob = embedding_blob(vector, f"embedding of cell {cell_id}")
                if c.execute("UPDATE cells SET embedding = ? WHERE id = ?",
                             (blob, _check_id(cell_id, "cell"))).rowcount != 1:
                    raise NotFoundError(f"no cell {cell_id}")

    def review_types(self, sample_id: str) -> tuple[str, ...]:
        """What a reviewer may call a cell of this sample: the cell model's types seen in it, then
        :data:`REVIEW_CALLS`."""
        with self._read() as c:
            return self._review_types(c, sample_id)

    @staticmethod
    def _review_types(c: sqlite3.Connection, sample_id: str) -> tuple[str, ...]:
        rows = c.execute(
            "SELECT DISTINCT p.key FROM cells c JOIN fields f ON f.id = c.field_id, json_each(c.probabilities) p "
            "WHERE f.sample_id = ? UNION SELECT DISTINCT c.model_type FROM cells c JOIN fields f "
            "ON f.id = c.field_id WHERE f.sample_id = ? AND c.model_type IS NOT NULL", (sample_id, sample_id))
        types = sorted(r[0] for r in rows)
        return (*types, *(call for call in REVIEW_CALLS if call not in types))

    def _signed(self, c: sqlite3.Connection, sample_id: str) -> bool:
        return c.execute("SELECT 1 FROM signatures WHERE sample_id = ?", (sample_id,)).fetchone() is not None

    def reclassify(self, cell_id: int, new_type: str, *, who: str) -> StoredCell:
        who = _check_who(who)
        with self._write() as c:
            cell = self._cell_in(c, cell_id)
            if self._signed(c, cell.sample_id):
                raise ConflictError(f"sample {cell.sample_id} is signed: its cells can no longer be reclassified")
            allowed = self._review_types(c, cell.sample_id)
            by_case = {t.casefold(): t for t in allowed}
            if not isinstance(new_type, str) or new_type.strip().casefold() not in by_case:
                raise ArchiveError(f"cannot call a cell {str(new_type)[:80]!r}: one of {', '.join(allowed)}")
            new_type, at = by_case[new_type.strip().casefold()], now()
            c.execute("INSERT INTO reviews (cell_id, type, who, at) VALUES (?, ?, ?, ?)", (cell_id, new_type, who, at))
            c.execute("INSERT INTO audit (at, who, action, sample_id, cell_id, from_value, to_value) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (at, who, ACTION_RECLASSIFY, cell.sample_id, cell_id, cell.type, new_type))
            c.execute("UPDATE samples SET updated = ? WHERE id = ?", (at, cell.sample_id))
            return self._cell_in(c, cell_id)

    def sign(self, sample_id: str, *, who: str, meaning: str = "reviewed and signed") -> Signature:
        who = _check_who(who)
        if not isinstance(meaning, str) or not meaning.strip() or len(meaning) > 200:
            raise ArchiveError("what the signature means is 1 to 200 characters")
        at = now()
        with self._write() as c:
            if self._sample_row(c, sample_id)["status"] != DONE:
                raise ConflictError(f"sample {sample_id} is not done: only an analysed sample can be signed")
            c.execute("INSERT INTO signatures (sample_id, who, at, meaning) VALUES (?, ?, ?, ?)",
                      (sample_id, who, at, meaning))
            c.execute("INSERT INTO audit (at, who, action, sample_id, cell_id, from_value, to_value) "
                      "VALUES (?, ?, ?, ?, NULL, NULL, ?)", (at, who, ACTION_SIGN, sample_id, meaning))
            c.execute("UPDATE samples SET updated = ? WHERE id = ?", (at, sample_id))
        return Signature(sample_id, who, at, meaning)

    def audit_log(self, sample_id: str | None = None) -> list[AuditEntry]:
        with self._read() as c:
            if sample_id is not None:
                self._sample_row(c, sample_id)
            rows = c.execute("SELECT * FROM audit WHERE ? IS NULL OR sample_id = ? ORDER BY id",
                             (sample_id, sample_id)).fetchall()
        return [AuditEntry(r["id"], r["at"], r["who"], r["action"], r["sample_id"], r["cell_id"], r["from_value"],
                           r["to_value"]) for r in rows]

    # ---------------------------------------------------------------------------------------------- recomputing
    def sample_fields(self, sample_id: str, *, reviewed: bool = True) -> list[tuple[str, AnalyzedField]]:
        with self._read() as c:
            self._sample_row(c, sample_id)
            fields = c.execute("SELECT * FROM fields WHERE sample_id = ? AND done = 1 ORDER BY position",
                               (sample_id,)).fetchall()
            rows = c.execute(f"{_CELL_SELECT} WHERE f.sample_id = ? AND f.done = 1 ORDER BY f.position, c.number",
                             (sample_id,)).fetchall()
        by_field: dict[int, list] = {f["id"]: [] for f in fields}
        for row in rows:
            cell = predicted_cell(self._cell(row), reviewed=reviewed)
            if cell is not None:
                by_field[row["field_id"]].append(cell)
        return [(f["name"], analyzed_field(json.loads(f["result"]), by_field[f["id"]])) for f in fields]

    def interpretation(self, sample_id: str) -> Interpretation:
        return interpret(self.sample_fields(sample_id))

    # ---------------------------------------------------------------------------------------------- search
    def _hits(self, c: sqlite3.Connection, scored: Sequence[tuple[int, float]]) -> list[SearchHit]:
        if not scored:
            return []
        marks = ", ".join("?" * len(scored))
        rows = {r[0]: r for r in c.execute(f"{_HIT_SELECT} WHERE c.id IN ({marks})", [i for i, _ in scored])}
        return [SearchHit(*rows[i], score=float(s)) for i, s in scored if i in rows]

    def search_text(self, query: str, *, limit: int = 20) -> list[SearchHit]:
        if not isinstance(query, str) or len(query) > 1000:
            raise ArchiveError("a text query is a string of at most 1,000 characters")
        limit = _check_limit(limit)
        words = list(dict.fromkeys(w.casefold() for w in re.findall(r"\w+", query)))[:MAX_QUERY_WORDS]
        if not words:
            return []
        with self._read() as c:
            if self.text_index:
                # Every word first (the precise hits), then any word, ranked by bm25, to fill the list.
                scored: dict[int, float] = {}
                for joiner in (" AND ", " OR "):
                    match = joiner.join(f'"{w}"' for w in words)  # \w+ words: no quote can reach the query syntax
                    for rowid, rank in c.execute(
                        "SELECT rowid, bm25(cells_text) FROM cells_text WHERE cells_text MATCH ? "
                        "ORDER BY bm25(cells_text) LIMIT ?", (match, limit)):
                        scored.setdefault(rowid, -rank)
                    if len(scored) >= limit or len(words) == 1:
                        break
                ranked = list(scored.items())[:limit]
            else:
                found = " + ".join("(instr(lower(sentence), ?) > 0)" for _ in words)
                ranked = [tuple(r) for r in c.execute(
                    f"SELECT id, {found} AS score FROM cells WHERE sentence IS NOT NULL AND {found} > 0 "
                    "ORDER BY score DESC, id LIMIT ?", (*words, *words, limit))]
            return self._hits(c, ranked)

    def search_embedding(self, vector: np.ndarray, *, limit: int = 20, exclude: int | None = None) -> list[SearchHit]:
        query = np.frombuffer(embedding_blob(vector, "the query"), dtype="<f4")
        limit = _check_limit(limit)
        with self._read() as c:
            rows = c.execute("SELECT id, embedding FROM cells WHERE length(embedding) = ? AND id IS NOT ?",
                             (query.nbytes, exclude)).fetchall()
            if not rows:
                return []
            ids = np.array([r[0] for r in rows])
            matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)  # [cells, dim]
            norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(query)
            similarity = (matrix @ query) / np.where(norms > 0, norms, 1.0)  # [cells]
            best = np.argsort(-similarity, kind="stable")[:limit]
            return self._hits(c, [(int(ids[i]), float(similarity[i])) for i in best])

    def similar_cells(self, cell_id: int, *, limit: int = 20) -> list[SearchHit]:
        row = self._connection().execute("SELECT embedding FROM cells WHERE id = ?",
                                         (_check_id(cell_id, "cell"),)).fetchone()
        if row is None:
            raise NotFoundError(f"no cell {cell_id}")
        if row[0] is None:
            raise ArchiveError(f"cell {cell_id} has no stored embedding to search by")
        return self.search_embedding(np.frombuffer(row[0], dtype="<f4"), limit=limit, exclude=cell_id)
