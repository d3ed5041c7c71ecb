"""Running a cell model fast on a CPU: plain PyTorch, or ONNX Runtime when it is installed.

ONNX Runtime runs EfficientNet-Lite0 about twice as fast as eager PyTorch on two cores (measured in
docs/benchmarks.md). The model is exported once per checkpoint into a cache folder; both engines return the same
named numpy arrays.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from leukolens.models.cellnet import CellNet

ENGINES = ("auto", "torch", "onnx")


class _Flat(nn.Module):
    """CellNet with tuple outputs, which ONNX export needs."""

    def __init__(self, model: CellNet):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        out = self.model(images)
        heads = torch.cat(list(out.attribute_features.values()), 1) if out.attribute_features else out.embedding[:, :0]
        return (out.class_logits, out.embedding, heads, *out.attribute_logits.values())


class TorchRunner:
    engine = "torch"

    def __init__(self, model: CellNet):
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.names = tuple(model.attribute_heads)

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = _Flat(self.model)(torch.from_numpy(images).contiguous(memory_format=torch.channels_last))
        return _named([o.numpy() for o in outputs], self.names)


class OnnxRunner:
    engine = "onnx"

    def __init__(self, model: CellNet, path: Path, input_size: int, threads: int | None = None):
        self.names = tuple(model.attribute_heads)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            example = torch.zeros(1, 3, input_size, input_size)
            torch.onnx.export(
                _Flat(model.eval()),
                example,
                tmp,
                input_names=["images"],
                dynamic_axes={"images": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
            tmp.replace(path)
        self.session = onnx_session(path, threads=threads)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return _named(self.session.run(None, {"images": images.astype(np.float32)}), self.names)


def onnx_session(path: Path, *, threads: int | None = None):
    """An ONNX Runtime CPU session for the model at ``path``, quiet, on ``threads`` (default: every core)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or (os.cpu_count() or 1)
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _named(outputs: list[np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    class_logits, embedding, heads, *attributes = outputs
    return {
        "class_logits": class_logits,
        "embedding": embedding,
        "heads": heads,
        **{f"attribute/{n}": a for n, a in zip(names, attributes)},
    }


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def make_runner(
    model: CellNet,
    *,
    engine: str,
    input_size: int,
    checkpoint_path: Path | None,
    cache_dir: Path | None = None,
    threads: int | None = None,
):
    """A runner for ``model``: ONNX Runtime for ``onnx`` (and for ``auto`` when installed), else PyTorch."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: use one of {ENGINES}")
    if engine == "torch" or (engine == "auto" and (not onnx_available() or checkpoint_path is None)):
        return TorchRunner(model)
    if checkpoint_path is None:
        raise ValueError("the onnx engine needs the checkpoint's path (to cache the exported model)")
    digest = hashlib.sha1(Path(checkpoint_path).read_bytes()).hexdigest()[:16]
    cache = Path(cache_dir or os.environ.get("LEUKOLENS_CACHE", Path.home() / ".cache" / "leukolens"))
    return OnnxRunner(model, cache / "onnx" / f"cellnet-{digest}-{input_size}.onnx", input_size, threads)
