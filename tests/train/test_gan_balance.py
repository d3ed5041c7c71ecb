"""The GAN and the rare-class protocol end to end on a tiny folder data set of coloured discs: training with a
reduced class, resume, generate (folders and a WBCAtt CSV that read back), evaluation, and the five arms."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from leukolens.cli import main
from leukolens.data.imbalance import class_sampling_weights, reduce_classes, selection_digest
from leukolens.io import read_dataset
from leukolens.io.common import LeukolensError
from leukolens.models.cellnet import AttributeSpec
from leukolens.models.gan import GanConfig, GanModels
from leukolens.models.gan_checkpoint import GanCheckpoint, load_gan, save_gan
from leukolens.train.balance import (
    ARMS,
    BalanceConfig,
    class_loss_weights,
    epoch_order,
    format_balance,
    generated_counts,
    run_balance,
)
from leukolens.train.gan import TrainGanConfig, train_gan

COLOURS = {"Blue": (60, 70, 200), "Green": (40, 170, 60), "Red": (200, 50, 60)}
COUNTS = {"train": 20, "val": 3, "test": 6}


@pytest.fixture(scope="module")
def discs(tmp_path_factory):
    """root/<split>/<class>/<n>.png: a coloured disc on a pale background, with noise."""
    root = tmp_path_factory.mktemp("discs")
    rng = np.random.default_rng(0)
    for split, count in COUNTS.items():
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = Image.new("RGB", (40, 40), (235, 220, 225))
                r = int(rng.integers(8, 14))
                ImageDraw.Draw(image).ellipse((20 - r, 20 - r, 20 + r, 20 + r), fill=colour)
                noisy = np.asarray(image, np.int16) + rng.integers(-12, 13, (40, 40, 3))
                Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def _gan_config(data, out, **changes):
    values = dict(data=str(data), out=str(out), image_size=32, batch_size=8, steps=3, max_minutes=0,
                  latent_dim=8, condition_dim=8, g_channels=4, d_channels=4, rare=("Red",), keep=0.1,
                  cache_dir=str(out / "cache"), checkpoint_minutes=100)
    values.update(changes)
    return TrainGanConfig(**values)


@pytest.fixture(scope="module")
def gan(discs, tmp_path_factory):
    out = tmp_path_factory.mktemp("gan")
    logs = []
    path = train_gan(_gan_config(discs, out), log=logs.append)
    return path, logs


def test_gan_trains_on_the_reduced_set_and_resumes(discs, gan):
    path, logs = gan
    out = path.parent
    assert path.is_file() and (out / "last.pt").is_file() and (out / "preview.png").is_file()
    record = load_gan(path).train
    # Classes sort as Blue, Green, Red; Red keeps 10% of 20 = 2 cells.
    assert record["class_counts"] == [20, 20, 2] and record["steps"] == 3
    assert any("Red 2" in line for line in logs)
    resumed = []
    train_gan(_gan_config(discs, out, steps=5), resume=True, log=resumed.append)
    assert load_gan(path).train["steps"] == 5
    assert any("resuming after step 3" in line for line in resumed)


def test_a_gan_needs_a_budget(discs, tmp_path):
    with pytest.raises(LeukolensError, match="time budget"):
        train_gan(_gan_config(discs, tmp_path, steps=0, max_minutes=0))


def test_generate_writes_a_folder_per_class_that_reads_back(gan, tmp_path):
    out = tmp_path / "generated"
    assert main(["generate", "--checkpoint", str(gan[0]), "--class", "Green", "Red", "--n", "3",
                 "--out", str(out)]) == 0
    dataset = read_dataset(out)
    labels = sorted(c.label for c in dataset.cells())
    assert labels == ["Green"] * 3 + ["Red"] * 3
    assert main(["generate", "--checkpoint", str(gan[0]), "--class", "Purple", "--out", str(out)]) == 2


def test_generated_attributes_read_back_as_wbcatt(tmp_path):
    from leukolens.records import WBCATT_SCHEMA

    specs = tuple(AttributeSpec(a.name, a.values) for a in WBCATT_SCHEMA)
    config = GanConfig(("Basophil", "Erythroblast"), specs, image_size=32, latent_dim=8, condition_dim=8,
                       g_channels=4, d_channels=4)
    codes = [0] * len(specs)
    pool = [{"codes": [codes], "counts": [1]}, {"codes": [], "counts": []}]
    save_gan(GanCheckpoint(config, GanModels(config).ema.state_dict(), "image", 2.5, pool), tmp_path / "g.pt")
    out = tmp_path / "cells"
    assert main(["generate", "--checkpoint", str(tmp_path / "g.pt"), "--n", "2", "--out", str(out)]) == 0
    assert sorted(c.label for c in read_dataset(out).cells()) == ["Basophil"] * 2 + ["Erythroblast"] * 2
    with_attributes = read_dataset(out / "wbcatt_attributes.csv")
    cells = list(with_attributes.cells())
    assert [c.label for c in cells] == ["Basophil", "Basophil"]  # WBCAtt has no erythroblasts
    assert cells[0].attributes == {a.name: a.values[0] for a in specs}


def test_reduce_classes_is_deterministic_and_keeps_the_others(discs):
    from leukolens.data.imbalance import split_cells

    dataset = read_dataset(discs)
    full = split_cells(dataset, split="train")
    reduced = reduce_classes(full.samples, rare=[2], keep=0.05, seed=0)
    assert np.bincount([s.label for s in reduced]).tolist() == [20, 20, 1]  # at least one cell is kept
    again = reduce_classes(full.samples, rare=[2], keep=0.05, seed=0)
    assert selection_digest(reduced) == selection_digest(again)
    other = reduce_classes(full.samples, rare=[2], keep=0.05, seed=1)
    assert selection_digest(other) != selection_digest(reduced)  # a different seed keeps another red disc
    with pytest.raises(ValueError):
        reduce_classes(full.samples, rare=[2], keep=0.0)
    with pytest.raises(LeukolensError, match="rare classes not in the data set"):
        split_cells(dataset, split="train", rare=("Purple",))


def test_sampling_and_loss_weights_by_hand():
    labels = np.array([0, 0, 0, 1])
    assert class_sampling_weights(labels, 1.0).tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 2])
    assert class_sampling_weights(labels, 0.0).tolist() == pytest.approx([0.25] * 4)
    # Inverse frequency, mean cell weight 1: 4 / (3 * 2) for class 0, 4 / (1 * 2) for class 1, 0 for absent class 2.
    assert class_loss_weights(labels, 3).tolist() == pytest.approx([2 / 3, 2, 0])
    rng = np.random.default_rng(0)
    drawn = np.concatenate([labels[epoch_order(labels, oversample=True, rng=rng)] for _ in range(500)])
    assert abs((drawn == 1).mean() - 0.5) < 0.03
    assert sorted(epoch_order(labels, oversample=False, rng=rng)) == [0, 1, 2, 3]
    # Up to the median of the common classes (20 and 40 -> 30).
    assert generated_counts(np.array([0] * 20 + [1] * 40 + [2] * 2), [2], 3, 0) == {2: 28}
    assert generated_counts(np.array([0, 1]), [1], 2, 5) == {1: 5}


class _TinyBackbone(torch.nn.Module):
    """Random features that keep colour: enough to tell coloured discs apart."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 3, stride=4)

    def forward(self, x):
        return torch.relu(self.conv(x))


def test_balance_protocol_runs_every_arm(discs, gan, tmp_path):
    config = BalanceConfig(data=str(discs), rare=("Red",), gan=str(gan[0]), keep=0.1, seeds=(0, 1), input_size=32,
                           views=2, epochs=15, cache_dir=str(tmp_path / "cache"))
    logs = []
    report = run_balance(config, log=logs.append, backbone=_TinyBackbone())
    assert list(report["arms"]) == list(ARMS)
    assert report["reduced_class_counts"] == [20, 20, 2]
    assert report["generated_per_class"] == {"Red": 18}
    assert report["test_cells"] == 18
    for name, arm in report["arms"].items():
        assert len(arm["runs"]) == 2
        if name.endswith("judged"):  # the judge's share of the 18 asked for, the same for both judged arms
            accepted = [report["judge_acceptance"][str(run["seed"])]["Red"]["accepted"] for run in arm["runs"]]
            assert [run["train_cells"] for run in arm["runs"]] == [42 + a for a in accepted]
            assert all(0 <= a <= 18 for a in accepted)
            continue
        extra = 18 if "gan" in name else 0
        assert all(run["train_cells"] == 42 + extra for run in arm["runs"])
        assert 0 <= arm["mean"]["balanced_accuracy"] <= 1 and arm["std"]["rare_recall"] >= 0
    # Colour is easy: the common classes are learnt whatever the arm.
    assert report["arms"]["oversampling"]["mean"]["balanced_accuracy"] > 0.6
    table = format_balance(report)
    assert table.count("\n") == 1 + len(ARMS) and "recall Red" in table


def test_balance_refuses_a_gan_trained_on_another_set(discs, gan, tmp_path):
    config = BalanceConfig(data=str(discs), rare=("Red",), gan=str(gan[0]), keep=0.5, seeds=(0,), input_size=32,
                           cache_dir=str(tmp_path / "cache"))
    with pytest.raises(LeukolensError, match="different training set"):
        run_balance(config, log=lambda _: None, backbone=_TinyBackbone())
    no_gan = BalanceConfig(data=str(discs), rare=("Red",), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(LeukolensError, match="need a generator"):
        run_balance(no_gan, log=lambda _: None)
    # From the command line the same mistakes are one message and exit status 2.
    assert main(["balance", "--data", str(discs), "--rare", "Red"]) == 2
    assert main(["balance", "--data", str(discs), "--rare", "Purple", "--arms", "none"]) == 2


def test_evaluate_gan_reports_every_number_and_draws_galleries(discs, gan, tmp_path):
    from leukolens.data.cells import CropConfig
    from leukolens.eval.gan import evaluate_gan, format_report
    from leukolens.models.cellnet import CellNet, CellNetConfig
    from leukolens.models.checkpoint import from_model, save_checkpoint

    # An untrained cell model is enough to judge with: the numbers only have to be computed right.
    judge = CellNet(CellNetConfig(("Blue", "Green", "Red")), pretrained=False)
    cells = save_checkpoint(from_model(judge, CropConfig(input_size=32, mode="image")), tmp_path / "cells.pt")
    report = evaluate_gan(gan[0], cells_checkpoint=cells, per_class=4, out=tmp_path / "eval", feature_size=32,
                          cache_dir=tmp_path / "cache", log=lambda _: None)
    assert report["generated"] == 12 and report["real"] == 18
    assert report["gan_training_class_counts"] == [20, 20, 2]
    for key in ("fd_imagenet", "fd_cell_model", "kid_imagenet", "kid_cell_model", "memorisation_ratio"):
        assert np.isfinite(report[key])
    assert report["fd_imagenet"] >= 0 and report["memorisation_ratio"] > 0
    assert set(report["per_class"]) == {"Blue", "Green", "Red"}
    assert all(0 <= e["label_fidelity"] <= 1 for e in report["per_class"].values())
    assert report["per_class"]["Red"]["gan_training_cells"] == 2
    assert sorted(p.name for p in (tmp_path / "eval").glob("gallery-*.png")) == [
        "gallery-blue.png", "gallery-green.png", "gallery-red.png"]
    assert (tmp_path / "eval" / "gan-eval.json").is_file()
    assert "memorisation ratio" in format_report(report)
    assert "rejection" not in report and "rejection" not in format_report(report)


def test_evaluate_gan_after_rejection_measures_the_kept_cells(discs, gan, tmp_path):
    from leukolens.eval.gan import evaluate_gan, format_report
    from leukolens.models.checkpoint import save_checkpoint
    from tests.conftest import decisive_cell_checkpoint

    cells = save_checkpoint(decisive_cell_checkpoint(("Blue", "Green", "Red"), never="Green"), tmp_path / "cells.pt")
    report = evaluate_gan(gan[0], cells_checkpoint=cells, per_class=4, feature_size=32, min_confidence=0.4,
                          max_draws_per_cell=10, cache_dir=tmp_path / "cache", log=lambda _: None)
    rejection = report["rejection"]
    assert report["min_confidence"] == 0.4 and set(rejection) == {"Blue", "Green", "Red"}
    # The judge never says Green: 40 draws, none kept, and no Green line in the per-class numbers.
    assert rejection["Green"] == {"wanted": 4, "accepted": 0, "drawn": 40, "acceptance_rate": 0.0}
    assert "Green" not in report["per_class"]
    assert report["generated"] == sum(e["accepted"] for e in rejection.values()) >= 2
    assert report["drawn"] == sum(e["drawn"] for e in rejection.values())
    for name, entry in report["per_class"].items():
        assert entry["generated"] == rejection[name]["accepted"] and entry["drawn"] == rejection[name]["drawn"]
        assert entry["label_fidelity"] == 1.0  # the judge agrees with itself: a filter, not a check
    text = format_report(report)
    assert "rejection: kept only cells" in text and "Green: only 0 of 4 wanted cells accepted in 40 draws" in text


@pytest.mark.slow  # the full EfficientNet trains: half a minute
def test_finetune_mode_trains_the_backbone_end_to_end(discs, tmp_path):
    config = BalanceConfig(data=str(discs), rare=("Red",), keep=0.1, seeds=(0,), arms=("none", "oversampling"),
                           mode="finetune", image_size=32, input_size=32, epochs=1, batch_size=8,
                           cache_dir=str(tmp_path / "cache"))
    report = run_balance(config, log=lambda _: None)
    assert set(report["arms"]) == {"none", "oversampling"}
    assert all(0 <= a["mean"]["macro_f1"] <= 1 for a in report["arms"].values())
    assert report["gan"] is None and report["generated_per_class"] == {}
