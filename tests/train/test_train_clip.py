"""End to end on a tiny synthetic cell set: train (small text transformer, no MiniLM), resume, evaluate,
describe and search through the CLI."""

import json

import pytest

from leukolens.cli import main
from leukolens.io import ProblemLog, read_dataset, write_dataset
from leukolens.models.clip import load_clip
from leukolens.predict.weights import default_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    if not default_checkpoint().is_file():
        pytest.skip("the image tower needs the shipped cell model")
    from leukolens.synth.cellset import synthetic_cell_set

    root = tmp_path_factory.mktemp("clip")
    dataset = synthetic_cell_set(root / "cells", patients=25, cells_per_patient=1, seed=1, size=96)
    write_dataset(dataset, root / "cells" / "cells.json", format="coco", images="none")
    out = root / "model"
    arguments = ["train", "clip", "--data", str(root / "cells" / "cells.json"), "--out", str(out),
                 "--text-tower", "transformer", "--batch-size", "8", "--seed", "1", "--hold-out", "Neutrophil"]
    import os

    here = os.getcwd()
    os.chdir(root)  # the feature cache goes under ./.cache
    try:
        assert main([*arguments, "--epochs", "1"]) == 0
        assert main([*arguments, "--epochs", "2", "--resume"]) == 0
    finally:
        os.chdir(here)
    return root, out


def test_synthetic_cell_set_is_split_by_patient_with_diagnoses(trained):
    root, _ = trained
    dataset = read_dataset(root / "cells" / "cells.json", log=ProblemLog())
    assert len(dataset) == 25 and dataset.schema.name == "lld"
    by_patient = {}
    for f in dataset.fields:
        by_patient.setdefault(f.domain.sample_id, set()).add((f.split, f.domain.diagnosis))
    assert all(len(v) == 1 for v in by_patient.values())  # one split and one diagnosis per patient
    assert {s for v in by_patient.values() for s, _ in v} == {"train", "val", "test"}


def test_training_resumes_holds_out_and_stores_prototypes(trained):
    root, out = trained
    last = load_clip(out / "last.pt")
    assert [h["epoch"] for h in last.extra["history"]] == [1, 2]
    dataset = read_dataset(root / "cells" / "cells.json", log=ProblemLog())
    train_cells = [c for f in dataset.fields if f.split == "train" for c in f.cells]
    neutrophils = sum(c.label == "Neutrophil" for c in train_cells)
    assert neutrophils and last.train["cells"] == len(train_cells) - neutrophils
    best = load_clip(out / "best.pt")
    prototypes = best.prototypes
    assert len(prototypes["classes"]["names"]) == 14
    assert prototypes["classes"]["embeddings"].shape == (14, best.config.embed_dim)
    assert set(prototypes["attributes"]) == {
        "cell_size", "nuclear_chromatin", "nuclear_shape", "nucleolus", "cytoplasm", "cytoplasmic_basophilia",
        "cytoplasmic_vacuoles",
    }


def test_describe_search_and_eval_through_the_cli(trained, capsys, monkeypatch):
    root, out = trained
    monkeypatch.chdir(root)
    images = sorted((root / "cells" / "images").glob("*.jpg"))
    assert main(["describe", str(images[0]), "--checkpoint", str(out / "best.pt"), "--json", "-"]) == 0
    described = json.loads(capsys.readouterr().out)[0]
    assert described["sentence"].endswith(".") and described["label"]
    prototypes = load_clip(out / "best.pt").prototypes
    if described["label"] in prototypes["described_classes"]:
        assert set(described["attributes"]) == set(prototypes["attributes"])
        assert all(0 < a["score"] <= 1 for a in described["attributes"].values())
    else:  # a class never labelled with attributes in training: nothing is invented
        assert described["attributes"] == {}

    arguments = ["search", "large cells with prominent nucleoli", "--gallery", str(root / "cells" / "images"),
                 "--checkpoint", str(out / "best.pt"), "--top", "3"]
    assert main(arguments) == 0
    first = capsys.readouterr()
    assert len(first.out.strip().splitlines()) == 3 and "25 new" in first.err
    assert (root / "cells" / "images" / ".leukolens-index" / "embeddings.npy").is_file()

    assert main(["eval", "clip", "--checkpoint", str(out / "best.pt"), "--data", str(root / "cells" / "cells.json"),
                 "--split", "all", "--hold-out", "Neutrophil|cell_size=medium"]) == 0
    report = capsys.readouterr().out
    assert "class accuracy by sentences" in report and "text to image" in report and "unseen combinations" in report


def test_the_flat_config_is_its_three_parts():
    import dataclasses

    from leukolens.train.clip import ClipDataConfig, ClipModelConfig, ClipOptimConfig, TrainClipConfig

    parts = [{f.name for f in dataclasses.fields(c)} for c in (ClipDataConfig, ClipModelConfig, ClipOptimConfig)]
    assert sum(map(len, parts)) == len(set().union(*parts))
    assert {f.name for f in dataclasses.fields(TrainClipConfig)} == set().union(*parts) | {"out"}
    config = TrainClipConfig(data="d", text_tower="transformer", epochs=3)
    assert isinstance(config, ClipDataConfig)
    assert (config.text_tower, config.epochs, config.lr) == ("transformer", 3, 1e-3)


def test_clip_batches_give_each_cell_one_of_its_sentences_once():
    import numpy as np
    import torch

    from leukolens.data.captions import ContentCodes, SentencePool
    from leukolens.train.clip import clip_batches

    contents = [(("class", "A"),), (("class", "B"),), (("class", "A"),), (("class", "C"),), (("class", "B"),)]
    # Sentence 0 names A, 1 B, 2 C; sentence 3 names nothing, so it holds for every cell.
    pool = SentencePool(["a", "b", "c", "cell"], [(("class", "A"),), (("class", "B"),), (("class", "C"),), ()],
                        [[0, 3], [1], [0], [2, 3], [1]])
    codes = ContentCodes(contents + pool.contents)
    features = torch.arange(5.0)[:, None]  # [cells, 1]: a cell's feature is its index
    texts = torch.arange(4.0)[:, None] * 10
    batches = clip_batches(features, texts, pool, codes.encode(contents), codes.encode(pool.contents), batch_size=2,
                           rng=np.random.default_rng(0))
    assert len(batches) == 2
    seen = []
    for batch in batches:
        cells = batch.images[:, 0].long().tolist()
        sentences = (batch.texts[:, 0] / 10).long().tolist()
        seen += cells
        assert sentences == sorted(set(sentences))  # one column per distinct sentence
        assert all(batch.positive[row].any() for row in range(len(cells)))  # each cell's own sentence holds
        for row, cell in enumerate(cells):
            for column, sentence in enumerate(sentences):
                assert bool(batch.positive[row, column]) == (sentence == 3 or pool.contents[sentence] == contents[cell])
    assert len(seen) == 4 and len(set(seen)) == 4  # a shuffled epoch, the last partial batch dropped
