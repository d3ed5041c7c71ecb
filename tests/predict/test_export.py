"""``leukolens export onnx``: the exported file agrees with torch on the bundled demo fields and cells, and its
metadata alone is enough to prepare an input and read the outputs."""

import numpy as np
import pytest
import torch
from PIL import Image

from leukolens.cli import main
from leukolens.demo import sample_path
from leukolens.errors import LeukolensError
from leukolens.models.checkpoint import save_checkpoint
from leukolens.models.detector import CenterNet, DetectorConfig, checkpoint_from_model, decode
from leukolens.predict import weights
from leukolens.predict.cells import CellReader
from leukolens.predict.engine import onnx_session
from leukolens.predict.export import export_onnx_file, read_onnx_metadata
from leukolens.predict.fields import Detector
from leukolens.records import BLOOD_CELLS
from tests.conftest import tiny_cell_checkpoint

pytest.importorskip("onnxruntime")

# torch and ONNX Runtime pick different float32 kernels: raw outputs of a trained network (embeddings up to about 5)
# differ by up to about 2e-4, probabilities by less than 1e-5
TOLERANCE = 1e-3
PROBABILITY_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiny_cells(tmp_path_factory):
    return save_checkpoint(tiny_cell_checkpoint(), tmp_path_factory.mktemp("cells") / "tiny-cells.pt")


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    """An untrained 128 px detector with random heads: peaks all over a field, so every output is compared."""
    torch.manual_seed(0)
    model = CenterNet(DetectorConfig(BLOOD_CELLS.names, neck_channels=16), pretrained=False).eval()
    checkpoint = checkpoint_from_model(model, input_size=128, score_threshold=0.4)
    return save_checkpoint(checkpoint, tmp_path_factory.mktemp("detector") / "tiny-detector.pt")


def _cells():
    return [Image.open(p).convert("RGB") for p in sorted((sample_path("pbc") / "test" / "images").glob("*.jpg"))]


def _fields():
    return [Image.open(p).convert("RGB") for p in sorted((sample_path("bccd") / "BCCD" / "JPEGImages").glob("*.jpg"))]


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _cell_parity(checkpoint, out):
    """The exported cell model run from its metadata alone (mean, std, input size, class and attribute names) on
    the seven demo cells, against the torch reader: the same class and attribute probabilities."""
    exported = export_onnx_file(out, checkpoint=checkpoint)
    meta = read_onnx_metadata(out)
    reader = CellReader.from_checkpoint(checkpoint, engine="torch", views=1)  # the graph reads one view
    crops = np.stack([reader.crop(image) for image in _cells()])  # [7, size, size, 3] uint8
    size = meta["preprocess"]["input_size"]
    assert crops.shape[1:3] == (size, size) and meta["input"]["shape"] == ["batch", 3, size, size]
    mean, std = (np.array(meta["preprocess"][k], np.float32).reshape(1, 3, 1, 1) for k in ("mean", "std"))
    images = ((crops.transpose(0, 3, 1, 2) / 255 - mean) / std).astype(np.float32)
    session = onnx_session(out, threads=1)
    names = [o["name"] for o in meta["outputs"]]
    found = dict(zip(names, session.run(None, {meta["input"]["name"]: images})))
    expected = reader.predict_crops(crops)
    for cell, logits in zip(expected, found["class_logits"]):
        probabilities = _softmax(logits[None])[0]
        assert meta["classes"][int(probabilities.argmax())] == cell.label
        assert probabilities.max() == pytest.approx(cell.probability, abs=PROBABILITY_TOLERANCE)
    for name, values in meta["attributes"].items():
        probabilities = _softmax(found[f"attribute_logits.{name}"])
        for cell, row in zip(expected, probabilities):
            assert values[int(row.argmax())] == cell.attributes[name].value
            assert row.max() == pytest.approx(cell.attributes[name].probability, abs=PROBABILITY_TOLERANCE)
    torch_outputs = reader.engine.network(torch.from_numpy(images))
    for name, value in zip(names, torch_outputs):
        np.testing.assert_allclose(found[name], value.detach().numpy(), atol=TOLERANCE, rtol=0)
    assert exported.max_abs_diff < TOLERANCE
    return exported, meta


def _detector_parity(checkpoint, out, *, compare_boxes: bool):
    """The exported detector on the six demo fields letterboxed as its metadata says, against the torch network:
    the same outputs, and (for trained weights, whose peaks are clear) the same cells at the counting threshold."""
    exported = export_onnx_file(out, checkpoint=checkpoint)
    meta = read_onnx_metadata(out)
    detector = Detector.from_checkpoint(checkpoint, engine="torch")
    assert meta["preprocess"]["input_size"] == detector.checkpoint.input_size
    assert meta["input"]["pad_colour"] == [124, 116, 104] and meta["classes"] == list(detector.classes)
    canvases = np.stack([detector.preprocess(image)[0] for image in _fields()])  # [6, h, w, 3] uint8, one shape
    assert canvases.shape[1] % meta["input"]["multiple"] == 0 and canvases.shape[2] % meta["input"]["multiple"] == 0
    session = onnx_session(out, threads=1)
    found = session.run(None, {meta["input"]["name"]: canvases})
    expected = detector.engine(canvases)
    assert [o["name"] for o in meta["outputs"]] == ["peaks", "size", "offset"]
    for a, b in zip(found, expected):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=TOLERANCE, rtol=0)
    if compare_boxes:
        post = meta["postprocess"]
        ours = decode(*found, stride=post["stride"], threshold=post["score_threshold"])
        theirs = decode(*expected, stride=post["stride"], threshold=post["score_threshold"])
        for a, b in zip(ours, theirs):
            assert len(a) == len(b) and np.array_equal(a.labels, b.labels)
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
    assert exported.max_abs_diff < TOLERANCE
    return exported, meta


def test_tiny_cell_model_exports_with_its_preprocessing_and_agrees_on_the_demo_cells(tiny_cells, tmp_path):
    exported, meta = _cell_parity(tiny_cells, tmp_path / "cells.onnx")
    assert exported.kind == meta["kind"] == "cells"
    assert exported.input.describe() == "images float32 [batch, 3, 64, 64]"
    assert [o.name for o in exported.outputs][:3] == ["class_logits", "embedding", "attribute_features"]
    assert exported.outputs[0].shape == ("batch", 7) and exported.outputs[1].shape == ("batch", 1280)
    assert meta["preprocess"]["crop"]["mode"] == "image" and meta["preprocess"]["stain"] is None
    assert meta["source"]["checkpoint"] == "tiny-cells.pt" and len(meta["source"]["sha256"]) == 64


def test_tiny_detector_exports_for_any_field_size_and_agrees_on_the_demo_fields(tiny_detector, tmp_path):
    exported, meta = _detector_parity(tiny_detector, tmp_path / "detector.onnx", compare_boxes=False)
    assert exported.input.describe() == "canvases uint8 [batch, height, width, 3]"
    assert exported.outputs[0].shape == ("batch", 3, "height/8", "width/8")
    assert meta["postprocess"]["stride"] == 8 and meta["postprocess"]["score_threshold"] == 0.4
    # the graph takes another field size than the one it was traced at
    session = onnx_session(exported.path, threads=1)
    (peaks, *_) = session.run(None, {"canvases": np.full((2, 96, 160, 3), 128, np.uint8)})
    assert peaks.shape == (2, 3, 12, 20)


@pytest.mark.parametrize("kind", ["cells", "detector"])
def test_shipped_weights_export_and_agree_on_the_demo_images(kind, tmp_path):
    path = weights.shipped(kind)
    if not path.is_file():
        pytest.skip(f"no shipped {kind} weights at {path}")
    if kind == "cells":
        _cell_parity(path, tmp_path / "cells.onnx")
    else:
        _detector_parity(path, tmp_path / "detector.onnx", compare_boxes=True)


def test_cli_names_the_input_and_outputs_and_refuses_what_it_cannot_export(tiny_cells, tiny_detector, tmp_path,
                                                                           capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", "onnx", "--checkpoint", str(tiny_cells), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (cell model" in printed and "input:   images float32 [batch, 3, 64, 64]" in printed
    assert "class_logits float32 [batch, 7]" in printed and "attribute_logits.cell_size float32 [batch, 2]" in printed
    assert main(["export", "onnx", "--checkpoint", str(tiny_detector), "--model", "cells", "--out", str(out)]) == 2
    assert "is a detector checkpoint, not a cell model" in capsys.readouterr().err
    assert main(["export", "onnx", "--out", str(out)]) == 2
    assert "--checkpoint C, or --model cells|detector" in capsys.readouterr().err
    assert main(["export", "onnx", "--checkpoint", str(tmp_path / "absent.pt"), "--out", str(out)]) == 2
    assert "absent.pt: checkpoint not found" in capsys.readouterr().err
    with pytest.raises(LeukolensError, match="cannot export 'clip'"):
        export_onnx_file(out, kind="clip")
    assert read_onnx_metadata(out)["kind"] == "cells"  # the failed exports left the written file alone


def test_metadata_of_a_file_that_is_not_onnx_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(LeukolensError, match="bad.onnx: not a readable ONNX file"):
        read_onnx_metadata(bad)
