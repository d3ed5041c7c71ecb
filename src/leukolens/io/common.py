"""What every reader and writer shares: problem reports, image checks, number formatting.

A reader never raises on a user's bad line in the default mode: it records a :class:`Problem` (file, line, kind,
message) in a :class:`ProblemLog`, skips only that line, and goes on. In strict mode the log raises
:class:`InputError` at the first problem instead.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# The error type and atomic writes live in leukolens.errors; re-exported here for code that still imports them here.
from leukolens.errors import LeukolensError, atomic_write_bytes, atomic_write_text  # noqa: F401

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, where it is, and what it is."""

    path: str
    line: int | None
    kind: str  # a short stable name, e.g. "column-count", "box-range", "unknown-class"
    message: str
    label: str | None = None  # class of the skipped cell, when known, so counts can say what was left out

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.message}"


class InputError(LeukolensError):
    """Raised in strict mode at the first problem, and for input that cannot be read at all."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


@dataclass
class ProblemLog:
    """Collects problems; in strict mode the first one raises :class:`InputError`."""

    strict: bool = False
    problems: list[Problem] = field(default_factory=list)

    def add(self, path: str | Path, line: int | None, kind: str, message: str, *, label: str | None = None) -> None:
        problem = Problem(str(path), line, kind, message, label)
        if self.strict:
            raise InputError(problem)
        self.problems.append(problem)

    def __len__(self) -> int:
        return len(self.problems)

    def __bool__(self) -> bool:  # an empty log is still a log
        return True

    def counts(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    def of_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]


# ------------------------------------------------------------------------------------------------------ writing
def place_image(source: str | Path, target: str | Path, mode: str) -> Path:
    """Put an image where a written data set expects it: ``link`` (symlink), ``copy``, or ``none`` (leave it)."""
    source, target = Path(source).resolve(), Path(target)
    if mode == "none":
        return source
    if mode not in ("link", "copy"):
        raise LeukolensError(f"unknown image mode {mode!r}: use link, copy or none")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        if target.resolve() == source:
            return target
        target.unlink()
    if mode == "link":
        target.symlink_to(source)
    else:
        atomic_write_bytes(target, source.read_bytes())
    return target


BORDER_TOLERANCE = 1.0
"""Pixels a box or region may reach past the image border (annotation tools round edges outwards; VOC corners are
1-based, so ``xmax`` equal to the width is common)."""


def outside_image(x1: float, y1: float, x2: float, y2: float, size: tuple[int, int]) -> bool:
    """Whether pixel corners reach past the image by more than :data:`BORDER_TOLERANCE`."""
    width, height = size
    t = BORDER_TOLERANCE
    return x1 < -t or y1 < -t or x2 > width + t or y2 > height + t


def json_number(value: float) -> int | float:
    """A number for JSON: integral values as integers (what COCO tools expect), others as exact floats."""
    return int(value) if math.isfinite(value) and value == int(value) and abs(value) < 1e15 else value


def format_number(value: float) -> str:
    """The shortest text that reads back as the same float; integral values without a decimal point."""
    return str(json_number(float(value)))


@dataclass
class WriteReport:
    """What a writer wrote and what the target format could not hold."""

    path: Path
    files: int = 0
    fields: int = 0
    cells: int = 0
    dropped: Counter = field(default_factory=Counter)  # what was dropped -> how many times

    def drop(self, what: str, count: int = 1) -> None:
        if count:
            self.dropped[what] += count

    def summary(self) -> str:
        lines = [f"wrote {self.fields} fields, {self.cells} cells ({self.files} files) to {self.path}"]
        for what, n in sorted(self.dropped.items()):
            lines.append(f"  dropped (the format cannot hold it): {what}: {n}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ images
def image_size(path: str | Path) -> tuple[int, int]:
    """Width and height from the image header, without decoding the pixels.

    Raises:
        InputError: the file is missing or not an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise InputError(Problem(str(path), None, "missing-image", "image file not found")) from None
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(Problem(str(path), None, "bad-image", f"not a readable image ({error})")) from None


def check_image(path: str | Path) -> str | None:
    """Decode the whole image; returns what is wrong (unreadable, truncated) or None when it is sound."""
    try:
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError:
        return "image file not found"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return f"unreadable or truncated image ({error})"
    return None


def find_image(folder: Path, stem: str) -> Path | None:
    """The image beside a label file: same stem, any image suffix, in ``folder``."""
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_lines(path: Path, log: ProblemLog) -> list[tuple[int, str]] | None:
    """Non-blank lines of a text file with their 1-based numbers; records a problem and returns None if unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        log.add(path, None, "unreadable-labels", f"not a UTF-8 text file ({error.reason})")
        return None
    except OSError as error:
        log.add(path, None, "unreadable-labels", f"cannot read label file ({error.strerror})")
        return None
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
