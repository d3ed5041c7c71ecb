"""Fitting a checkpoint's blast scorer from image folders (``leukolens train blast``): the network is left as it was,
the scorer is written beside it, and bad example folders are refused clearly. No network is trained here."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from leukolens.cli import main
from leukolens.data.cells import CropConfig
from leukolens.demo import sample_path
from leukolens.models.blast import BlastFitConfig, BlastScorer
from leukolens.models.cellnet import AttributeSpec, CellNet, CellNetConfig
from leukolens.models.checkpoint import from_model, load_checkpoint, save_checkpoint
from leukolens.predict.cells import CellReader
from leukolens.records import PBC_CLASSES, WBCATT_SCHEMA
from leukolens.train.blast import TrainBlastConfig, fit_blast

HEADS = tuple(AttributeSpec(a.name, a.values) for a in WBCATT_SCHEMA)


@pytest.fixture
def setup(tmp_path):
    """An untrained 64 px model, a tiny PBC-like data set (the bundled cells as train and val) and blast examples."""
    torch.manual_seed(0)
    model = CellNet(CellNetConfig(PBC_CLASSES.names, HEADS), pretrained=False).eval()
    checkpoint = save_checkpoint(from_model(model, CropConfig(input_size=64)), tmp_path / "cells.pt")
    source = sample_path("pbc")
    data = tmp_path / "pbc"
    for split in ("train", "val"):
        shutil.copytree(source / "test", data / split)
    shutil.copy(source / "classes.txt", data / "classes.txt")
    examples = tmp_path / "blasts"
    examples.mkdir()
    for i, path in enumerate(sorted((source / "test" / "images").glob("*.jpg"))[:3]):
        Image.open(path).rotate(90).save(examples / f"blast-{i}.png")
    (examples / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return checkpoint, data, examples


def test_fit_writes_the_scorer_beside_an_unchanged_network(setup, tmp_path):
    checkpoint, data, examples = setup
    out = tmp_path / "with-blast.pt"
    config = TrainBlastConfig(checkpoint=str(checkpoint), examples=(str(examples),), data=str(data), out=str(out),
                              bank_size=4, negatives_size=3, fit=BlastFitConfig(k_normals=2))
    report = fit_blast(config, log=lambda _: None)
    assert report.path == out and [p for p, _ in report.skipped] == [str(examples / "broken.jpg")]
    fitted = load_checkpoint(out)
    before = load_checkpoint(checkpoint)
    assert before.blast is None and all(torch.equal(fitted.state_dict[k], v) for k, v in before.state_dict.items())
    scorer = BlastScorer.from_dict(fitted.blast)
    assert scorer.fitted["examples"] == 3 and scorer.fitted["normals"] == 4 and scorer.fitted["negatives"] == [3]
    assert scorer.fitted["validation"] == 7 and scorer.scores == ("morphology", "prototype")  # no atypicality here
    assert (scorer.weights >= 0).all() and "threshold" in report.summary()
    rates = scorer.call_rates  # measured on the 3 readable examples (left out) and the 7 validation cells
    assert (rates.blasts, rates.normals) == (3, 7) and rates.normals_called <= 1
    assert f"({rates.blasts_called}/3 examples)" in report.summary() and "false-positive rate (FPR)" in report.summary()
    # The stored example embeddings are what the reader computes for the same files.
    reader = CellReader(fitted, engine="torch")
    crops = np.stack([reader.crop(reader._open(examples / f"blast-{i}.png")) for i in range(3)])
    embeddings = reader._outputs(crops)[2]
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    assert np.allclose(scorer.examples, unit, atol=2e-3)
    predictions = reader.predict_files(sorted((data / "val" / "images").glob("*.jpg")))
    assert sum(p.blast_suspected for p in predictions) <= 1  # the threshold: at most 5% of these 7 (rounding up)


def test_train_blast_command_and_its_errors(setup, tmp_path, capsys):
    checkpoint, data, examples = setup
    code = main(["train", "blast", "--checkpoint", str(checkpoint), "--examples", str(tmp_path / "none"),
                 "--data", str(data)])
    captured = capsys.readouterr()
    assert code == 2 and "blast examples" in captured.err and "no such folder" in captured.err
    assert "Traceback" not in captured.err
    out = tmp_path / "out.pt"
    code = main(["train", "blast", "--checkpoint", str(checkpoint), "--examples", str(examples), "--data", str(data),
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0 and "skipped blast example" in captured.err and f"blast scorer: {out}" in captured.out
    assert load_checkpoint(out).blast is not None
