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


def test_weight_averaging_keeps_the_mean_of_the_last_half_of_the_steps(tiny_data, tmp_path):
    # 7 cells in batches of 4: one step per epoch; 4 planned steps, averaged from the 2nd.
    train_cells(_config(tiny_data, tmp_path, epochs=4, average_weights=0.5), log=lambda _: None)
    last = load_checkpoint(tmp_path / "last.pt")
    average = last.extra["average"]
    assert (average["start"], average["steps"], average["averaged"]) == (2, 4, 3)
    last = last.state_dict
    kept = average["state_dict"]
    trained = [k for k in kept if k.startswith("class_head") and kept[k].dtype.is_floating_point]
    assert trained and any(not kept[k].equal(last[k]) for k in trained)  # the average is not the last step


def test_holding_a_class_out(tiny_data, tmp_path):
    best = train_cells(_config(tiny_data, tmp_path, exclude=("Erythroblast",)), log=lambda _: None)
    assert "Erythroblast" not in load_checkpoint(best).config.classes


def test_time_budget_sets_the_last_epoch():
    config = TrainCellsConfig(data="x", epochs=12, max_minutes=28)
    assert _last_epoch_within_budget(config, [{"minutes": 5.0}, {"minutes": 8.0}], 1) == 2 + 5  # 20 min left, 4/epoch
    assert _last_epoch_within_budget(TrainCellsConfig(data="x", epochs=12), [{"minutes": 5.0}], 0) == 12
    assert _last_epoch_within_budget(config, [{"minutes": 27.9}], 0) == 1


def test_self_training_learns_from_unlabelled_white_cells_of_another_microscope(tiny_data, tmp_path):
    from leukolens.data.domains import white_cells
    from leukolens.io.common import LeukolensError

    bccd = str(sample_path("bccd"))
    assert len(white_cells(bccd)) == 7 and white_cells(bccd, sources=("elsewhere",)) == []
    logs = []
    # A threshold of 0 keeps every teacher type: the loop is what is checked here, not what it learns.
    train_cells(_config(tiny_data, tmp_path, unlabelled_data=(bccd,), pseudo_threshold=0.0), log=logs.append)
    history = load_checkpoint(tmp_path / "last.pt").extra["history"]
    assert "self-training on 7 unlabelled white cells" in logs
    assert history[0]["pseudo_share"] == 1.0 and history[0]["pseudo"] > 0
    with pytest.raises(LeukolensError, match="no white cells in sources elsewhere"):
        train_cells(_config(tiny_data, tmp_path / "none", unlabelled_data=(bccd,), unlabelled_sources=("elsewhere",)),
                    log=logs.append)


def test_pseudo_labels_are_the_teacher_s_confident_types_on_the_strong_view():
    import torch

    from leukolens.models.cellnet import CellNet, CellNetConfig
    from leukolens.train.unlabelled import UnlabelledBatch, pseudo_label_loss

    torch.manual_seed(0)
    model = CellNet(CellNetConfig(("a", "b")), pretrained=False).eval()
    teacher = copy.deepcopy(model)
    with torch.no_grad():
        teacher.class_head[-1].bias.copy_(torch.tensor([10.0, -10.0]))  # sure of "a" for every cell
        teacher.class_head[-1].weight.zero_()
    batch = UnlabelledBatch(torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32))
    sure = pseudo_label_loss(model, teacher, batch, threshold=0.9)
    logits = model(batch.strong).class_logits
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    assert sure["pseudo_share"] == 1.0 and torch.allclose(sure["pseudo"], expected, atol=1e-5)
    with torch.no_grad():
        teacher.class_head[-1].bias.zero_()  # 50:50: nothing confident enough
    unsure = pseudo_label_loss(model, teacher, batch, threshold=0.9)
    assert unsure["pseudo_share"] == 0.0 and unsure["pseudo"] == 0.0
