"""The shipped weights, for the inference package: they live in :mod:`leukolens.models.weights` (below eval)."""

from leukolens.models.weights import (  # noqa: F401
    SHIPPED,
    default_checkpoint,
    default_clip_checkpoint,
    default_detector,
    resolve,
    shipped,
)
