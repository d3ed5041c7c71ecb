"""The blast score at prediction time: CellReader fills blast_probability and blast_suspected, a lab's examples join
with --blast-examples (bad folders refused clearly, bad images skipped), and describe says blast."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from leukolens.cli import main
from leukolens.data.cells import CropConfig
from leukolens.demo import sample_path
from leukolens.errors import LeukolensError
from leukolens.models.blast import BLAST_MORPHOLOGY, BlastScorer
from leukolens.models.cellnet import AttributeSpec, CellNet, CellNetConfig
from leukolens.models.checkpoint import from_model, load_checkpoint, save_checkpoint
from leukolens.predict.cells import CellReader
from leukolens.predict.describe import Description, blast_sentence, with_blast
from leukolens.predict.results import AttributePrediction, CellPrediction
from leukolens.records import PBC_CLASSES, WBCATT_SCHEMA

HEADS = tuple(AttributeSpec(a.name, a.values) for a in WBCATT_SCHEMA)


def _scorer(threshold: float) -> BlastScorer:
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    return BlastScorer(
        morphology=BLAST_MORPHOLOGY,
        examples=unit(rng.normal(size=(3, 1280))).astype(np.float32),
        example_sources=("one.png", "two.png", "three.png"),
        normals=unit(rng.normal(size=(20, 1280))).astype(np.float32),
        scores=("morphology", "prototype"),
        mean=np.array([-2.0, 0.0]),
        spread=np.array([1.0, 0.1]),
        weights=np.array([1.0, 1.0]),
        bias=0.0,
        threshold=threshold,
        k_examples=2,
        k_normals=5,
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """An untrained 64 px model saved with a blast scorer, and without one."""
    torch.manual_seed(0)
    model = CellNet(CellNetConfig(PBC_CLASSES.names, HEADS), pretrained=False).eval()
    folder = tmp_path_factory.mktemp("ckpt")
    crop = CropConfig(input_size=64, mode="image")
    with_scorer = save_checkpoint(from_model(model, crop, blast=_scorer(0.5).as_dict()), folder / "blast.pt")
    without = save_checkpoint(from_model(model, crop), folder / "plain.pt")
    return with_scorer, without


def _images():
    return sorted((sample_path("pbc") / "test" / "images").glob("*.jpg"))


def _examples(folder, *, good: int = 2, broken: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(_images()[:good]):
        Image.open(path).save(folder / f"blast-{i}.png")
    for i in range(broken):
        (folder / f"broken-{i}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def test_reader_fills_the_blast_fields_from_the_scorer(checkpoints):
    reader = CellReader.from_checkpoint(checkpoints[0], engine="torch")
    predictions = reader.predict_files(_images())
    crops = np.stack([reader.crop(reader._open(p)) for p in _images()])
    _, probabilities, embedding, _ = reader._outputs(crops)
    values = {a.name: a.values for a in HEADS}
    expected = reader.blast.probability(probabilities, values, embedding)
    assert [p.blast_probability for p in predictions] == pytest.approx(expected, abs=1e-5)
    for p in predictions:
        assert 0 < p.blast_probability < 1
        assert p.blast_suspected == (p.blast_probability > 0.5) and p.is_blast == (p.blast_suspected or
                                                                                   p.label == "Blast")
        assert p.as_dict()["blast_probability"] == pytest.approx(p.blast_probability, abs=1e-4)


def test_the_threshold_makes_the_call(checkpoints, tmp_path):
    checkpoint = load_checkpoint(checkpoints[0])
    for threshold, called in ((-1.0, True), (2.0, False)):
        checkpoint.blast = _scorer(threshold).as_dict()
        predictions = CellReader(checkpoint, engine="torch").predict_files(_images())
        assert all(p.blast_suspected is called and p.is_blast is called for p in predictions)


def test_a_checkpoint_without_a_scorer_gives_none(checkpoints, tmp_path):
    predictions = CellReader.from_checkpoint(checkpoints[1], engine="torch").predict_files(_images()[:2])
    assert all(p.blast_probability is None and p.blast_suspected is False for p in predictions)
    with pytest.raises(LeukolensError, match="no blast scorer"):
        CellReader.from_checkpoint(checkpoints[1], engine="torch", blast_examples=[_examples(tmp_path / "ours")])


def test_a_labs_examples_join_and_a_broken_one_is_skipped(checkpoints, tmp_path):
    folder = _examples(tmp_path / "ours", good=2, broken=1)
    reader = CellReader.from_checkpoint(checkpoints[0], engine="torch", blast_examples=[folder])
    assert len(reader.blast.examples) == 5 and reader.blast.example_sources[-1].endswith("blast-1.png")
    assert len(reader.blast_skipped) == 1 and "broken-0.jpg" in reader.blast_skipped[0][1]
    # A lab's cell among the examples is now its own nearest example: its prototype score rises.
    before = CellReader.from_checkpoint(checkpoints[0], engine="torch").predict_files(_images()[:1])[0]
    after = reader.predict_files(_images()[:1])[0]
    assert after.blast_probability > before.blast_probability
    # An adapted reader keeps the lab's examples without reading them again.
    crops = np.stack([reader.crop(Image.open(p).convert("RGB")) for p in _images()])
    assert reader.adapted(crops).blast is reader.blast


def test_bad_example_folders_are_refused(checkpoints, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LeukolensError, match="empty: no images in it"):
        CellReader.from_checkpoint(checkpoints[0], engine="torch", blast_examples=[empty])
    with pytest.raises(LeukolensError, match="none of the images could be read"):
        CellReader.from_checkpoint(checkpoints[0], engine="torch",
                                   blast_examples=[_examples(tmp_path / "bad", good=0, broken=2)])


def test_predict_cells_command_with_blast_examples(checkpoints, tmp_path, capsys):
    images = [str(p) for p in _images()]
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["predict", "cells", *images, "--checkpoint", str(checkpoints[0]), "--blast-examples", str(empty)])
    captured = capsys.readouterr()
    assert code == 2 and "leukolens: error: blast examples" in captured.err and "no images in it" in captured.err
    assert "Traceback" not in captured.err
    folder = _examples(tmp_path / "ours", good=2, broken=1)
    code = main(["predict", "cells", *images, "--checkpoint", str(checkpoints[0]), "--blast-examples", str(folder),
                 "--json", "-"])
    captured = capsys.readouterr()
    assert code == 0 and "skipped blast example" in captured.err and "broken-0.jpg" in captured.err
    payload = json.loads(captured.out)
    assert len(payload) == len(images)  # the whole batch is read
    assert all(0 <= cell["blast_probability"] <= 1 and isinstance(cell["blast_suspected"], bool) for cell in payload)


def _prediction(**attributes) -> CellPrediction:
    readings = {}
    for spec in HEADS:
        value = attributes.get(spec.name, spec.values[0])
        readings[spec.name] = AttributePrediction(value, 0.9, {v: 0.9 if v == value else 0.1 / (len(spec.values) - 1)
                                                                for v in spec.values})
    return CellPrediction("Monocyte", 0.8, {"Monocyte": 0.8}, readings, blast_probability=0.9, blast_suspected=True)


def test_describe_names_a_suspected_blast_and_the_attributes_behind_it(checkpoints):
    reader = CellReader.from_checkpoint(checkpoints[0], engine="torch")
    description = Description(
        "Monocyte", 0.7, {"Monocyte": 0.7},
        {"cell_size": ("small", 0.6), "chromatin_density": ("densely", 0.8), "cytoplasm_vacuole": ("yes", 0.9)},
        "A small monocyte with dense clumped chromatin; the cytoplasm contains vacuoles.",
    )
    prediction = _prediction(cell_size="big", chromatin_density="loosely", granularity="no", cytoplasm_colour="blue")
    with_blast(description, prediction, reader, WBCATT_SCHEMA)
    assert description.blast_suspected and description.blast_probability == 0.9
    assert description.blast_reasons == ("large cell", "loosely packed (fine) chromatin", "no granules",
                                         "blue (basophilic) cytoplasm")
    # The features behind the call are said as the cell model read them, the rest as the image-text model did.
    assert description.sentence == (
        "A large blast (suspected) with a low nuclear-to-cytoplasmic ratio, loosely packed chromatin and no granules; "
        "the cytoplasm is blue, with vacuoles. Blast-like: large cell, loosely packed (fine) chromatin, no granules "
        "and blue (basophilic) cytoplasm."
    )
    calm = _prediction()
    calm.blast_suspected, calm.blast_probability = False, 0.1
    plain = Description("Monocyte", 0.7, {}, {}, "A monocyte.")
    with_blast(plain, calm, reader, WBCATT_SCHEMA)
    assert plain.sentence == "A monocyte." and plain.blast_probability == 0.1 and plain.blast_reasons == ()


def test_blast_sentence_without_attributes():
    description = Description("Immature granulocyte", 0.9, {}, {}, "An immature granulocyte.")
    sentence = blast_sentence(description, {}, ("resembles the blast examples",), schema=WBCATT_SCHEMA,
                              morphology=[name for name, _, _ in BLAST_MORPHOLOGY])
    assert sentence == "A blast (suspected). Blast-like: resembles the blast examples."


# ------------------------------------------------------------------------------------------------------ shipped
def _shipped_scorer():
    from leukolens.models.weights import shipped

    path = shipped("cells")
    if not path.is_file() or not load_checkpoint(path).blast:
        pytest.skip("no shipped cell model with a blast scorer (make weights-blast)")
    return path


def test_shipped_scorer_never_saw_the_test_blasts_and_keeps_mature_neutrophils_low(shared_data):
    path = _shipped_scorer()
    scorer = BlastScorer.from_dict(load_checkpoint(path).blast)
    assert scorer.example_sources and not any("/MYO/" in s for s in scorer.example_sources)
    assert scorer.fitted["validation_called_blast"] <= 0.05
    reader = CellReader.from_checkpoint(path, engine="torch")
    marrow = shared_data / "bone_marrow_sample"
    neutrophils = reader.predict_files(sorted((marrow / "NGS").glob("*.jpg")))
    assert neutrophils and not any(p.blast_suspected for p in neutrophils)
    blasts = reader.predict_files(sorted((marrow / "BLA").glob("*.jpg")))  # the scorer's own examples
    assert all(p.blast_suspected and p.is_blast for p in blasts)


def test_shipped_describe_says_blast_for_a_suspected_blast(shared_data):
    _shipped_scorer()
    from leukolens.models.weights import shipped
    from leukolens.predict.describe import ImageTextPredictor

    if not shipped("clip").is_file():
        pytest.skip("no shipped image-text model")
    descriptions = ImageTextPredictor.from_checkpoint().describe_files(
        sorted((shared_data / "bone_marrow_sample" / "BLA").glob("*.jpg"))
    )
    assert descriptions and all("blast (suspected)" in d.sentence and "Blast-like: " in d.sentence
                                for d in descriptions)
