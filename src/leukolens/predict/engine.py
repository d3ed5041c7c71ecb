"""The one place a network runs at prediction time: eager PyTorch, or ONNX Runtime when it is installed.

ONNX Runtime runs the cell model and the detector about twice as fast as eager PyTorch on two cores (measured in
docs/benchmarks.md). A network is exported once per checkpoint file into a cache folder
(``$LEUKOLENS_CACHE/onnx``, default ``~/.cache/leukolens/onnx``), named by the checkpoint's SHA-1; the export goes to
a temporary file first, so a crash never leaves half a model there. Both engines take one numpy array and return the
network's outputs as a tuple of numpy arrays, in the order the network returns them.

This module also sets up the stain normaliser a checkpoint prescribes (:func:`stain_normalizer`), so that every
predictor prepares its input the same way.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from leukolens.errors import LeukolensError

ENGINES = ("auto", "torch", "onnx")


@dataclass(frozen=True)
class Export:
    """How to export a network to ONNX, and the name of its cached file.

    Attributes:
        name: the cached file is ``<name>-<checkpoint sha1[:16]>-<tag>.onnx``.
        tag: what else the export depends on (input size, input type).
        example: an input of the right type and rank for tracing.
        input_name: the ONNX graph's input name.
        output_names: the graph's output names (``None``: ONNX's defaults).
        dynamic_axes: the input's axes that may vary, ``{axis: name}``.
    """

    name: str
    tag: str
    example: torch.Tensor
    input_name: str
    output_names: tuple[str, ...] | None = None
    dynamic_axes: dict[int, str] = field(default_factory=lambda: {0: "batch"})


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def onnx_session(path: Path, *, threads: int | None = None):
    """An ONNX Runtime CPU session for the model at ``path``, quiet, on ``threads`` (default: every core)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or (os.cpu_count() or 1)
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def cache_folder(cache_dir: str | Path | None = None) -> Path:
    """Where exported models are kept: ``cache_dir``, else ``$LEUKOLENS_CACHE``, else ``~/.cache/leukolens``."""
    return Path(cache_dir or os.environ.get("LEUKOLENS_CACHE", Path.home() / ".cache" / "leukolens"))


def export_onnx(network: nn.Module, export: Export, path: Path) -> Path:
    """Export ``network`` to ``path`` unless it is already there (through a temporary file of this process)."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.onnx.export(
            network,
            export.example,
            tmp,
            input_names=[export.input_name],
            output_names=list(export.output_names) if export.output_names else None,
            dynamic_axes={export.input_name: export.dynamic_axes},
            opset_version=17,
            dynamo=False,
        )
        tmp.replace(path)
    return path


class Engine:
    """A network ready to run on numpy arrays, on PyTorch or ONNX Runtime."""

    def __init__(
        self,
        network: nn.Module,
        export: Export,
        *,
        engine: str = "auto",
        checkpoint_path: Path | None = None,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        channels_last_input: bool = False,
    ):
        """Args:
        network: the model in eval mode, returning a tuple of tensors.
        export: how to export it (used by the ``onnx`` engine only).
        engine: ``torch``, ``onnx``, or ``auto`` (``onnx`` when ONNX Runtime is installed and the checkpoint's
            path is known, so that the export can be cached).
        checkpoint_path: the checkpoint file the network came from (names the cached export).
        channels_last_input: lay a 4-d input out channels-last before the torch network (an NCHW float input).

        Raises:
            LeukolensError: an unknown engine, or ``onnx`` without the checkpoint's path.
        """
        if engine not in ENGINES:
            raise LeukolensError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
        use_onnx = engine == "onnx" or (engine == "auto" and onnx_available() and checkpoint_path is not None)
        if use_onnx and checkpoint_path is None:
            raise LeukolensError("the onnx engine needs the checkpoint's path (to cache the exported model)")
        self.kind = "onnx" if use_onnx else "torch"
        self.export = export
        if use_onnx:
            digest = hashlib.sha1(Path(checkpoint_path).read_bytes()).hexdigest()[:16]
            path = cache_folder(cache_dir) / "onnx" / f"{export.name}-{digest}-{export.tag}.onnx"
            self.session = onnx_session(export_onnx(network.eval(), export, path), threads=threads)
            self._dtype = export.example.numpy().dtype
        else:
            self.network = network.eval().to(memory_format=torch.channels_last)
            self.channels_last_input = channels_last_input

    def __call__(self, inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        if self.kind == "onnx":
            return tuple(self.session.run(None, {self.export.input_name: inputs.astype(self._dtype, copy=False)}))
        return self._torch(inputs)

    @torch.inference_mode()
    def _torch(self, inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        tensor = torch.from_numpy(inputs)
        if self.channels_last_input:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tuple(o.numpy() for o in self.network(tensor))


def stain_normalizer(stored: dict | None) -> Callable[[np.ndarray], np.ndarray] | None:
    """The stain normaliser a checkpoint stores (``{"method": ..., "reference": ...}``), or ``None`` when it stores
    none or method ``none``: the one setup every predictor uses."""
    from leukolens.models.preprocess import StainReference

    reference = StainReference.from_dict(stored or {})
    return reference.normalizer() if reference is not None else None
