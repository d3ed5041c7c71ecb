"""Per-sample adaptation of the cell model: new normalisation statistics from a sample's own cells, no labels."""

import numpy as np
import torch
from PIL import Image

from leukolens.demo import sample_path
from leukolens.models.adapt import adapt_norm, batch_norms
from leukolens.models.cellnet import CellNet, CellNetConfig
from leukolens.predict import CellReader


def test_adapt_norm_sets_the_statistics_of_the_inputs():
    model = CellNet(CellNetConfig(("a", "b")), pretrained=False)
    first = batch_norms(model)[0]  # the stem's batch norm sees the convolved inputs directly
    inputs = torch.randn(12, 3, 32, 32) * 3 + 2
    adapt_norm(model, inputs, batch_size=5)  # three batches, averaged
    assert not model.training and first.momentum == 0.1
    with torch.no_grad():
        stem = model.backbone.model.conv_stem(inputs)  # [12, channels, 16, 16]
    # A cumulative average over batches of 5, 5 and 2 images: each batch mean weighs the same.
    batches = [stem[0:5], stem[5:10], stem[10:12]]
    expected = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    assert torch.allclose(first.running_mean, expected, atol=1e-4)


def test_an_adapted_reader_still_reads_cells():
    reader = CellReader.from_checkpoint(engine="torch")
    images = sorted((sample_path("pbc")).rglob("*.jpg"))
    crops = np.stack([reader.crop(Image.open(p).convert("RGB")) for p in images])
    adapted = reader.adapted(crops)
    before = batch_norms(reader.checkpoint.build())[0].running_mean
    after = adapted.checkpoint.state_dict[
        next(k for k in adapted.checkpoint.state_dict if k.endswith("running_mean"))
    ]
    assert not torch.allclose(before.float(), after.float())
    predictions = adapted.predict_crops(crops)
    assert len(predictions) == len(images)
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-4 for p in predictions)
    assert reader.checkpoint.state_dict is not adapted.checkpoint.state_dict  # the base reader is unchanged


def test_a_model_trained_with_fixed_statistics_is_not_adapted_to_a_sample():
    from leukolens.analyze import ADAPT_MIN_CELLS, adapt_reader
    from leukolens.data.cells import CropConfig
    from leukolens.models.checkpoint import from_model

    model = CellNet(CellNetConfig(("a", "b")), pretrained=False).eval()
    crops = [np.full((32, 32, 3), 100 + i, np.uint8) for i in range(ADAPT_MIN_CELLS)]
    for frozen, adapts in ((True, False), (False, True)):
        reader = CellReader(from_model(model, CropConfig(input_size=32), train={"freeze_norm": frozen}), engine="torch")
        adapted, note = adapt_reader(reader, crops)
        assert (adapted is not reader) == adapts
        assert ("not adapted" in note) == frozen


def test_each_prediction_carries_the_embedding_of_its_forward_pass():
    reader = CellReader.from_checkpoint(engine="torch")
    images = sorted((sample_path("pbc")).rglob("*.jpg"))[:3]
    crops = np.stack([reader.crop(Image.open(p).convert("RGB")) for p in images])
    predictions = reader.predict_crops(crops)
    _, _, embedding, _ = reader._outputs(crops)
    assert all(np.allclose(p.embedding, e, atol=1e-5) for p, e in zip(predictions, embedding))
    assert "embedding" not in predictions[0].as_dict()  # not written to JSON
