from dataclasses import replace

import numpy as np
import pytest
import torch

from leukolens.io.common import LeukolensError
from leukolens.losses.contrastive import contrastive_loss
from leukolens.models.checkpoint import load_checkpoint
from leukolens.models.clip import (
    ClipCheckpoint,
    ClipConfig,
    ClipModel,
    ImageTower,
    ImageTowerConfig,
    SentenceEncoder,
    build_vocabulary,
    load_clip,
    network_sha256,
    save_clip,
    tokenize,
)


def _config(text_tower="minilm", vocabulary=()):
    return ClipConfig(
        image_tower=ImageTowerConfig(kind="imagenet"), image_features=12, text_tower=text_tower, text_features=6,
        embed_dim=4, hidden=8, vocabulary=vocabulary, max_tokens=8, schema="lld", classes=("A", "B"),
    )


@pytest.mark.parametrize("text_tower", ["minilm", "transformer"])
def test_forward_backward_shapes_and_finite_loss(text_tower):
    torch.manual_seed(0)
    vocabulary = build_vocabulary(["a large cell", "a small cell with nucleoli"])
    model = ClipModel(_config(text_tower, vocabulary))
    images = model.encode_image(torch.randn(3, 12))
    texts_in = torch.randn(2, 6) if text_tower == "minilm" else tokenize(["a large cell", "a small x"], vocabulary, 8)
    texts = model.encode_text(texts_in)
    assert images.shape == (3, 4) and texts.shape == (2, 4)
    assert torch.allclose(images.norm(dim=1), torch.ones(3), atol=1e-5)
    positive = torch.tensor([[True, False], [False, True], [True, False]])
    loss = contrastive_loss(images, texts, positive, model.logit_scale)["total"]
    loss.backward()
    assert torch.isfinite(loss)
    assert model.logit_scale.grad is not None and torch.isfinite(model.logit_scale.grad)


def test_tokenize_marks_padding_and_unknown_words():
    ids = tokenize(["A large cell, N:C high", ""], ("cell", "large", "n:c"), 6)
    assert ids.tolist() == [[1, 3, 2, 4, 1, 0], [0] * 6]  # "a" and "high" unknown (1); padding 0


def test_checkpoint_round_trip_keeps_weights_config_and_prototypes(tmp_path):
    model = ClipModel(_config())
    prototypes = {"key": "class", "classes": {"names": ["A", "B"], "embeddings": torch.eye(2, 4)}, "attributes": {}}
    path = save_clip(ClipCheckpoint(model.config, model.state_dict(), prototypes, metrics={"x": 1}), tmp_path / "m.pt")
    loaded = load_clip(path)
    assert loaded.config == model.config
    assert loaded.prototypes["classes"]["names"] == ["A", "B"]
    features = torch.randn(2, 12)
    assert torch.allclose(loaded.build().encode_image(features), model.eval().encode_image(features), atol=1e-2)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LeukolensError, match="not a readable checkpoint"):
        load_clip(tmp_path / "bad.pt")


def test_a_changed_cell_model_is_refused(tmp_path):
    from leukolens.predict.weights import default_checkpoint

    if not default_checkpoint().is_file():
        pytest.skip("no shipped cell model")
    for config in (ImageTowerConfig(kind="cellnet", cell_network_sha256="0" * 64),
                   ImageTowerConfig(kind="cellnet", cell_model_sha256="0" * 64)):  # and as older models name it
        with pytest.raises(LeukolensError, match="not the one the image-text model was trained on"):
            ImageTower(config)


def test_refitting_what_sits_beside_the_cell_network_keeps_the_image_text_model(tmp_path):
    from leukolens.models.checkpoint import save_checkpoint
    from leukolens.predict.weights import default_checkpoint

    if not default_checkpoint().is_file():
        pytest.skip("no shipped cell model")
    cells = load_checkpoint(default_checkpoint())
    config = ImageTowerConfig(kind="cellnet", cell_network_sha256=network_sha256(cells))
    cells.metrics = {**cells.metrics, "refit": "another atypicality threshold"}
    refit = save_checkpoint(cells, tmp_path / "refit.pt")
    ImageTower(replace(config, cell_model=str(refit)))  # same network: accepted
    cells.state_dict = {k: v + 1 if k.endswith("class_head.1.bias") else v for k, v in cells.state_dict.items()}
    with pytest.raises(LeukolensError, match="not the one"):
        ImageTower(replace(config, cell_model=str(save_checkpoint(cells, tmp_path / "changed.pt"))))


def test_sentence_encoder_caches_in_memory_and_on_disk(tmp_path):
    class Fake:
        calls = 0

        def encode(self, sentences, **kwargs):
            Fake.calls += 1
            return np.array([[len(s), 1.0, 0.0] for s in sentences], dtype=np.float32)

    encoder = SentenceEncoder(tmp_path, model=Fake())
    first = encoder.encode(["ab", "abc", "ab"])
    assert first.shape == (3, 3) and first[0, 0] == 2 and first[1, 0] == 3
    encoder.encode(["abc"])
    assert Fake.calls == 1
    reopened = SentenceEncoder(tmp_path, model=Fake())
    assert reopened.encode(["ab"])[0, 0] == 2 and Fake.calls == 1
