"""Prediction from a checkpoint, as a user calls it: Python one-liner and `leukolens predict cells`."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from leukolens.cli import main
from leukolens.data.cells import CropConfig
from leukolens.data.stain import reinhard_fit
from leukolens.demo import sample_path
from leukolens.io.common import LeukolensError
from leukolens.models.atypicality import fit_scorer
from leukolens.models.cellnet import AttributeSpec, CellNet, CellNetConfig
from leukolens.models.checkpoint import from_model, save_checkpoint
from leukolens.predict import Predictor, default_checkpoint
from leukolens.records import PBC_CLASSES, WBCATT_SCHEMA

HEADS = tuple(AttributeSpec(a.name, a.values) for a in WBCATT_SCHEMA)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """An untrained model at 64 px with a fitted atypicality scorer: fast, and exercises every code path."""
    torch.manual_seed(0)
    model = CellNet(CellNetConfig(PBC_CLASSES.names, HEADS), pretrained=False).eval()
    rng = np.random.default_rng(0)
    scorer = fit_scorer(rng.normal(size=(50, 1280)), rng.integers(0, 7, 50), components=8)
    scorer.threshold = 0.5
    checkpoint = from_model(
        model, CropConfig(input_size=64, mode="image"), schema="wbcatt", atypicality=scorer.as_dict()
    )
    return save_checkpoint(checkpoint, tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def _pbc_images():
    return sorted((sample_path("pbc") / "test" / "images").glob("*.jpg"))


def test_predictor_gives_class_attributes_and_atypicality(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    predictions = predictor.predict_files(_pbc_images())
    assert len(predictions) == 7
    first = predictions[0]
    assert first.label in PBC_CLASSES.names and 0 < first.probability <= 1
    assert sum(first.probabilities.values()) == pytest.approx(1, abs=1e-4)
    assert set(first.attributes) == set(WBCATT_SCHEMA.names)
    assert first.attributes["granule_type"].value in WBCATT_SCHEMA["granule_type"].values
    assert first.atypicality is not None and first.atypical == (first.atypicality > 0.5)
    assert first.as_dict()["verdict"] in ("typical", "atypical, review")


def test_boxes_in_a_field_and_grayscale_images(tiny_checkpoint, tmp_path):
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    field = Image.open(sample_path("bccd") / "BCCD" / "JPEGImages" / "BloodImage_00007.jpg")
    predictions = predictor.predict(field, boxes=[(100, 100, 200, 200), (0, 0, 50, 50)])
    assert len(predictions) == 2
    gray = tmp_path / "gray.png"
    Image.open(_pbc_images()[0]).convert("L").save(gray)
    assert predictor.predict_files([gray])[0].label in PBC_CLASSES.names


def test_unreadable_images_get_a_clear_error(tiny_checkpoint, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(LeukolensError, match="broken.jpg: cannot read image"):
        Predictor.from_checkpoint(tiny_checkpoint).predict_files([broken])


def test_predict_cells_command_prints_json_with_atypicality(tiny_checkpoint, capsys):
    folder = sample_path("pbc") / "test" / "images"
    assert main(["predict", "cells", str(folder), "--checkpoint", str(tiny_checkpoint), "--json", "-"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload) == 7
    assert {"label", "probability", "attributes", "atypicality", "verdict"} <= set(payload[0])


def test_predict_cells_command_errors(tiny_checkpoint, tmp_path, capsys):
    assert main(["predict", "cells", str(tmp_path / "nothing"), "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["predict", "cells", str(_pbc_images()[0]), "--checkpoint", str(tmp_path / "x.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.skipif(not default_checkpoint().is_file(), reason="no shipped cell model in this checkout")
def test_shipped_model_names_the_bundled_cells():
    predictions = Predictor.from_checkpoint().predict_files(_pbc_images())
    truth = [p.name.split("_")[0] for p in _pbc_images()]
    names = {
        "BA": "Basophil",
        "BNE": "Neutrophil",
        "EO": "Eosinophil",
        "ERB": "Erythroblast",
        "IG": "Immature granulocyte",
        "LY": "Lymphocyte",
        "MO": "Monocyte",
    }
    assert [p.label for p in predictions] == [names[t] for t in truth]


def test_onnx_and_torch_engines_agree(tiny_checkpoint):
    pytest.importorskip("onnxruntime")
    crops = np.stack([np.asarray(Image.open(p).convert("RGB").resize((64, 64))) for p in _pbc_images()])
    fast = Predictor.from_checkpoint(tiny_checkpoint, engine="onnx").predict_crops(crops)
    plain = Predictor.from_checkpoint(tiny_checkpoint, engine="torch").predict_crops(crops)
    for a, b in zip(fast, plain):
        assert a.label == b.label
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-4)
        assert a.atypicality == pytest.approx(b.atypicality, abs=1e-3)


def test_a_bad_file_does_not_stop_the_batch(tiny_checkpoint, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (5, 7), (200, 100, 150)).save(tiny)  # far smaller than a cell crop: still predicted
    code = main(["predict", "cells", str(_pbc_images()[0]), str(broken), str(tiny), "--checkpoint",
                 str(tiny_checkpoint)])
    captured = capsys.readouterr()
    assert code == 1
    assert "skipped" in captured.err and "broken.jpg: cannot read image" in captured.err
    assert captured.out.count(": ") >= 2 and "tiny.png" in captured.out


def test_match_stain_brings_a_recoloured_cell_back_to_the_training_colours(tmp_path):
    """A PBC cell tinted as if from another stain: with ``match_stain`` the model sees colours close to the
    training cells' statistics again (Reinhard: the mean of each Lab channel)."""
    path = next(p for p in _pbc_images() if p.name.startswith("LY"))
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    tinted = np.clip(image * np.array([0.75, 0.95, 1.2]) + np.array([0, 10, -20]), 0, 255).astype(np.uint8)
    tinted_path = tmp_path / "tinted.png"
    Image.fromarray(tinted).save(tinted_path)
    plain = Predictor.from_checkpoint()
    matched = Predictor.from_checkpoint(match_stain=True)
    before = reinhard_fit(plain.crop(Image.open(tinted_path)))
    after = reinhard_fit(matched.crop(Image.open(tinted_path)))
    training = np.asarray(plain.checkpoint.training_stain["reference"]["lab_mean"])
    # The Lab means of the tinted crop move to the training cells' once matched.
    assert np.abs(np.asarray(after.lab_mean) - training).sum() < 0.2 * np.abs(
        np.asarray(before.lab_mean) - training
    ).sum()
    # The shipped model learnt other stains and cameras: it names the tinted cell without any matching.
    assert plain.predict_files([tinted_path])[0].label == "Lymphocyte"


def test_match_stain_needs_training_colour_statistics(tiny_checkpoint):
    with pytest.raises(LeukolensError, match="training colour statistics"):
        Predictor.from_checkpoint(tiny_checkpoint, match_stain=True)


def test_views_average_the_turned_crops_and_keep_the_upright_embedding(tiny_checkpoint):
    crops = np.stack([np.asarray(Image.open(p).convert("RGB").resize((64, 64))) for p in _pbc_images()])
    one = Predictor.from_checkpoint(tiny_checkpoint, engine="torch", views=1)
    four = Predictor.from_checkpoint(tiny_checkpoint, engine="torch", views=4)
    turned = [one._outputs(np.ascontiguousarray(np.rot90(crops, k, axes=(1, 2))))[0] for k in range(4)]
    probabilities, attributes, embedding, _ = four._outputs(crops)
    assert probabilities == pytest.approx(np.mean(turned, 0), abs=1e-5)
    assert not np.allclose(turned[0], turned[1], atol=1e-4)  # an untrained network does see the turn
    assert embedding == pytest.approx(one._outputs(crops)[2], abs=1e-5)  # what the scorers were fitted on
    assert all(a.sum(1) == pytest.approx(1, abs=1e-4) for a in attributes.values())
    # Each cell is averaged over its own views, whatever the batch size.
    small = Predictor.from_checkpoint(tiny_checkpoint, engine="torch", views=4, batch_size=3).predict_crops(crops)
    assert [p.probabilities for p in small] == [pytest.approx(p.probabilities, abs=1e-5) for p in
                                                four.predict_crops(crops)]
    with pytest.raises(LeukolensError, match="views"):
        Predictor.from_checkpoint(tiny_checkpoint, views=9)


def test_eval_cells_reads_the_views_it_is_told(tiny_checkpoint, tmp_path):
    reports = {}
    for views in (1, 4):
        out = tmp_path / f"eval-{views}.json"
        assert main(["eval", "cells", "--checkpoint", str(tiny_checkpoint), "--data", str(sample_path("pbc")),
                     "--no-agreement", "--views", str(views), "--json", str(out)]) == 0
        reports[views] = json.loads(out.read_text())
    assert reports[1]["views"] == 1 and reports[4]["views"] == 4 and reports[1]["cells"] == reports[4]["cells"] == 7
    # The same cells read in four turns: the probabilities differ, so the calibration error does.
    assert reports[1]["class"]["ece"] != reports[4]["class"]["ece"]
