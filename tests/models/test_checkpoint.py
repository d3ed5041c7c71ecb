"""One save/load path for every checkpoint kind: round trips keep weights and preprocessing, a file of another kind,
another format version or no checkpoint at all gets a clear error, files from before the envelope still load, and
so do the shipped weights."""

from pathlib import Path

import numpy as np
import pytest
import torch

from leukolens.data.cells import CropConfig
from leukolens.data.stain import fit_reference
from leukolens.errors import LeukolensError
from leukolens.models.cellnet import AttributeSpec, CellNet, CellNetConfig
from leukolens.models.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    CellCheckpoint,
    from_model,
    load_any_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from leukolens.models.clip import (
    ClipCheckpoint,
    ClipConfig,
    ClipModel,
    ImageTowerConfig,
    load_clip,
    network_sha256,
)
from leukolens.models.detector import (
    CenterNet,
    DetectorCheckpoint,
    DetectorConfig,
    checkpoint_from_model,
    load_detector,
)
from leukolens.models.gan import GanConfig, GanModels
from leukolens.models.gan_checkpoint import GanCheckpoint, load_gan, load_training_state, save_training_state
from leukolens.models.preprocess import Preprocess, StainReference

WEIGHTS = Path(__file__).resolve().parents[2] / "src" / "leukolens" / "weights"
HEADS = (AttributeSpec("cell_size", ("small", "big")), AttributeSpec("granularity", ("no", "yes")))
ENVELOPE_KEYS = {"format", "format_version", "kind", "config", "preprocess", "inference", "state_dict", "metrics",
                 "train", "extra"}


def _stain() -> dict:
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return {"method": "reinhard", "reference": fit_reference("reinhard", image)}


def _cells():
    torch.manual_seed(0)
    model = CellNet(CellNetConfig(("A", "B", "C"), HEADS), pretrained=False)
    return from_model(model, CropConfig(input_size=48, context=1.8, mode="image"), schema="wbcatt", stain=_stain(),
                      training_stain=_stain(), atypicality={"method": "knn", "threshold": 1.5},
                      metrics={"val": {"accuracy": 0.5}}, train={"epochs": 1}, extra={"epoch": 0})


def _detector():
    torch.manual_seed(0)
    model = CenterNet(DetectorConfig(("WBC", "RBC"), neck_channels=16), pretrained=False)
    return checkpoint_from_model(model, input_size=64, score_threshold=0.4, stain=_stain(), metrics={"mAP50": 0.3})


def _clip():
    torch.manual_seed(0)
    config = ClipConfig(image_tower=ImageTowerConfig(kind="imagenet", input_size=48, context=1.8), image_features=12,
                        text_features=6, embed_dim=4, hidden=8, schema="lld", classes=("A", "B"))
    prototypes = {"key": "class", "classes": {"names": ["A", "B"], "embeddings": torch.eye(2, 4)}, "attributes": {}}
    return ClipCheckpoint(config, ClipModel(config).state_dict(), prototypes, metrics={"x": 1}, train={"epochs": 2})


def _gan():
    torch.manual_seed(0)
    config = GanConfig(("A", "B"), HEADS, image_size=32, latent_dim=8, condition_dim=8, g_channels=4, d_channels=4)
    pool = [{"codes": [[0, 1]], "counts": [3]}, {"codes": [], "counts": []}]
    return GanCheckpoint(config, GanModels(config).ema.state_dict(), "box", 2.5, pool, {"steps": 7})


MAKERS = {"cells": _cells, "detector": _detector, "clip": _clip, "gan": _gan}


def _assert_same_tensors(loaded: dict, original: dict, *, half: bool) -> None:
    assert loaded.keys() == original.keys()
    for name, tensor in original.items():
        expected = tensor.half() if half and tensor.is_floating_point() else tensor
        assert loaded[name].dtype == expected.dtype and torch.equal(loaded[name], expected), name


@pytest.mark.parametrize("half", [False, True], ids=["float32", "float16"])
@pytest.mark.parametrize("kind", list(MAKERS))
def test_round_trip_keeps_tensors_preprocessing_and_records(tmp_path, kind, half):
    checkpoint = MAKERS[kind]()
    path = save_checkpoint(checkpoint, tmp_path / f"{kind}.pt", half=half)
    loaded = load_checkpoint(path, kind=kind)
    assert type(loaded) is type(checkpoint) and loaded.kind == kind
    _assert_same_tensors(loaded.state_dict, checkpoint.state_dict, half=half)
    assert loaded.preprocess == checkpoint.preprocess and loaded.config == checkpoint.config
    saved, read = checkpoint.to_envelope(), loaded.to_envelope()
    if kind == "clip":  # prototypes hold tensors, stored as they are
        prototypes = saved["inference"].pop("prototypes")["classes"]["embeddings"]
        stored = read["inference"].pop("prototypes")["classes"]["embeddings"]
        assert stored.dtype == prototypes.dtype and torch.equal(stored, prototypes)
    assert read == saved  # config, preprocess, inference, metrics, train, extra
    loaded.build()  # the weights fit the network the config describes
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == ENVELOPE_KEYS and raw["format"] == FORMAT and raw["format_version"] == FORMAT_VERSION
    assert raw["kind"] == kind and raw["preprocess"] == checkpoint.preprocess.as_dict()


def test_each_kind_keeps_what_using_it_needs(tmp_path):
    cells = load_checkpoint(save_checkpoint(_cells(), tmp_path / "c.pt"))
    assert cells.crop == CropConfig(input_size=48, context=1.8, mode="image") and cells.schema == "wbcatt"
    assert cells.stain == _stain() and cells.training_stain == _stain() and cells.atypicality["threshold"] == 1.5
    assert cells.mean == (0.485, 0.456, 0.406) and cells.metrics["val"]["accuracy"] == 0.5 and cells.extra["epoch"] == 0
    detector = load_detector(save_checkpoint(_detector(), tmp_path / "d.pt"))
    assert detector.input_size == 64 and detector.score_threshold == 0.4 and detector.stain == _stain()
    assert detector.preprocess.resize == "letterbox" and detector.preprocess.crop is None
    clip = load_clip(save_checkpoint(_clip(), tmp_path / "m.pt"))
    assert clip.prototypes["classes"]["names"] == ["A", "B"] and torch.equal(clip.prototypes["classes"]["embeddings"],
                                                                            torch.eye(2, 4))
    assert clip.preprocess.crop == CropConfig(input_size=48, context=1.8, cache_margin=1.0, mode="image")
    gan = load_gan(save_checkpoint(_gan(), tmp_path / "g.pt"))
    assert (gan.crop_mode, gan.context, gan.train) == ("box", 2.5, {"steps": 7})
    assert gan.attribute_pool == _gan().attribute_pool and gan.preprocess.mean == (0.5, 0.5, 0.5)


def test_a_setter_changes_the_preprocessing_record():
    checkpoint = _cells()
    checkpoint.training_stain = None
    assert checkpoint.preprocess.training_stain is None and checkpoint.training_stain is None
    checkpoint.training_stain = _stain()
    assert checkpoint.preprocess.training_stain == StainReference("reinhard", _stain()["reference"])


def test_gan_training_state_round_trips_in_float32(tmp_path):
    models = GanModels(_gan().config)
    save_training_state(models, tmp_path / "last.pt", extra={"step": 3})
    config, state_dict, extra = load_training_state(tmp_path / "last.pt")
    assert config == models.config and extra == {"step": 3}
    _assert_same_tensors(state_dict, models.state_dict(), half=False)


@pytest.mark.parametrize(
    ("saved", "asked", "message"),
    [
        ("detector", "cells", "is a detector checkpoint, not a cell model"),
        ("cells", "detector", "is a cell model checkpoint, not a detector"),
        ("gan", "clip", "is a GAN generator checkpoint, not an image-text model"),
        ("clip", "gan", "is an image-text model checkpoint, not a GAN generator"),
    ],
)
def test_a_checkpoint_of_another_kind_is_refused_by_name(tmp_path, saved, asked, message):
    path = save_checkpoint(MAKERS[saved](), tmp_path / "x.pt")
    with pytest.raises(LeukolensError, match=message):
        load_checkpoint(path, kind=asked)


def test_the_old_load_functions_refuse_other_kinds_too(tmp_path):
    path = save_checkpoint(_detector(), tmp_path / "d.pt")
    with pytest.raises(LeukolensError, match="is a detector checkpoint, not a GAN generator"):
        load_gan(path)
    with pytest.raises(LeukolensError, match="is a detector checkpoint, not a cell model"):
        load_checkpoint(path)  # kind="cells" by default


def test_any_kind_loads_by_what_the_file_says_and_other_kinds_are_refused_by_name(tmp_path):
    cells, detector = (save_checkpoint(MAKERS[k](), tmp_path / f"{k}.pt") for k in ("cells", "detector"))
    assert isinstance(load_any_checkpoint(cells), CellCheckpoint)
    assert isinstance(load_any_checkpoint(detector, kinds=("cells", "detector")), DetectorCheckpoint)
    with pytest.raises(LeukolensError, match="is a GAN generator checkpoint, not a cell model or a detector"):
        load_any_checkpoint(save_checkpoint(_gan(), tmp_path / "g.pt"), kinds=("cells", "detector"))
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(LeukolensError, match="list.pt: not a leukolens checkpoint \\(no leukolens format inside"):
        load_any_checkpoint(tmp_path / "list.pt")
    with pytest.raises(LeukolensError, match="missing.pt: checkpoint not found"):
        load_any_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize(("version", "message"), [(2, "version 2.*reads version 1.*newer"), (None, "version None")])
def test_another_format_version_is_refused(tmp_path, version, message):
    payload = torch.load(save_checkpoint(_detector(), tmp_path / "d.pt"), weights_only=True)
    payload["format_version"] = version
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(LeukolensError, match=message):
        load_detector(tmp_path / "other.pt")


def test_something_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(LeukolensError, match="missing.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LeukolensError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt", kind="detector")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(LeukolensError, match="not a leukolens cell model checkpoint \\(no leukolens format inside"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"format": "someone-else/3"}, tmp_path / "other.pt")
    with pytest.raises(LeukolensError, match="not a leukolens image-text model checkpoint \\(its format is 'someone"):
        load_clip(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="unknown checkpoint kind"):
        load_checkpoint(tmp_path / "other.pt", kind="yolo")


def test_saving_replaces_the_file_atomically(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(b"old")
    save_checkpoint(_detector(), path)
    assert load_detector(path).score_threshold == 0.4
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


# ------------------------------------------------------------------------------------------------------ legacy files
def _legacy(checkpoint) -> dict:
    """The payload the writers before the envelope produced (float16 weights)."""
    weights = {k: v.half() if v.is_floating_point() else v for k, v in checkpoint.state_dict.items()}
    common = {"config": checkpoint.config.as_dict(), "state_dict": weights, "train": checkpoint.train}
    if isinstance(checkpoint, CellCheckpoint):
        crop = checkpoint.crop
        return {**common, "format": "leukolens-cellnet/1", "crop": {"input_size": crop.input_size,
                "context": crop.context, "cache_margin": crop.cache_margin, "mode": crop.mode},
                "mean": list(checkpoint.mean), "std": list(checkpoint.std), "schema": checkpoint.schema,
                "stain": checkpoint.stain, "training_stain": checkpoint.training_stain,
                "atypicality": checkpoint.atypicality, "metrics": checkpoint.metrics, "extra": checkpoint.extra}
    if isinstance(checkpoint, DetectorCheckpoint):  # the oldest detector files have no "stain"
        return {**common, "format": "leukolens-detector/1", "input_size": checkpoint.input_size,
                "mean": list(checkpoint.mean), "std": list(checkpoint.std),
                "score_threshold": checkpoint.score_threshold, "metrics": checkpoint.metrics, "extra": {}}
    if isinstance(checkpoint, ClipCheckpoint):
        return {**common, "format": "leukolens-clip/1", "prototypes": checkpoint.prototypes,
                "metrics": checkpoint.metrics, "extra": {}}
    return {**common, "format": "leukolens-gan/1", "crop_mode": checkpoint.crop_mode, "context": checkpoint.context,
            "attribute_pool": checkpoint.attribute_pool}


@pytest.mark.parametrize("kind", list(MAKERS))
def test_files_from_before_the_envelope_still_load(tmp_path, kind):
    checkpoint = MAKERS[kind]()
    torch.save(_legacy(checkpoint), tmp_path / "legacy.pt")
    loaded = load_checkpoint(tmp_path / "legacy.pt", kind=kind)
    _assert_same_tensors(loaded.state_dict, checkpoint.state_dict, half=True)
    assert loaded.config == checkpoint.config and loaded.train == checkpoint.train
    expected = checkpoint.preprocess
    if kind == "detector":
        expected = Preprocess.for_fields(64, stain=None)  # written before detectors stored a stain
        assert loaded.stain == {} and loaded.score_threshold == 0.4
    assert loaded.preprocess == expected
    other = "detector" if kind != "detector" else "cells"
    with pytest.raises(LeukolensError, match=f"is {'an' if kind == 'clip' else 'a'} .* checkpoint, not"):
        load_checkpoint(tmp_path / "legacy.pt", kind=other)


def test_legacy_gan_training_state_loads(tmp_path):
    models = GanModels(_gan().config)
    torch.save({"format": "leukolens-gan-state/1", "config": models.config.as_dict(), "extra": {"step": 5},
                "state_dict": models.state_dict()}, tmp_path / "last.pt")
    config, state_dict, extra = load_training_state(tmp_path / "last.pt")
    assert config == models.config and extra == {"step": 5}
    _assert_same_tensors(state_dict, models.state_dict(), half=False)


# ------------------------------------------------------------------------------------------------------ preprocess
def test_preprocess_round_trips_as_plain_values_and_checks_itself():
    record = Preprocess.for_crops(CropConfig(input_size=96, context=2.2), mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2),
                                  stain=StainReference("reinhard", _stain()["reference"]))
    stored = record.as_dict()
    assert Preprocess.from_dict(stored) == record and record.stain_normalizer() is not None
    assert stored["crop"] == {"input_size": 96, "context": 2.2, "cache_margin": 1.15, "mode": "box"}
    assert Preprocess.for_fields(512).stain_normalizer() is None
    assert StainReference.from_dict({"method": "none"}) is None and StainReference.from_dict({}) is None
    with pytest.raises(ValueError, match="needs a CropConfig"):
        Preprocess(160)
    with pytest.raises(ValueError, match="differs from the crop"):
        Preprocess(160, crop=CropConfig(input_size=96))
    with pytest.raises(ValueError, match="unknown resize rule"):
        Preprocess(160, resize="stretch")


# ------------------------------------------------------------------------------------------------------ shipped
def _shipped(name: str) -> Path:
    path = WEIGHTS / name
    if not path.is_file():
        pytest.skip(f"no shipped {name}")
    return path


@pytest.mark.parametrize(
    ("name", "kind"), [("cellnet-pbc.pt", "cells"), ("detector-bccd.pt", "detector"), ("clip-pbc.pt", "clip")]
)
def test_shipped_weights_load_tensor_for_tensor(name, kind):
    path = _shipped(name)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    loaded = load_checkpoint(path, kind=kind)
    _assert_same_tensors(loaded.state_dict, raw["state_dict"], half=False)  # as stored: float16
    assert all(t.dtype != torch.float32 for t in loaded.state_dict.values())  # the files stay half precision
    if "format" in raw:  # written by this leukolens: the envelope's preprocessing record is what loads
        assert raw["format_version"] == FORMAT_VERSION and raw["kind"] == kind
        assert loaded.preprocess == Preprocess.from_dict(raw["preprocess"])
        if kind == "detector":
            assert loaded.metrics["rbc_diameter"] > 0  # the scale `detect` brings fields to
    elif kind == "cells":  # older files: read through the migration
        assert loaded.crop == CropConfig(**raw["crop"]) and loaded.schema == raw["schema"]
        assert loaded.preprocess.input_size == raw["crop"]["input_size"] and list(loaded.mean) == raw["mean"]
        assert loaded.training_stain == raw["training_stain"] and loaded.stain == raw["stain"]
    elif kind == "detector":
        assert loaded.preprocess == Preprocess.for_fields(raw["input_size"], mean=raw["mean"], std=raw["std"])
        assert loaded.score_threshold == raw["score_threshold"]
    if kind == "clip":  # the image-text model still names this very cell network
        cell_model = _shipped(loaded.config.image_tower.cell_model)
        cells = load_checkpoint(cell_model)
        assert network_sha256(cells) == loaded.config.image_tower.cell_network_sha256
        assert (loaded.preprocess.input_size, loaded.preprocess.mean, loaded.preprocess.crop.context) == (
            cells.preprocess.input_size, cells.preprocess.mean, cells.crop.context)
    loaded.build()
