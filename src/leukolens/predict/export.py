"""A cell model or a detector as one self-contained ONNX file (``leukolens export onnx``).

    >>> from leukolens.predict.export import export_onnx_file, read_onnx_metadata
    >>> exported = export_onnx_file("cells.onnx", kind="cells")           # the shipped cell model
    >>> exported.input, exported.outputs, exported.max_abs_diff
    >>> read_onnx_metadata("cells.onnx")["preprocess"]["mean"]

The graph is the one the ONNX Runtime engine runs, exported the same way (:func:`leukolens.predict.engine.export_onnx`
with the :class:`~leukolens.predict.engine.Export` of :func:`~leukolens.predict.cells.cell_export` or
:func:`~leukolens.predict.fields.detector_export`). The file also carries what using it needs, as ONNX metadata
(``metadata_props``; ONNX Runtime: ``session.get_modelmeta().custom_metadata_map``), one key per part, each value
JSON:

==============  ========================================================================================
key             value
==============  ========================================================================================
kind            ``"cells"`` or ``"detector"``
input           the input's name, dtype, layout, shape (``"batch"``, ``"height"``... where it may vary) and
                how an image becomes it
outputs         each output's name, dtype, shape and meaning, in the graph's order
preprocess      the checkpoint's preprocessing record: input size, mean/std, resize rule, crop rule, stain
                reference (every image normalised to it first, when set), training colour statistics
classes         class names, in the order of the class dimension
attributes      cell model only: attribute name -> value names, in the order of each head's logits
postprocess     what turns outputs into predictions (softmax; the detector's stride, decoding and counting
                threshold)
metrics         what the weights reached on validation (the detector's learnt red-cell size among them)
source          the checkpoint's file name and SHA-256, and the leukolens version that exported it
==============  ========================================================================================

Not in the file: the cell model's atypicality and blast scorers, which run on the embedding outside the network
(``CellReader`` applies them), and the detector's scale estimation from red cells (:mod:`leukolens.predict.scale`).

Every export is checked once: torch and ONNX Runtime run the same input and :attr:`OnnxExport.max_abs_diff` is the
largest difference over all outputs.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from leukolens.data.augment import VIEWS
from leukolens.data.fields import PAD_COLOUR
from leukolens.errors import LeukolensError, atomic_write_bytes
from leukolens.models.checkpoint import CellCheckpoint, load_any_checkpoint
from leukolens.models.detector import DetectorCheckpoint
from leukolens.predict import weights
from leukolens.predict.cells import cell_export
from leukolens.predict.engine import Export, export_onnx, onnx_session
from leukolens.predict.fields import detector_export

__all__ = ["EXPORTABLE", "OnnxExport", "TensorInfo", "export_onnx_file", "max_abs_diff", "read_onnx_metadata"]

EXPORTABLE = ("cells", "detector")
"""The checkpoint kinds ``export onnx`` writes."""


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of an exported graph: a shape entry is a size, or a name where it may vary."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    meaning: str

    def describe(self) -> str:
        """``name dtype [batch, 3, 160, 160]``."""
        return f"{self.name} {self.dtype} [{', '.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class OnnxExport:
    """A written ONNX file and what it holds."""

    path: Path
    kind: str
    checkpoint: Path
    input: TensorInfo
    outputs: tuple[TensorInfo, ...]
    metadata: dict
    max_abs_diff: float  # torch vs ONNX Runtime on a check input, over every output
    size_bytes: int


def export_onnx_file(out: str | Path, *, checkpoint: str | Path | None = None, kind: str | None = None) -> OnnxExport:
    """Write the network of ``checkpoint`` (or the shipped weights of ``kind``) to ``out`` with its metadata.

    Args:
        out: the ONNX file to write (replaced atomically when it exists).
        checkpoint: a cell-model or detector checkpoint; its kind is read from the file.
        kind: ``cells`` or ``detector``: the shipped weights when ``checkpoint`` is None, else what the checkpoint
            must be.

    Raises:
        LeukolensError: neither given, an unknown kind, a missing or unreadable checkpoint, a checkpoint of another
            kind, or an output folder that cannot be written.
    """
    if kind is not None and kind not in EXPORTABLE:
        raise LeukolensError(f"cannot export {kind!r}: use one of {', '.join(EXPORTABLE)}")
    if checkpoint is None and kind is None:
        raise LeukolensError("say what to export: a checkpoint, or which shipped model (cells or detector)")
    path = weights.resolve(kind, None) if checkpoint is None else Path(checkpoint)
    loaded = load_any_checkpoint(path, kinds=EXPORTABLE if kind is None else (kind,))
    if isinstance(loaded, CellCheckpoint):
        network, export, metadata = _cells(loaded)
    else:
        network, export, metadata = _detector(loaded)
    network.eval()
    outputs = _output_infos(network, export, metadata.pop("_outputs"))
    metadata["outputs"] = [asdict(o) for o in outputs]
    metadata["source"] = {"checkpoint": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                          "leukolens_version": _version()}
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="leukolens-onnx-") as folder:
        graph = export_onnx(network, export, Path(folder) / "graph.onnx")
        payload = _with_metadata(graph, metadata, doc=f"leukolens {loaded.kind} exported from {path.name}")
    try:
        atomic_write_bytes(out, payload)
    except OSError as error:
        raise LeukolensError(f"{out}: cannot write ({error.strerror or error})") from None
    check = _check_input(export, loaded)
    diff = max_abs_diff(network, onnx_session(out, threads=1), check, export.input_name)
    info = metadata["input"]
    return OnnxExport(
        path=out, kind=loaded.kind, checkpoint=path,
        input=TensorInfo(info["name"], info["dtype"], tuple(info["shape"]), info["meaning"]),
        outputs=outputs, metadata=metadata, max_abs_diff=diff, size_bytes=out.stat().st_size,
    )


def read_onnx_metadata(path: str | Path) -> dict:
    """The metadata an exported file carries, each value parsed from JSON.

    Raises:
        LeukolensError: not a readable ONNX file.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises several kinds for a file that is not ONNX
        raise LeukolensError(f"{path}: not a readable ONNX file ({type(error).__name__}: {error})") from None
    return {p.key: json.loads(p.value) for p in model.metadata_props}


@torch.inference_mode()
def max_abs_diff(network: nn.Module, session, inputs: np.ndarray, input_name: str) -> float:
    """The largest absolute difference between ``network`` (eager torch) and the ONNX Runtime ``session`` on
    ``inputs``, over every output."""
    expected = network(torch.from_numpy(inputs))
    found = session.run(None, {input_name: inputs})
    return max(float(np.abs(e.numpy() - f).max(initial=0.0)) for e, f in zip(expected, found))


# ------------------------------------------------------------------------------------------------------ per kind
def _cells(checkpoint: CellCheckpoint) -> tuple[nn.Module, Export, dict]:
    size = checkpoint.crop.input_size
    network, export = cell_export(checkpoint.build(), input_size=size)
    config = checkpoint.config
    heads = {a.name: list(a.values) for a in config.attributes}
    return network, export, {
        "kind": "cells",
        "input": {
            "name": export.input_name, "dtype": "float32", "layout": "NCHW", "shape": ["batch", 3, size, size],
            "meaning": "RGB cell crops cut as preprocess.crop says (a square window crop.context times the box's "
                       "longer side, centred on it; a whole single-cell image as it is), resized to input_size, "
                       "stain-normalised first when preprocess.stain is set, scaled to 0..1, then (x - mean) / std",
        },
        "preprocess": checkpoint.preprocess.as_dict(),
        "classes": list(config.classes),
        "attributes": heads,
        "postprocess": {
            "probabilities": "softmax over class_logits and over each attribute_logits.<name>; the calibration "
                             "temperatures are applied inside the graph",
            "views": VIEWS,
            "views_meaning": "the graph reads one crop; leukolens averages the class and attribute probabilities "
                             "over the crop's first `views` flips and quarter turns (view v: v % 4 quarter turns, "
                             "mirrored left-right from v = 4 on) and takes the embedding from the upright crop",
            "not_included": "the atypicality and blast scorers, which run on the embedding outside the network",
        },
        "metrics": checkpoint.metrics,
        "_outputs": [
            ("class_logits", "class logits, one per class in the order of classes"),
            ("embedding", "the pooled backbone features (atypicality, blast score, search)"),
            ("attribute_features", "the attribute heads' pooled features, concatenated"),
            *((f"attribute_logits.{name}", f"logits of attribute {name}, one per value in attributes[{name!r}]")
              for name in heads),
        ],
    }


def _detector(checkpoint: DetectorCheckpoint) -> tuple[nn.Module, Export, dict]:
    network, export = detector_export(checkpoint)
    stride = checkpoint.config.stride
    return network, export, {
        "kind": "detector",
        "input": {
            "name": export.input_name, "dtype": "uint8", "layout": "NHWC", "shape": ["batch", "height", "width", 3],
            "meaning": "RGB fields 0..255 (stain-normalised first when preprocess.stain is set), letterboxed: longer "
                       f"side to preprocess.input_size, padded right and bottom with {list(PAD_COLOUR)} to a "
                       "multiple of 32; scaling and normalisation run inside the graph",
            "multiple": 32,
            "pad_colour": list(PAD_COLOUR),
        },
        "preprocess": checkpoint.preprocess.as_dict(),
        "classes": list(checkpoint.classes),
        "postprocess": {
            "stride": stride,
            "score_threshold": checkpoint.score_threshold,
            "decode": f"a cell is a nonzero peak (class c, row i, column j) above a threshold; its centre is "
                      f"({stride} * (j + offset[0]), {stride} * (i + offset[1])) and its width and height "
                      f"{stride} * size[0] and {stride} * size[1], in canvas pixels (leukolens.models.detector."
                      "decode); detections at or above score_threshold count as cells",
        },
        "metrics": checkpoint.metrics,
        "_outputs": [
            ("peaks", "per-class heatmap probabilities at local maxima (3x3), zero elsewhere"),
            ("size", "box width and height at each output cell, in output cells"),
            ("offset", "the centre's offset within its output cell (x, y)"),
        ],
    }


@torch.inference_mode()
def _output_infos(network: nn.Module, export: Export, meanings: list[tuple[str, str]]) -> tuple[TensorInfo, ...]:
    """Each output's dtype and shape, from running the example: the batch axis named, and the detector's spatial
    axes as the input's height and width over the stride."""
    outputs = network(export.example)
    spatial = dict(export.dynamic_axes)
    infos = []
    for (name, meaning), value in zip(meanings, outputs):
        shape: list[int | str] = list(value.shape)
        shape[0] = spatial.get(0, "batch")
        if value.dim() == 4 and 1 in spatial:  # a map over a field of any size: its size is the input's / stride
            stride = export.example.shape[1] // value.shape[2]
            shape[2], shape[3] = f"{spatial[1]}/{stride}", f"{spatial[2]}/{stride}"
        infos.append(TensorInfo(name, str(value.dtype).removeprefix("torch."), tuple(shape), meaning))
    return tuple(infos)


def _check_input(export: Export, checkpoint) -> np.ndarray:
    """A fixed random input of the export's type for the parity check: a 4:3 field for the detector (the shape of
    a microscope field, not the square example), two crops for the cell model."""
    rng = np.random.default_rng(0)
    if export.example.dtype == torch.uint8:
        size = checkpoint.input_size
        return rng.integers(0, 256, size=(1, -(-size * 3 // 4 // 32) * 32, size, 3), dtype=np.uint8)
    return rng.normal(size=(2, *export.example.shape[1:])).astype(np.float32)


def _with_metadata(graph: Path, metadata: dict, *, doc: str) -> bytes:
    """The exported graph with ``metadata`` as ``metadata_props`` (JSON values) and a producer name."""
    import onnx

    model = onnx.load(str(graph))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value, default=str)
    model.producer_name, model.producer_version, model.doc_string = "leukolens", _version(), doc
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _version() -> str:
    from leukolens import __version__

    return __version__
