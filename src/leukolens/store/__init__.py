"""The archive of analysed samples and reviews: one interface (:class:`Archive`), SQLite behind it by default.

    >>> from leukolens.store import SQLiteArchive
    >>> with SQLiteArchive.open("data") as archive:
    ...     sample_id = import_analysis(archive, "out/analyze")
    ...     archive.reclassify(archive.cells(sample_id)[0].id, "blast", who="jdoe")
    ...     archive.interpretation(sample_id).suggestion.name

The schema, its migrations, what survives a crash and how a server database would take SQLite's place:
docs/storage.md.
"""

from leukolens.store.archive import (
    DONE,
    FAILED,
    QUEUED,
    REVIEW_CALLS,
    RUNNING,
    STATUSES,
    Archive,
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
from leukolens.store.images import ImageStore, content_hash
from leukolens.store.outputs import import_analysis, resume_import
from leukolens.store.schema import MIGRATIONS, SCHEMA_VERSION
from leukolens.store.sqlite import SQLiteArchive

__all__ = [
    "DONE",
    "FAILED",
    "MIGRATIONS",
    "QUEUED",
    "REVIEW_CALLS",
    "RUNNING",
    "SCHEMA_VERSION",
    "STATUSES",
    "Archive",
    "ArchiveError",
    "AuditEntry",
    "ConflictError",
    "FieldRecord",
    "ImageStore",
    "NotFoundError",
    "Review",
    "SQLiteArchive",
    "SampleRecord",
    "SearchHit",
    "Signature",
    "StoredCell",
    "content_hash",
    "import_analysis",
    "resume_import",
]
