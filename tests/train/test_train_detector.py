"""Detector training end to end on a tiny data set: sparse labels with pseudo-labels, WBC-only, sources, stain
normalisation carried to detection."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leukolens.data.fields import FIELD_AUGMENT_PRESETS
from leukolens.data.stain import normalizer_from_reference
from leukolens.io import write_dataset
from leukolens.io.common import LeukolensError
from leukolens.losses.pseudo import PseudoLabelConfig
from leukolens.models.detector import load_detector
from leukolens.predict.fields import Detector
from leukolens.records import BLOOD_CELLS, Box, Cell, Dataset, Field
from leukolens.train.detector import TrainDetectorConfig, train_detector

pytest.importorskip("faster_coco_eval")


def _dataset(root: Path) -> Path:
    """Six 96 x 96 fields (four train, two val) with a purple 'WBC' disc and two pink 'RBC' discs each."""
    rng = np.random.default_rng(0)
    fields = []
    for i in range(6):
        image = np.full((96, 96, 3), (235, 215, 210), np.uint8)
        yy, xx = np.mgrid[:96, :96]
        cells = []
        for label, colour, radius in (("WBC", (120, 60, 160), 12), ("RBC", (220, 120, 130), 8),
                                      ("RBC", (220, 120, 130), 8)):
            cx, cy = rng.integers(15, 81, size=2)
            image[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2] = colour
            cells.append(Cell(Box((cx - radius, cy - radius, cx + radius, cy + radius)), label))
        path = root / "src" / f"field{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        fields.append(Field(path, 96, 96, cells, split="train" if i < 4 else "val"))
    write_dataset(Dataset(fields, BLOOD_CELLS), root / "data", format="yolo", images="copy")
    return root / "data"


def _config(data: Path, out: Path, **changes) -> TrainDetectorConfig:
    values = dict(
        data=str(data), out=str(out), input_size=96, neck_channels=16, epochs=1, steps_per_epoch=3, batch_size=2,
        pretrained=False, threads=1, augment=FIELD_AUGMENT_PRESETS["robust"].__class__(window=64),
    )
    values.update(changes)
    return TrainDetectorConfig(**values)


def test_sparse_pseudo_label_training_runs_and_teaches_from_the_teacher(tmp_path):
    data = _dataset(tmp_path)
    # A threshold below the untrained heatmap's 0.1 prior (and no size limit: its boxes are still tiny): the
    # teacher's peaks outside the regions become targets.
    pseudo = PseudoLabelConfig(threshold=0.05, warmup_steps=0, max_entropy=2.0, min_size=0.0)
    config = _config(data, tmp_path / "run", annotated_fraction=0.25, sparse_mode="pseudo", pseudo=pseudo,
                     augment=FIELD_AUGMENT_PRESETS["robust"].__class__(window=64, blur=1.0, noise=0.05))
    best = train_detector(config, log=lambda _: None)
    history = load_detector(tmp_path / "run" / "last.pt").train["history"]
    assert best.is_file() and history[0]["steps"] == 3
    assert history[0]["pseudo_labels"] > 0 and np.isfinite(history[0]["pseudo"])
    assert "teacher" in load_detector(tmp_path / "run" / "last.pt").extra


def test_resume_continues_the_run_with_its_optimiser_schedule_and_teacher(tmp_path):
    data = _dataset(tmp_path)
    pseudo = PseudoLabelConfig(threshold=0.05, warmup_steps=0, min_size=0.0)
    config = _config(data, tmp_path / "run", annotated_fraction=0.25, sparse_mode="pseudo", pseudo=pseudo)
    train_detector(config, log=lambda _: None)
    first = load_detector(tmp_path / "run" / "last.pt")
    messages = []
    train_detector(_config(data, tmp_path / "run", annotated_fraction=0.25, sparse_mode="pseudo", pseudo=pseudo,
                           epochs=2), resume=True, log=messages.append)
    second = load_detector(tmp_path / "run" / "last.pt")
    assert any(m.startswith("resuming after epoch 1") for m in messages)
    assert second.extra["epoch"] == 1 and len(second.train["history"]) == 2
    assert second.train["history"][0] == first.train["history"][0]  # the first epoch is kept, not re-run
    assert second.extra["scheduler"]["last_epoch"] == 6  # 3 + 3 steps: the schedule went on where it stopped
    assert second.extra["optimizer"]["state"]  # Adam's moments carried over and updated


def test_wbc_only_training_with_stain_normalisation_keeps_both_in_the_checkpoint(tmp_path):
    data = _dataset(tmp_path)
    best = train_detector(_config(data, tmp_path / "run", classes=("WBC",), stain_norm="reinhard"), log=lambda _: None)
    checkpoint = load_detector(best)
    assert checkpoint.classes == ("WBC",)
    assert checkpoint.stain["method"] == "reinhard" and len(checkpoint.stain["reference"]["lab_mean"]) == 3
    # Detection normalises the stain first, exactly as training did (towards field0, the first training field).
    detector = Detector.from_checkpoint(best, engine="torch")
    stained = np.asarray(Image.open(tmp_path / "src" / "field4.png")) * np.array([0.7, 0.85, 1.0])  # another stain
    image = Image.fromarray(stained.astype(np.uint8))
    canvas, _ = detector.preprocess(image)
    expected = normalizer_from_reference(checkpoint.stain)(np.asarray(image.convert("RGB")))
    assert np.array_equal(canvas[:96, :96], expected) and not np.array_equal(expected, np.asarray(image))
    assert len(detector.detect([image, image])) == 2  # runs end to end (boxes are still tiny after 3 steps)


def test_bad_classes_sources_and_modes_are_refused(tmp_path):
    data = _dataset(tmp_path)
    with pytest.raises(LeukolensError, match="classes"):
        train_detector(_config(data, tmp_path / "a", classes=("Blast",)), log=lambda _: None)
    with pytest.raises(LeukolensError, match="sources"):
        train_detector(_config(data, tmp_path / "b", sources=("Raabin-WBC",)), log=lambda _: None)
    with pytest.raises(LeukolensError, match="sparse mode"):
        train_detector(_config(data, tmp_path / "c", annotated_fraction=0.5, sparse_mode="other"), log=lambda _: None)


def test_the_command_line_reaches_the_config(monkeypatch):
    import leukolens.train.detector as module
    from leukolens.cli import main

    seen = []
    monkeypatch.setattr(module, "train_detector", lambda config, resume: seen.append(config) or Path("best.pt"))
    main(["train", "detector", "--data", "d", "--annotated-fraction", "0.1", "--sparse-mode", "pseudo",
          "--pseudo-threshold", "0.6", "--pseudo-weight", "0.25", "--ema-momentum", "0.99", "--classes", "WBC",
          "--sources", "PBC", "BCDD", "--augment", "robust", "--window", "256", "--stain-norm", "reinhard"])
    (config,) = seen
    assert (config.annotated_fraction, config.sparse_mode, config.classes, config.sources) == (
        0.1, "pseudo", ("WBC",), ("PBC", "BCDD"))
    assert (config.pseudo.threshold, config.pseudo.weight, config.pseudo.momentum) == (0.6, 0.25, 0.99)
    assert config.augment.blur == FIELD_AUGMENT_PRESETS["robust"].blur and config.augment.window == 256
    assert config.stain_norm == "reinhard"


def test_an_extra_data_set_teaches_only_the_classes_it_boxes(tmp_path):
    """A WBC-only export (synthetic fields) must not teach that its unboxed red cells and platelets are absent."""
    from leukolens.records import Vocabulary
    from leukolens.train.detector import _extra_dataset

    full = _dataset(tmp_path / "full")
    fields = [Field(p, 96, 96, [Cell(Box((10, 10, 30, 30)), "WBC")], split="train")
              for p in sorted((tmp_path / "full" / "src").iterdir())]
    write_dataset(Dataset(fields, Vocabulary("wbc", ("WBC",))), tmp_path / "wbc", format="yolo", images="copy")

    assert _extra_dataset(str(full), BLOOD_CELLS, ("WBC", "Platelets"))[1] == ("WBC", "Platelets")
    assert _extra_dataset(str(full), BLOOD_CELLS, ())[1] == ()  # every class
    assert _extra_dataset(str(tmp_path / "wbc"), BLOOD_CELLS, ("WBC", "Platelets"))[1] == ("WBC",)
    assert _extra_dataset(str(tmp_path / "wbc"), BLOOD_CELLS, ())[1] == ("WBC",)
