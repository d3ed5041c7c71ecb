"""Images stored once, by content: ``<root>/<first two hex digits>/<SHA-256 in hex>``.

A stored image's path is made from its hash and nothing else, so no name, path or id from a request ever reaches the
file system: a hash that is not 64 lowercase hex digits is refused before any path is built, and the path is checked
to lie under the root. Files are written to a temporary file in the same folder and renamed (complete or absent), and
never changed afterwards: a second copy of the same bytes is not written again.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from leukolens.errors import atomic_write_bytes
from leukolens.store.archive import ArchiveError, NotFoundError

HASH = re.compile(r"[0-9a-f]{64}")


def content_hash(data: bytes) -> str:
    """The SHA-256 of ``data`` in lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def check_hash(image_hash: object) -> str:
    """``image_hash`` when it is a SHA-256 in lowercase hex; anything else (a path, ``..``, a name) is refused."""
    if not isinstance(image_hash, str) or not HASH.fullmatch(image_hash):
        raise ArchiveError(f"not an image hash (64 lowercase hex digits): {str(image_hash)[:80]!r}")
    return image_hash


class ImageStore:
    """A content-addressed folder of images."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, image_hash: str) -> Path:
        """Where the image with this hash lies (whether or not it is stored)."""
        image_hash = check_hash(image_hash)
        path = (self.root / image_hash[:2] / image_hash).resolve()
        if not path.is_relative_to(self.root):  # cannot happen with a checked hash; kept as the last line of defence
            raise ArchiveError(f"image path outside the archive: {image_hash!r}")
        return path

    def put(self, data: bytes) -> str:
        """Store ``data`` under its hash (atomic; a no-op when already stored); returns the hash."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ArchiveError(f"image data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        image_hash = content_hash(data)
        path = self.path(image_hash)
        if not (path.is_file() and path.stat().st_size == len(data)):
            atomic_write_bytes(path, data)
        return image_hash

    def read(self, image_hash: str) -> bytes:
        path = self.path(image_hash)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"no image {image_hash}") from None
        if content_hash(data) != image_hash:
            raise ArchiveError(f"image {image_hash} is damaged on disk: its content no longer matches its hash")
        return data

    def exists(self, image_hash: str) -> bool:
        return self.path(image_hash).is_file()
