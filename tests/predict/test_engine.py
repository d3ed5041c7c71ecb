"""One engine for every network: torch and ONNX Runtime agree, the export is cached once, mistakes are clear."""

import numpy as np
import pytest
import torch
from torch import nn

from leukolens.errors import LeukolensError
from leukolens.predict import weights
from leukolens.predict.engine import Engine, Export, stain_normalizer


class _Doubler(nn.Module):
    def forward(self, x):
        return x * 2, x.sum(dim=(1, 2, 3))


def _export():
    return Export(name="toy", tag="4", example=torch.zeros(1, 3, 4, 4), input_name="x")


def test_torch_engine_returns_the_network_outputs_as_numpy():
    engine = Engine(_Doubler(), _export(), engine="torch", channels_last_input=True)
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    doubled, total = engine(x)
    assert engine.kind == "torch" and np.array_equal(doubled, 2 * x) and total.tolist() == x.sum((1, 2, 3)).tolist()


def test_onnx_engine_exports_once_to_the_cache_and_agrees_with_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    checkpoint = tmp_path / "toy.pt"
    checkpoint.write_bytes(b"weights")
    x = np.random.default_rng(0).normal(size=(3, 3, 4, 4)).astype(np.float32)
    fast = Engine(_Doubler(), _export(), engine="onnx", checkpoint_path=checkpoint, cache_dir=tmp_path / "cache")
    (exported,) = (tmp_path / "cache" / "onnx").glob("*.onnx")
    assert fast.kind == "onnx" and exported.name.startswith("toy-") and exported.name.endswith("-4.onnx")
    stamp = exported.stat().st_mtime_ns
    Engine(_Doubler(), _export(), engine="onnx", checkpoint_path=checkpoint, cache_dir=tmp_path / "cache")
    assert exported.stat().st_mtime_ns == stamp  # the second engine reuses the export
    plain = Engine(_Doubler(), _export(), engine="torch")
    for a, b in zip(fast(x), plain(x)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_auto_without_a_checkpoint_path_runs_torch_and_mistakes_are_clear():
    assert Engine(_Doubler(), _export(), engine="auto").kind == "torch"
    with pytest.raises(LeukolensError, match="unknown engine 'tpu'"):
        Engine(_Doubler(), _export(), engine="tpu")
    with pytest.raises(LeukolensError, match="needs the checkpoint's path"):
        Engine(_Doubler(), _export(), engine="onnx")


def test_stain_normalizer_only_when_the_checkpoint_stores_one():
    assert stain_normalizer(None) is None and stain_normalizer({}) is None
    assert stain_normalizer({"method": "none", "reference": {}}) is None
    reference = {"method": "reinhard", "reference": {"lab_mean": [60.0, 10.0, -5.0], "lab_std": [10.0, 5.0, 5.0]}}
    image = np.full((8, 8, 3), 128, np.uint8)
    assert stain_normalizer(reference)(image).shape == image.shape


def test_shipped_weights_have_one_name_each_and_a_clear_error_when_missing(tmp_path, monkeypatch):
    assert weights.shipped("cells").name == "cellnet-pbc.pt" and weights.shipped("detector").name == "detector-bccd.pt"
    assert weights.resolve("cells", tmp_path / "mine.pt") == tmp_path / "mine.pt"
    monkeypatch.setitem(weights.SHIPPED, "detector", "absent.pt")
    with pytest.raises(LeukolensError, match="no shipped detector at .*absent.pt: train one"):
        weights.resolve("detector", None)
