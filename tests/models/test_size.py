"""The size prior: each type's diameter in µm, fitted on training cells and weighed into the type of a cell whose
field's scale is known."""

import json

import numpy as np
import pytest
from PIL import Image

from leukolens.cli import main
from leukolens.demo import sample_path
from leukolens.models.checkpoint import load_checkpoint, save_checkpoint
from leukolens.models.size import MIN_CELLS, SizePrior, cell_diameter_um, fit_size_prior
from leukolens.predict.cells import CellReader
from leukolens.predict.output import cells_json, validate
from tests.conftest import tiny_cell_checkpoint

CLASSES = ("Lymphocyte", "Monocyte", "Neutrophil")


def _prior() -> SizePrior:
    rng = np.random.default_rng(0)
    sizes = np.concatenate([rng.lognormal(np.log(m), 0.08, 200) for m in (10.5, 17.0, 14.5)])
    return fit_size_prior(sizes, np.repeat(CLASSES, 200), CLASSES + ("Basophil",))


def test_the_fit_recovers_each_class_and_pools_a_class_without_cells():
    prior = _prior()
    medians = prior.median_um()
    assert medians["Lymphocyte"] == pytest.approx(10.5, rel=0.03)
    assert medians["Monocyte"] == pytest.approx(17.0, rel=0.03)
    assert prior.cells == (200, 200, 200, 0)  # Basophil: no cells, the pooled distribution
    assert 10.5 < medians["Basophil"] < 17.0
    assert SizePrior.from_dict(json.loads(json.dumps(prior.as_dict()))) == prior
    with pytest.raises(ValueError, match="at least"):
        fit_size_prior([10.0] * (MIN_CELLS - 1), ["Lymphocyte"] * (MIN_CELLS - 1), CLASSES)


def test_size_tips_an_undecided_cell_and_leaves_cells_of_unknown_size_alone():
    prior = _prior()
    classes = ("Basophil", "Lymphocyte", "Monocyte", "Neutrophil", "Erythroblast")  # another order, a class unnamed
    undecided = np.array([[0.1, 0.3, 0.3, 0.2, 0.1]] * 3, dtype=np.float32)
    out = prior.apply(undecided, np.array([10.0, 18.0, np.nan]), classes)
    assert classes[out[0].argmax()] == "Lymphocyte" and classes[out[1].argmax()] == "Monocyte"
    np.testing.assert_allclose(out.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(out[2], undecided[2])  # unknown size: the image alone
    # a confident image is not overruled by a size one standard deviation off
    confident = np.array([[0.0, 0.95, 0.02, 0.02, 0.01]], dtype=np.float32)
    assert classes[prior.apply(confident, np.array([12.0]), classes)[0].argmax()] == "Lymphocyte"
    assert np.isnan(cell_diameter_um((0, 0, 10, 20), None)) and cell_diameter_um((0, 0, 10, 20), 0.5) == 10.0


def test_the_reader_weighs_size_in_when_the_scale_is_known_and_writes_the_diameter(tmp_path):
    checkpoint = tiny_cell_checkpoint()
    classes = checkpoint.config.classes
    sizes = np.concatenate([np.full(20, 10.0), np.full(20, 17.0)]) * np.exp(np.linspace(-0.1, 0.1, 40))
    checkpoint.size = fit_size_prior(sizes, ["Lymphocyte"] * 20 + ["Monocyte"] * 20, classes).as_dict()
    path = save_checkpoint(checkpoint, tmp_path / "cells.pt")
    assert load_checkpoint(path).size == checkpoint.size
    field = Image.open(sample_path("bccd") / "BCCD" / "JPEGImages" / "BloodImage_00007.jpg").convert("RGB")
    box = (100.0, 100.0, 200.0, 180.0)
    reader = CellReader.from_checkpoint(path, engine="torch")
    plain = CellReader.from_checkpoint(path, engine="torch", size=False)
    small, = reader.predict(field, [box], microns_per_pixel=0.1)  # a 10 µm cell
    large, = reader.predict(field, [box], microns_per_pixel=0.17)  # the same crop, 17 µm
    unknown, = reader.predict(field, [box])
    image_only, = plain.predict(field, [box], microns_per_pixel=0.1)
    assert small.diameter_um == pytest.approx(10.0) and unknown.diameter_um is None
    assert small.probabilities["Lymphocyte"] > image_only.probabilities["Lymphocyte"]
    assert large.probabilities["Monocyte"] > image_only.probabilities["Monocyte"]
    assert unknown.probabilities == pytest.approx(image_only.probabilities)
    document = cells_json([small, unknown])
    assert document["cells"][0]["diameter_um"] == 10.0 and "diameter_um" not in document["cells"][1]
    assert validate(document, "cells") == []


def test_train_size_measures_real_cells_with_the_shipped_detector(shared_data, tmp_path, capsys):
    out = tmp_path / "cells.pt"
    save_checkpoint(tiny_cell_checkpoint(), tmp_path / "base.pt")
    assert main(["train", "size", "--checkpoint", str(tmp_path / "base.pt"), "--data", str(shared_data / "bccd"),
                 "--cells-per-class", "12", "--out", str(out)]) == 0
    prior = SizePrior.from_dict(load_checkpoint(out).size)
    medians = prior.median_um()
    assert prior.cells[prior.classes.index("Lymphocyte")] >= MIN_CELLS
    # a lymphocyte is about one and a half red cells across, a monocyte two or more
    assert 8 < medians["Lymphocyte"] < 13 < 15 < medians["Monocyte"] < 21
    assert "size prior from" in capsys.readouterr().out
