"""The service's settings: one dataclass, built by ``leukolens serve`` from its options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from leukolens.errors import LeukolensError


@dataclass(frozen=True)
class ServeConfig:
    """What :func:`leukolens.web.app.create_app` needs.

    Attributes:
        data_dir: the archive's folder (SQLite database and images by hash).
        token: when set, every ``/api`` request needs ``Authorization: Bearer <token>``.
        max_upload_mb: the largest request body of an upload, in MiB (a larger one gets 413).
        max_files: the most images one upload may hold.
        queue_size: the most samples waiting for analysis (a full queue answers 503).
        workers: analysis threads, each with its own models (one analysis at a time each).
        detector: detector checkpoint (None: the shipped one).
        cells: cell-model checkpoint (None: the shipped one).
        engine: inference engine of both models (``auto``, ``torch``, ``onnx``).
        start_workers: start the analysis threads (tests may leave them off and run the queue by hand).
    """

    data_dir: Path = Path("data")
    token: str | None = None
    max_upload_mb: float = 50.0
    max_files: int = 100
    queue_size: int = 32
    workers: int = 1
    detector: Path | None = None
    cells: Path | None = None
    engine: str = "auto"
    start_workers: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if not self.max_upload_mb > 0:
            raise LeukolensError(f"--max-upload-mb must be positive, got {self.max_upload_mb}")
        if self.max_files < 1 or self.queue_size < 1 or self.workers < 1:
            raise LeukolensError("the file limit, the queue size and the number of workers must be at least 1")
        if self.token is not None and len(self.token) < 8:
            raise LeukolensError("--token must be at least 8 characters")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)
