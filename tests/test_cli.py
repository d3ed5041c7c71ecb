"""The ``leukolens`` command on real and bundled data: what a user types, what they see."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leukolens.cli import main
from leukolens.cli.demo import sample_path
from leukolens.io import read_dataset
from leukolens.io.common import atomic_write_text
from leukolens.records import differences
from tests.conftest import lab_cells_folder, make_image


def test_info_reports_the_published_counts(shared_data, tmp_path, capsys):
    assert main(["data", "info", str(shared_data / "bccd"), "--json", str(tmp_path / "bccd.json")]) == 0
    out = capsys.readouterr().out
    assert "364 fields" in out
    summary = json.loads((tmp_path / "bccd.json").read_text())
    in_files = {k: v["cells"] + v["skipped"] for k, v in summary["classes"].items()}
    assert in_files == {"WBC": 372, "RBC": 4155, "Platelets": 361}
    # Two RBC "boxes" of BCCD are single points (xmin = xmax, ymin = ymax): reported and skipped.
    assert summary["classes"]["RBC"] == {"cells": 4153, "skipped": 2}
    assert summary["problems"] == {"box-range": 2}
    assert "4,153  (4,155 in the label files; 2 skipped for problems)" in out
    assert "splits: train 205, val 87, test 72" in out
    assert summary["splits"] == {"train": 205, "val": 87, "test": 72}


def test_info_on_pbc_says_how_wbcatt_rows_joined(shared_data, capsys):
    assert main(["data", "info", str(shared_data / "pbc")]) == 0
    out = capsys.readouterr().out
    assert "4,060 fields, 4,060 cells" in out
    assert "WBCAtt: 10,298 CSV rows, 3,200 found their image, 7,098 did not" in out
    assert "Immature granulocyte" in out and "chromatin_density: densely" in out


def test_validate_names_file_and_line_and_exits_nonzero(tmp_path, capsys):
    make_image(tmp_path / "images" / "a.jpg", (100, 100))
    atomic_write_text(tmp_path / "labels" / "a.txt", "0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1\n5 0.5 0.5 0.1 0.1\n")
    atomic_write_text(tmp_path / "classes.txt", "WBC\nRBC\n")
    assert main(["data", "validate", str(tmp_path), "--json", str(tmp_path / "v.json")]) == 1
    out = capsys.readouterr().out
    assert "a.txt:2: 4 columns, expected 5" in out
    assert "a.txt:3: class id 5 is not in 0..1 (WBC, RBC)" in out
    assert "problems: 2 (column-count 1, unknown-class 1)" in out
    assert json.loads((tmp_path / "v.json").read_text())["problems"] == {"column-count": 1, "unknown-class": 1}


def test_strict_stops_at_the_first_error_without_a_traceback(tmp_path, capsys):
    make_image(tmp_path / "images" / "a.jpg", (100, 100))
    atomic_write_text(tmp_path / "labels" / "a.txt", "0 0.5 0.5 0.1\n5 0.5 0.5 0.1 0.1\n")
    atomic_write_text(tmp_path / "classes.txt", "WBC\n")
    assert main(["data", "validate", str(tmp_path), "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("a.txt:1: 4 columns, expected 5")
    assert "Traceback" not in err


def test_user_mistakes_get_one_clear_line(tmp_path):
    missing = subprocess.run(
        [sys.executable, "-m", "leukolens", "data", "info", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"leukolens: error: {tmp_path / 'nope'}: no such file or folder"
    (tmp_path / "notes.txt").write_text("hello")
    odd = subprocess.run(
        [sys.executable, "-m", "leukolens", "data", "info", str(tmp_path / "notes.txt")], capture_output=True, text=True
    )
    assert odd.returncode == 2 and "cannot tell the format" in odd.stderr and "Traceback" not in odd.stderr


def test_convert_bccd_to_coco_and_back(shared_data, tmp_path, capsys):
    out = tmp_path / "bccd.json"
    assert main(["data", "convert", str(shared_data / "bccd"), "--to", "coco", "--out", str(out)]) == 0
    assert "wrote 364 fields" in capsys.readouterr().out
    from faster_coco_eval import COCO

    coco = COCO(str(out))
    counts = {c["name"]: len(coco.getAnnIds(catIds=[c["id"]])) for c in coco.loadCats(coco.getCatIds())}
    assert counts == {"WBC": 372, "RBC": 4153, "Platelets": 361}  # as read: two point boxes skipped
    assert differences(read_dataset(shared_data / "bccd"), read_dataset(out)) == []


def test_convert_to_plain_yolo_says_what_is_dropped(tmp_path, capsys):
    out = tmp_path / "yolo"
    assert main(["data", "convert", str(sample_path("pbc")), "--to", "yolo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "wrote 7 fields, 7 cells" in text
    assert "dropped (the format cannot hold it): cell attributes: 5" in text


def test_split_is_stratified_and_reproducible(shared_data, tmp_path):
    args = ["data", "split", str(shared_data / "pbc"), "--to", "coco", "--images", "none", "--seed", "3"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    first = (tmp_path / "a" / "splits.csv").read_text()
    assert first == (tmp_path / "b" / "splits.csv").read_text()
    dataset = read_dataset(tmp_path / "a" / "annotations.json")
    for label in dataset.classes.names:  # every class reaches every split, close to 70/15/15
        per_split = {s: sum(c.label == label for f in fs for c in f.cells) for s, fs in dataset.splits.items()}
        total = sum(per_split.values())
        assert per_split["test"] == pytest.approx(0.15 * total, abs=1)
        assert per_split["train"] == pytest.approx(0.7 * total, abs=1)


def test_view_draws_boxes_and_labels(tmp_path):
    out = tmp_path / "view"
    assert main(["data", "view", str(sample_path("bccd")), "--out", str(out), "--limit", "2"]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2
    original = Image.open(sample_path("bccd") / "BCCD" / "JPEGImages" / f"{pngs[0].stem}.jpg").convert("RGB")
    drawn = Image.open(pngs[0]).convert("RGB")
    assert drawn.size == original.size
    changed = int((np.asarray(original) != np.asarray(drawn)).any(axis=2).sum())
    assert changed > 0.01 * original.width * original.height  # boxes and text were drawn


def test_demo_runs_on_the_bundled_samples(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "data set 'bccd' (voc): 6 fields" in out
    assert "problems: none" in out
    assert len(list((tmp_path / "bccd").glob("*.png"))) == 6
    assert len(list((tmp_path / "pbc").glob("*.png"))) == 7


def test_bundled_samples_travel_with_the_package():
    assert (Path(sample_path("bccd")) / "LICENSE").is_file()
    assert (Path(sample_path("pbc")) / "wbcatt" / "LICENSE").is_file()


# ------------------------------------------------------------------------------------------------ training options
def _config_from_command(monkeypatch, module_name: str, function: str, argv: list[str]):
    """The config a ``train`` command builds, with the training itself replaced."""
    import importlib

    module = importlib.import_module(module_name)
    seen = []
    monkeypatch.setattr(module, function, lambda config, **_: seen.append(config) or Path("best.pt"))
    assert main(argv) == 0
    (config,) = seen
    return config


def test_training_options_default_to_their_configs(monkeypatch):
    from leukolens.train.cells import TrainCellsConfig
    from leukolens.train.clip import TrainClipConfig
    from leukolens.train.detector import TrainDetectorConfig

    cells = _config_from_command(
        monkeypatch, "leukolens.train.cells", "train_cells", ["train", "cells", "--data", "d", "--no-atypicality"]
    )
    assert cells == TrainCellsConfig(data="d")
    detector = _config_from_command(
        monkeypatch, "leukolens.train.detector", "train_detector", ["train", "detector", "--data", "d"]
    )
    assert detector == TrainDetectorConfig(data="d")
    clip = _config_from_command(monkeypatch, "leukolens.train.clip", "train_clip", ["train", "clip", "--data", "d"])
    assert clip == TrainClipConfig(data="d")


def test_train_cells_takes_more_microscopes_robust_augmentation_and_frozen_statistics(monkeypatch):
    from leukolens.data.augment import AUGMENT_PRESETS

    config = _config_from_command(
        monkeypatch, "leukolens.train.cells", "train_cells",
        ["train", "cells", "--data", "pbc", "--extra-data", "bccd", "chula", "--augment", "robust", "--freeze-norm",
         "--no-atypicality", "--epochs", "3", "--input-norm", "per-cell", "--unlabelled-data", "txl",
         "--unlabelled-sources", "Raabin-WBC", "BCDD"],
    )
    assert config.unlabelled_data == ("txl",) and config.unlabelled_sources == ("Raabin-WBC", "BCDD")
    assert config.extra_data == ("bccd", "chula") and config.freeze_norm and config.epochs == 3
    assert config.input_norm == "per-cell"
    assert config.augment == AUGMENT_PRESETS["robust"]


# ------------------------------------------------------------------------------------------------------ calibrate
@pytest.fixture(scope="module")
def tiny_cell_model(tmp_path_factory) -> Path:
    from leukolens.data.cells import CropConfig
    from leukolens.models.cellnet import CellNet, CellNetConfig
    from leukolens.models.checkpoint import from_model, save_checkpoint

    torch.manual_seed(0)  # the untrained network's weights, whatever ran before
    model = CellNet(CellNetConfig(("Basophil", "Lymphocyte")), pretrained=False)
    path = tmp_path_factory.mktemp("base") / "base.pt"
    return save_checkpoint(from_model(model, CropConfig(input_size=48, context=2.0, mode="box")), path)


def test_calibrate_writes_a_checkpoint_for_the_lab(tiny_cell_model, tmp_path, capsys):
    from leukolens.models.checkpoint import load_checkpoint

    cells = lab_cells_folder(tmp_path / "lab", {"Lymphocyte": 6, "Basophil": 6, "Monocyte": 6})
    out = tmp_path / "my-model.pt"
    assert main(["calibrate", "--cells", str(cells), "--out", str(out), "--checkpoint", str(tiny_cell_model)]) == 0
    printed = capsys.readouterr().out
    assert "calibrated on 18 cells (Basophil 6, Lymphocyte 6, Monocyte 6)" in printed
    assert "learnt classes the base model did not know: Monocyte" in printed
    calibrated = load_checkpoint(out)
    assert calibrated.config.classes == ("Basophil", "Lymphocyte", "Monocyte")
    assert calibrated.metrics["calibration"]["cells"] == {"Basophil": 6, "Lymphocyte": 6, "Monocyte": 6}


def test_calibrate_refuses_too_few_cells_and_unreadable_images_in_one_line(tiny_cell_model, tmp_path, capsys):
    few = lab_cells_folder(tmp_path / "few", {"Lymphocyte": 6, "Basophil": 4})
    argv = ["calibrate", "--out", str(tmp_path / "out.pt"), "--checkpoint", str(tiny_cell_model)]
    assert main([*argv, "--cells", str(few)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leukolens: error: too few calibration cells for Basophil (4)") and "\n" not in err
    assert main([*argv, "--cells", str(few), "--min-cells", "4"]) == 0  # the refusal follows --min-cells
    capsys.readouterr()
    bad = lab_cells_folder(tmp_path / "bad", {"Lymphocyte": 5, "Basophil": 5})
    (bad / "Basophil" / "Basophil-0.png").write_bytes(b"not an image")
    assert main([*argv, "--cells", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leukolens: error: ") and "\n" not in err and "Traceback" not in err
