"""Prediction with trained models: one engine, the shipped weights, one module per thing predicted.

    >>> from leukolens.predict import Detector, CellReader
    >>> detector, reader = Detector.from_checkpoint(), CellReader.from_checkpoint()   # the shipped weights
    >>> found = detector.detect([image])[0]                      # FieldDetections: xyxy pixels, canvas size
    >>> cells = reader.read_cells([(image, found)])[0]           # PredictedCell records: type, attributes, verdict

- :mod:`~leukolens.predict.engine`: PyTorch or ONNX Runtime, one export and cache; the stain normaliser setup.
- :mod:`~leukolens.predict.weights`: the shipped weights and their file names.
- :mod:`~leukolens.predict.fields`: :class:`Detector`, the cells of a whole field.
- :mod:`~leukolens.predict.cells`: :class:`CellReader` (also ``Predictor``), type, attributes, atypicality.
- :mod:`~leukolens.predict.describe`: :class:`ImageTextPredictor`, cells in words, embeddings for search.
- :mod:`~leukolens.predict.search`: :class:`GalleryIndex`, finding cells from a description.
- :mod:`~leukolens.predict.generate`: :func:`generate_cells`, a GAN's cells written as a data set.
- :mod:`~leukolens.predict.results`: the typed results; :mod:`~leukolens.predict.output`: them as JSON, and the
  output schema (docs/output-schema.md).
- :mod:`~leukolens.predict.analyze`: ``analyze``, the main job, a sample of fields from image to JSON
  (``from leukolens.predict.analyze import analyze``: the module and the function share the name).

Names are loaded on first use, so ``import leukolens.predict`` stays cheap.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "Detector": "fields",
    "FieldDetections": "results",
    "CellReader": "cells",
    "Predictor": "cells",
    "CellPrediction": "results",
    "AttributePrediction": "results",
    "PredictedCell": "results",
    "AnalyzedField": "results",
    "ATYPICAL_VERDICT": "results",
    "ImageTextPredictor": "describe",
    "Description": "describe",
    "GalleryIndex": "search",
    "open_index": "search",
    "gallery_images": "search",
    "generate_cells": "generate",
    "default_checkpoint": "weights",
    "default_detector": "weights",
    "default_clip_checkpoint": "weights",
    "SCHEMA_VERSION": "output",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'leukolens.predict' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"leukolens.predict.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
