"""The weights shipped inside the package: the one place that knows their file names (below eval, which scores
them, and predict, which runs them).

    >>> from leukolens.models.weights import shipped, resolve
    >>> shipped("cells")                      # .../leukolens/weights/cellnet-pbc.pt, whether or not it is there
    >>> resolve("detector", None)             # the shipped detector, or a clear error when it is missing
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from leukolens.errors import LeukolensError

SHIPPED = {
    "cells": "cellnet-pbc.pt",
    "detector": "detector-bccd.pt",
    "clip": "clip-pbc.pt",
    "gan": "gan-pbc.pt",
}
"""Model kind -> file name in ``leukolens/weights``."""

_MISSING = {
    "cells": "no shipped cell model at {path}: train one with `leukolens train cells`",
    "detector": "no shipped detector at {path}: train one with `leukolens train detector`",
    "clip": "no shipped image-text model at {path}: train one with `leukolens train clip`",
    "gan": "no shipped GAN: pass --checkpoint (train one with `leukolens train gan`)",
}


def shipped(kind: str) -> Path:
    """Where the shipped weights of ``kind`` (``cells``, ``detector``, ``clip``, ``gan``) are, present or not."""
    return Path(str(resources.files("leukolens") / "weights" / SHIPPED[kind]))


def resolve(kind: str, path: str | Path | None) -> Path:
    """``path`` itself, or the shipped weights of ``kind`` when ``path`` is None.

    Raises:
        LeukolensError: the shipped weights were asked for and are not in this installation.
    """
    if path is not None:
        return Path(path)
    default = shipped(kind)
    if not default.is_file():
        raise LeukolensError(_MISSING[kind].format(path=default))
    return default


def default_checkpoint() -> Path:
    """The shipped cell model (present or not)."""
    return shipped("cells")


def default_detector() -> Path:
    """The shipped detector (present or not)."""
    return shipped("detector")


def default_clip_checkpoint() -> Path:
    """The shipped image-text model (present or not)."""
    return shipped("clip")
