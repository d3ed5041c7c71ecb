"""The ground floor every layer may import: the user-facing error type and atomic file writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


class LeukolensError(Exception):
    """A user's mistake (bad input, bad option): the CLI prints it without a traceback."""


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file so that it is either complete or absent: temporary file in the same folder, then rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file so that it is either complete or absent (see :func:`atomic_write_text`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes the file private; an output file should not be
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
