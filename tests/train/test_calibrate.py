"""Calibrating a cell model to a lab's microscope: refusals, a class learnt, a checkpoint that loads and predicts."""

import pytest
import torch

from leukolens.data.cells import CropConfig
from leukolens.errors import LeukolensError
from leukolens.eval.domains import evaluate_cells
from leukolens.models.cellnet import CellNet, CellNetConfig
from leukolens.models.checkpoint import from_model, load_checkpoint, save_checkpoint
from leukolens.train.calibrate import CalibrateConfig, calibrate, lab_cells
from tests.conftest import lab_cells_folder


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(1)  # the untrained network's weights, whatever ran before
    model = CellNet(CellNetConfig(("Basophil", "Lymphocyte")), pretrained=False)
    return from_model(model, CropConfig(input_size=48, context=2.0, mode="box"))


def test_calibrate_learns_a_new_class_and_round_trips(base, tmp_path):
    root = lab_cells_folder(tmp_path / "lab", {"Lymphocyte": 8, "Basophil": 8, "Monocyte": 8})
    samples, names = lab_cells(root, base.config.classes)
    calibrated, report = calibrate(base, samples, names, CalibrateConfig(steps=150))
    assert report.new_classes == ("Monocyte",) and report.cells == {"Lymphocyte": 8, "Basophil": 8, "Monocyte": 8}
    assert calibrated.config.classes == ("Basophil", "Lymphocyte", "Monocyte")
    assert report.cross_validated_accuracy >= 0.9  # three flat colours: separable once the head is refit
    assert calibrated.training_stain is not None
    path = save_checkpoint(calibrated, tmp_path / "lab.pt")
    loaded = load_checkpoint(path)
    result = evaluate_cells(loaded, samples, names)
    assert result["accuracy"] >= 0.9 and loaded.metrics["calibration"]["cells"]["Monocyte"] == 8
    assert base.config.classes == ("Basophil", "Lymphocyte")  # the base checkpoint is left as it was


def test_calibrate_refuses_too_few_cells_and_unreadable_images(base, tmp_path):
    root = lab_cells_folder(tmp_path / "few", {"Lymphocyte": 6, "Basophil": 4})
    samples, names = lab_cells(root, base.config.classes)
    with pytest.raises(LeukolensError, match=r"Basophil \(4\).*at least 5"):
        calibrate(base, samples, names)
    root = lab_cells_folder(tmp_path / "bad", {"Lymphocyte": 5, "Basophil": 5})
    (root / "Basophil" / "Basophil-0.png").write_bytes(b"not an image")
    with pytest.raises(LeukolensError, match="problem|cannot be read"):
        samples, names = lab_cells(root, base.config.classes)
        calibrate(base, samples, names)


@pytest.mark.parametrize("frozen", [False, True], ids=["learnt-statistics", "frozen-statistics"])
def test_calibrate_adapts_batch_norm_statistics_unless_the_base_model_kept_them_frozen(tmp_path, frozen):
    torch.manual_seed(1)
    model = CellNet(CellNetConfig(("Basophil", "Lymphocyte")), pretrained=False)
    base = from_model(model, CropConfig(input_size=48, context=2.0, mode="box"), train={"freeze_norm": frozen})
    root = lab_cells_folder(tmp_path / "lab", {"Lymphocyte": 5, "Basophil": 5})
    calibrated, _ = calibrate(base, *lab_cells(root, base.config.classes), CalibrateConfig(steps=20, finetune_epochs=0))
    before, after = base.build().state_dict(), calibrated.build().state_dict()
    stem_mean = next(k for k in before if k.endswith("running_mean"))
    assert torch.equal(before[stem_mean], after[stem_mean]) == frozen
    head_only = CalibrateConfig(steps=20, adapt_norm=True, finetune_epochs=0)
    forced, _ = calibrate(base, *lab_cells(root, base.config.classes), head_only)
    assert not torch.equal(before[stem_mean], forced.build().state_dict()[stem_mean])


def test_calibrate_keeps_the_blast_scorer_only_while_the_network_statistics_stay(tmp_path):
    from leukolens.predict.weights import default_checkpoint

    if not default_checkpoint().is_file() or load_checkpoint(default_checkpoint()).blast is None:
        pytest.skip("no shipped cell model with a blast scorer")
    shipped = load_checkpoint(default_checkpoint())
    root = lab_cells_folder(tmp_path / "lab", {"Lymphocyte": 5, "Basophil": 5})
    cells = lab_cells(root, shipped.config.classes)
    kept, report = calibrate(shipped, *cells, CalibrateConfig(steps=10, adapt_norm=False, finetune_epochs=0))
    assert kept.blast is not None and kept.blast.keys() == shipped.blast.keys() and report.notes == ()
    dropped, report = calibrate(shipped, *cells, CalibrateConfig(steps=10, adapt_norm=True, finetune_epochs=0))
    assert dropped.blast is None and "leukolens train blast" in report.summary()
    tuned, report = calibrate(shipped, *cells, CalibrateConfig(steps=10, adapt_norm=False, finetune_epochs=1))
    assert tuned.blast is None and "features changed" in report.summary()
    root = lab_cells_folder(tmp_path / "new", {"Lymphocyte": 5, "Basophil": 5, "Plasma cell": 5})
    learnt, report = calibrate(shipped, *lab_cells(root, shipped.config.classes),
                               CalibrateConfig(steps=10, adapt_norm=False, finetune_epochs=1))
    assert "no fine-tuning" in report.summary() and learnt.blast is not None  # nothing moved the features


def test_calibrate_fine_tunes_only_the_last_stages_and_says_so(base, tmp_path):
    root = lab_cells_folder(tmp_path / "lab", {"Lymphocyte": 6, "Basophil": 6})
    samples, names = lab_cells(root, base.config.classes)
    config = CalibrateConfig(steps=50, finetune_epochs=2, finetune_stages=1, finetune_lr=1e-3)
    tuned, report = calibrate(base, samples, names, config)
    before, after = base.build().state_dict(), tuned.build().state_dict()
    changed = {k for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])}
    assert any(k.startswith("backbone.model.blocks.6.") for k in changed)  # EfficientNet-Lite0's last stage
    assert not any(k.startswith(("backbone.model.blocks.5.", "backbone.model.conv_stem")) for k in changed)
    assert any("fine-tuned for 2 epochs" in n for n in report.notes)
    # (how much it buys is measured on real cells: benchmarks/cell_domains.py; these flat colours are what the
    # training augmentation's colour jitter is there to ignore)
    assert load_checkpoint(save_checkpoint(tuned, tmp_path / "tuned.pt")).config == base.config


def test_calibrate_does_not_fine_tune_while_it_learns_a_new_class(base, tmp_path):
    root = lab_cells_folder(tmp_path / "lab", {"Lymphocyte": 5, "Basophil": 5, "Monocyte": 5})
    tuned, report = calibrate(base, *lab_cells(root, base.config.classes), CalibrateConfig(steps=20, finetune_epochs=1))
    assert report.new_classes == ("Monocyte",) and any("no fine-tuning" in n for n in report.notes)
