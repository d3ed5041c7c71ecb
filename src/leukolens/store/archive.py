"""The archive's interface: what the web service, ``analyze`` and the report may ask of stored samples, and the typed
records it answers with. :class:`~leukolens.store.sqlite.SQLiteArchive` implements it on the standard library's
sqlite3; a server database would implement the same :class:`Archive` (docs/storage.md says how).

A sample's life in the archive::

    >>> archive = SQLiteArchive.open(data_dir)
    >>> images = [(name, archive.put_image(data)) for name, data in uploads]   # stored once, by SHA-256
    >>> sample = archive.create_sample(images=images)                          # status "queued", fields pending
    >>> archive.set_status(sample, RUNNING)
    >>> for f in archive.pending_fields(sample):                               # after a crash: only those left
    ...     archive.complete_field(f.id, field_json(...))                      # one transaction per field
    >>> archive.set_status(sample, DONE, summary=summary)
    >>> archive.reclassify(cell_id, "Monocyte", who="jdoe")                    # review + audit, one transaction
    >>> archive.interpretation(sample)                                         # recomputed with the reviews
    >>> archive.sign(sample, who="dr-smith")

Every method that writes does it in one transaction: it is applied whole or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from leukolens.errors import LeukolensError

if TYPE_CHECKING:
    import numpy as np

    from leukolens.predict.results import AnalyzedField
    from leukolens.sample.interpret import Interpretation

# ------------------------------------------------------------------------------------------------------ vocabulary
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
STATUSES = (QUEUED, RUNNING, DONE, FAILED)
TRANSITIONS: dict[str, tuple[str, ...]] = {
    QUEUED: (RUNNING, FAILED),
    RUNNING: (DONE, FAILED, QUEUED),  # back to queued: an analysis interrupted, to be resumed
    FAILED: (QUEUED,),  # a retry
    DONE: (),
}
"""The status changes a sample may go through (a status may also be set to itself)."""

REVIEW_BLAST, REVIEW_SMUDGE, REVIEW_ARTEFACT, REVIEW_NOT_WBC = "blast", "smudge", "artefact", "not a WBC"
REVIEW_CALLS = (REVIEW_BLAST, REVIEW_SMUDGE, REVIEW_ARTEFACT, REVIEW_NOT_WBC)
"""A reviewer's calls beside the cell model's types: a blast counts in the Blast row, a smudge cell in the smudge
row (outside the 100%), an artefact or a cell that is not a white cell leaves the count."""
NOT_COUNTED_CALLS = (REVIEW_ARTEFACT, REVIEW_NOT_WBC)

ACTION_RECLASSIFY, ACTION_SIGN = "reclassify", "sign"
MAX_WHO = 200
"""The longest reviewer name kept (a name, an e-mail address or a user id)."""


# ------------------------------------------------------------------------------------------------------ errors
class ArchiveError(LeukolensError):
    """A request the archive refuses: a bad value (the service answers 400/422)."""


class NotFoundError(ArchiveError):
    """No such sample, field, cell or image (404)."""


class ConflictError(ArchiveError):
    """The request does not fit the stored state: a status change not allowed, a signed sample changed (409)."""


# ------------------------------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class Review:
    """A reviewer's call on a cell: the type (one of the cell model's types or :data:`REVIEW_CALLS`), who, when."""

    type: str
    who: str
    at: str


@dataclass(frozen=True)
class Signature:
    sample_id: str
    who: str
    at: str
    meaning: str


@dataclass(frozen=True)
class AuditEntry:
    """One change a person made: who, when, what (``reclassify`` or ``sign``), on which sample and cell, from what
    to what."""

    id: int
    at: str
    who: str
    action: str
    sample_id: str
    cell_id: int | None
    from_value: str | None
    to_value: str | None


@dataclass(frozen=True)
class SampleRecord:
    """A sample: its status, the error when it failed, the summary ``analyze`` writes (``summary.json``) once done,
    how many of its fields are analysed, and its signatures."""

    id: str
    name: str
    created: str
    updated: str
    status: str
    error: str | None
    summary: dict | None
    fields_total: int
    fields_done: int
    signatures: tuple[Signature, ...] = ()

    @property
    def signed(self) -> bool:
        return bool(self.signatures)


@dataclass(frozen=True)
class FieldRecord:
    """A field of a sample: its name (the output stem, unique in the sample), its image's SHA-256 (None when the
    image was not stored), ``result`` (the per-field JSON of docs/output-schema.md) once ``done``."""

    id: int
    sample_id: str
    position: int
    name: str
    image_hash: str | None
    done: bool
    result: dict | None
    completed: str | None


@dataclass(frozen=True)
class StoredCell:
    """A cell as stored: where it is, the cell model's call, and the reviewer's call beside it.

    ``model_type`` is None for a cell the cell model did not read (red cells, platelets, or no cell model);
    ``attributes`` is attribute -> ``{value, probability, probabilities}`` as in the per-field JSON.
    """

    id: int
    sample_id: str
    field_id: int
    field: str
    number: int
    box_xyxy: tuple[float, float, float, float]
    detector_class: str
    detector_score: float
    model_type: str | None
    type_probability: float | None
    probabilities: dict[str, float]
    attributes: dict[str, dict]
    atypicality: float | None
    atypical: bool
    blast_probability: float | None
    blast_suspected: bool
    sentence: str | None
    has_embedding: bool
    review: Review | None

    @property
    def type(self) -> str | None:
        """The call that counts: the reviewer's when there is one, else the model's."""
        return self.review.type if self.review is not None else self.model_type


@dataclass(frozen=True)
class SearchHit:
    """A cell found by a search, best first: ``score`` is bm25 relevance (text, higher is better) or cosine
    similarity (example)."""

    cell_id: int
    sample_id: str
    field: str
    number: int
    sentence: str | None
    type: str | None
    score: float


# ------------------------------------------------------------------------------------------------------ interface
@runtime_checkable
class Archive(Protocol):
    """The archive of analysed samples and reviews. Sample ids are strings, field and cell ids integers; a missing
    one raises :class:`NotFoundError`, a refused change :class:`ConflictError`, a bad value :class:`ArchiveError`."""

    # images
    def put_image(self, data: bytes) -> str:
        """Store an image's bytes once, by content; returns its SHA-256 (hex). Storing the same bytes again is a
        no-op."""

    def read_image(self, image_hash: str) -> bytes:
        """The bytes stored under a SHA-256 (refused unless it is 64 hex digits)."""

    # samples and fields
    def create_sample(self, *, images: Sequence[tuple[str, str | None]] = (), name: str = "") -> str:
        """A new sample, status ``queued``, with one pending field per (field name, image hash); returns its id."""

    def add_fields(self, sample_id: str, images: Sequence[tuple[str, str | None]]) -> list[int]:
        """More pending fields for a sample that is not done; returns their ids."""

    def pending_fields(self, sample_id: str) -> list[FieldRecord]:
        """The fields still to analyse, in order: what a resumed analysis works on."""

    def complete_field(
        self,
        field_id: int,
        result: Mapping,
        *,
        sentences: Mapping[int, str] | None = None,
        embeddings: Mapping[int, np.ndarray] | None = None,
    ) -> None:
        """Store a field's result (the per-field JSON) and its cells, and mark it done: one transaction.
        ``sentences`` and ``embeddings`` are keyed by cell number; without a sentence a cell gets one composed
        from its type and attributes."""

    def add_field(
        self,
        sample_id: str,
        *,
        name: str,
        image_hash: str | None,
        result: Mapping,
        sentences: Mapping[int, str] | None = None,
        embeddings: Mapping[int, np.ndarray] | None = None,
    ) -> int:
        """A field added and completed in one transaction (an import); returns its id."""

    def set_status(
        self, sample_id: str, status: str, *, error: str | None = None, summary: Mapping | None = None
    ) -> None:
        """Move a sample along :data:`TRANSITIONS`; ``summary`` is stored with it (``summary.json``)."""

    def get_sample(self, sample_id: str) -> SampleRecord: ...

    def list_samples(self, *, status: str | None = None, limit: int = 100, offset: int = 0) -> list[SampleRecord]:
        """Newest first."""

    def fields(self, sample_id: str) -> list[FieldRecord]: ...

    def field(self, field_id: int) -> FieldRecord: ...

    # cells and reviews
    def cells(self, sample_id: str) -> list[StoredCell]:
        """Every cell of a sample, field by field in detector order, with the reviewer's call beside the model's."""

    def cell(self, cell_id: int) -> StoredCell: ...

    def set_embeddings(self, embeddings: Mapping[int, np.ndarray]) -> None:
        """Store (or replace) cells' embeddings, by cell id."""

    def reclassify(self, cell_id: int, new_type: str, *, who: str) -> StoredCell:
        """A reviewer's call on a cell (a type the cell model knows, or one of :data:`REVIEW_CALLS`): the review
        and its audit row in one transaction. Refused once the sample is signed."""

    def sign(self, sample_id: str, *, who: str, meaning: str = "reviewed and signed") -> Signature:
        """Mark a done sample reviewed and signed (audited); its cells can no longer be reclassified."""

    def audit_log(self, sample_id: str | None = None) -> list[AuditEntry]:
        """Every change people made, oldest first (of one sample, or of all)."""

    # recomputing
    def sample_fields(self, sample_id: str, *, reviewed: bool = True) -> list[tuple[str, AnalyzedField]]:
        """The sample's done fields as records (``interpret`` takes them), the reviewers' calls applied unless
        ``reviewed`` is False."""

    def interpretation(self, sample_id: str) -> Interpretation:
        """The sample's interpretation recomputed from its stored cells with the reviewers' calls applied."""

    # search
    def search_text(self, query: str, *, limit: int = 20) -> list[SearchHit]:
        """Cells whose sentence matches the words of ``query``, most relevant first."""

    def search_embedding(self, vector: np.ndarray, *, limit: int = 20) -> list[SearchHit]:
        """Cells whose stored embedding is nearest ``vector`` (cosine), nearest first."""

    def similar_cells(self, cell_id: int, *, limit: int = 20) -> list[SearchHit]:
        """Cells like this one (by its stored embedding), itself left out."""

    def close(self) -> None: ...
