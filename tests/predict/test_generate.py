"""Generated cells on disk with rejection by the judge: only cells the cell model reads as their class with the asked
confidence are written, reproducibly, a class short of ``n`` is reported rather than raised, and every PNG says it
is synthetic. An untrained tiny GAN and an untrained cell model with a spread-out class head stand in for trained
ones: what is checked is that the filter does what it says, not how good the cells are."""

import numpy as np
import pytest
import torch
from PIL import Image

from leukolens.cli import main
from leukolens.errors import LeukolensError
from leukolens.eval.gan import load_judge
from leukolens.models.cellnet import AttributeSpec
from leukolens.models.checkpoint import save_checkpoint
from leukolens.models.gan import GanConfig, GanModels
from leukolens.models.gan_checkpoint import GanCheckpoint, load_gan, sample_accepted, save_gan
from leukolens.predict.generate import SYNTHETIC_SOURCE, generate_cells
from tests.conftest import decisive_cell_checkpoint

CLASSES = ("Blue", "Green", "Red")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(generator.pt, a judge checkpoint that never says Green) for the classes Blue, Green, Red."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    config = GanConfig(CLASSES, image_size=32, g_channels=8, d_channels=8)
    gan = save_gan(GanCheckpoint(config, GanModels(config).ema.state_dict(), "image", 2.5), folder / "generator.pt")
    cells = save_checkpoint(decisive_cell_checkpoint(CLASSES, never="Green"), folder / "judge.pt")
    return gan, cells


def _written(folder):
    paths = sorted(folder.glob("*.png"))
    return paths, np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths]) if paths else None


def test_rejection_writes_only_cells_the_judge_accepts(models, tmp_path):
    gan, cells = models
    judge = load_judge(cells, CLASSES)
    written = generate_cells(gan, tmp_path, classes=["Blue"], n=6, seed=3, judge=judge, min_confidence=0.7)
    record = written["Blue"]
    assert record.judged and record.written == 6 and not record.short
    # Some drawn cells were turned away, so the rate is a real share.
    assert record.drawn > 6 and record.acceptance_rate == pytest.approx(6 / record.drawn)
    assert record.summary() == f"Blue 6 (accepted 6 of {record.drawn} drawn, {6 / record.drawn:.1%})"
    paths, crops = _written(tmp_path / "Blue")
    assert len(paths) == 6 and all(p.name.startswith("gan_blue_3_") for p in paths)
    # The judge itself, reading the written files back, assigns every one to Blue with at least the asked confidence.
    probabilities = judge.class_probabilities(crops)
    assert (probabilities.argmax(1) == 0).all()
    assert (probabilities[:, 0] >= 0.7 - 1e-4).all()
    text = Image.open(paths[0]).text
    assert text["Source"] == SYNTHETIC_SOURCE and text["Class"] == "Blue"
    assert text["Generator"] == "generator.pt" and text["Seed"] == "3" and text["Judge"] == "judge.pt"
    assert float(text["JudgeProbability"]) == pytest.approx(probabilities[0, 0], abs=1e-3)


def test_without_rejection_every_cell_is_written_and_marked_synthetic(models, tmp_path):
    gan, _ = models
    written = generate_cells(gan, tmp_path, classes=["Green", "Red"], n=3)
    assert [(r.written, r.drawn, r.judged) for r in written.values()] == [(3, 3, False)] * 2
    assert written["Red"].summary() == "Red 3"
    for name in ("Green", "Red"):
        paths, _ = _written(tmp_path / name)
        assert len(paths) == 3
        text = Image.open(paths[0]).text
        assert text["Source"] == SYNTHETIC_SOURCE and text["Class"] == name and "JudgeProbability" not in text


def test_sample_accepted_is_reproducible_by_seed(models):
    gan, cells = models
    checkpoint = load_gan(gan)
    generator, judge = checkpoint.build(), load_judge(cells, CLASSES)

    def draw(seed):
        return sample_accepted(generator, [], 2, 5, checkpoint.config, judge=judge, min_confidence=0.4, seed=seed,
                               max_draws=200)

    first, again, other = draw(0), draw(0), draw(1)
    assert first.accepted == len(first.crops) == 5 and first.drawn >= 5
    assert np.array_equal(first.crops, again.crops) and first.drawn == again.drawn
    assert np.array_equal(first.probabilities, again.probabilities)
    assert not np.array_equal(first.crops, other.crops)
    assert (first.labels == 2).all() and first.codes is None and (first.probabilities >= 0.4).all()


def test_sample_accepted_keeps_the_attribute_codes_of_accepted_cells(tmp_path):
    specs = (AttributeSpec("granules", ("none", "many")),)
    config = GanConfig(CLASSES, specs, image_size=32, g_channels=8, d_channels=8)
    torch.manual_seed(0)
    generator = GanModels(config).ema
    pool = [{"codes": [[0], [1]], "counts": [1, 1]}] * 3
    judge = load_judge(save_checkpoint(decisive_cell_checkpoint(CLASSES), tmp_path / "judge.pt"), CLASSES)
    kept = sample_accepted(generator, pool, 0, 4, config, judge=judge, min_confidence=0.5, max_draws=400)
    assert kept.codes.shape == (kept.accepted, 1) and set(kept.codes[:, 0]) <= {0, 1}
    assert len(kept.crops) == len(kept.labels) == len(kept.probabilities) == kept.accepted


def test_a_class_the_judge_never_accepts_is_reported_short(models, tmp_path):
    gan, cells = models
    judge = load_judge(cells, CLASSES)
    written = generate_cells(gan, tmp_path, classes=["Green", "Blue"], n=2, judge=judge, min_confidence=0.5,
                             max_draws_per_cell=3)
    green = written["Green"]
    assert green.short and green.written == 0 and green.drawn == 6 and green.acceptance_rate == 0
    assert not (tmp_path / "Green").exists() or not list((tmp_path / "Green").glob("*.png"))
    assert written["Blue"].written == 2  # the other class is still written


def test_cli_generate_prints_acceptance_and_a_line_when_short(models, tmp_path, capsys):
    gan, cells = models
    assert main(["generate", "--checkpoint", str(gan), "--class", "Blue", "Green", "--n", "2", "--out",
                 str(tmp_path), "--min-confidence", "0.5", "--judge", str(cells), "--max-draws-per-cell", "3"]) == 0
    printed = capsys.readouterr().out
    assert "Blue 2 (accepted 2 of " in printed and "Green 0 (accepted 0 of 6 drawn, 0.0%)" in printed
    assert "Green: only 0 of 2 cells passed the judge" in printed
    # A judge of other classes is one message, exit status 2.
    other = save_checkpoint(decisive_cell_checkpoint(("A", "B")), tmp_path / "other.pt")
    assert main(["generate", "--checkpoint", str(gan), "--n", "1", "--out", str(tmp_path / "x"),
                 "--min-confidence", "0.5", "--judge", str(other)]) == 2
    assert "differ from the GAN's" in capsys.readouterr().err


def test_confidence_out_of_range_is_refused(models, tmp_path):
    gan, cells = models
    with pytest.raises(LeukolensError, match="between 0 and 1"):
        generate_cells(gan, tmp_path, n=1, judge=load_judge(cells, CLASSES), min_confidence=1.5)


def test_the_shipped_generator_writes_basophils_out_of_the_box(tmp_path, capsys):
    # `leukolens generate` with no --checkpoint: the generator that ships with the package, judged by the shipped
    # cell model; every file says it is synthetic.
    out = tmp_path / "basophils"
    assert main(["generate", "--class", "Basophil", "--n", "6", "--out", str(out), "--min-confidence", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "Basophil" in printed and "drawn" in printed
    files = sorted((out / "Basophil").glob("gan_basophil_*.png"))
    assert 1 <= len(files) <= 6
    judge = load_judge(None, load_gan(_shipped_gan()).config.classes)
    with Image.open(files[0]) as image:
        assert image.text["Source"] == SYNTHETIC_SOURCE and image.text["Class"] == "Basophil"
        crops = np.asarray(image.convert("RGB"))[None]
    assert judge.class_probabilities(crops).argmax(1)[0] == judge.classes.index("Basophil")


def _shipped_gan():
    from leukolens.models.weights import shipped

    return shipped("gan")
