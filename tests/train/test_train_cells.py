"""The training loop end to end on a tiny data set: checkpoints, resume, early stop, the atypicality fit."""

import copy

import pytest

from leukolens.cli.demo import sample_path
from leukolens.io import read_dataset, write_dataset
from leukolens.models.checkpoint import load_checkpoint
from leukolens.train.cells import TrainCellsConfig, _last_epoch_within_budget, fit_atypicality, train_cells


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """The seven bundled PBC cells, each in train and val (a loop test, not a learning test)."""
    dataset = read_dataset(sample_path("pbc"))
    val = copy.deepcopy(dataset)
    for f in dataset.fields:
        f.split = "train"
    for f in val.fields:
        f.split = "val"
    dataset.fields += val.fields  # the same images twice: COCO keeps both entries by id
    out = tmp_path_factory.mktemp("tiny") / "cells.json"
    write_dataset(dataset, out, format="coco")
    return out


def _config(data, out, **changes):
    values = dict(data=str(data), out=str(out), input_size=64, epochs=1, batch_size=4, patience=5,
                  cache_dir=str(out / "cache"), freeze_blocks=2)
    values.update(changes)
    return TrainCellsConfig(**values)


def test_train_resume_and_fit_atypicality(tiny_data, tmp_path):
    logs = []
    best = train_cells(_config(tiny_data, tmp_path), log=logs.append)
    assert best.is_file() and (tmp_path / "last.pt").is_file()
    checkpoint = load_checkpoint(best)
    assert checkpoint.crop.mode == "image" and checkpoint.crop.input_size == 64
    assert checkpoint.schema == "wbcatt" and len(checkpoint.config.attributes) == 11
    assert 0 <= checkpoint.metrics["val"]["class"]["accuracy"] <= 1
    assert any("epoch 1/1" in line for line in logs)
    # Resume: one more epoch continues the history rather than starting again.
    train_cells(_config(tiny_data, tmp_path, epochs=2), resume=True, log=logs.append)
    last = load_checkpoint(tmp_path / "last.pt")
    assert [h["epoch"] for h in last.extra["history"]] == [1, 2]
    assert any("resuming after epoch 1" in line for line in logs)
    scorer = fit_atypicality(best, _config(tiny_data, tmp_path), log=logs.append)
    assert scorer["method"] == "knn" and load_checkpoint(best).atypicality is not None


def test_holding_a_class_out(tiny_data, tmp_path):
    best = train_cells(_config(tiny_data, tmp_path, exclude=("Erythroblast",)), log=lambda _: None)
    assert "Erythroblast" not in load_checkpoint(best).config.classes


def test_time_budget_sets_the_last_epoch():
    config = TrainCellsConfig(data="x", epochs=12, max_minutes=28)
    assert _last_epoch_within_budget(config, [{"minutes": 5.0}, {"minutes": 8.0}], 1) == 2 + 5  # 20 min left, 4/epoch
    assert _last_epoch_within_budget(TrainCellsConfig(data="x", epochs=12), [{"minutes": 5.0}], 0) == 12
    assert _last_epoch_within_budget(config, [{"minutes": 27.9}], 0) == 1
