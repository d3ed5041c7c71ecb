"""A lab's calibrated cell model serves describe too: its normalisation statistics, when calibration re-estimated
them, replace the image tower's."""

from leukolens.cli import main
from leukolens.models.checkpoint import load_checkpoint
from leukolens.predict.describe import ImageTextPredictor
from tests.conftest import lab_cells_folder


def test_describe_with_a_calibrated_cell_model(tmp_path, capsys):
    cells = lab_cells_folder(tmp_path / "lab", {"Lymphocyte": 5, "Basophil": 5, "Monocyte": 5})
    assert main(["calibrate", "--cells", str(cells), "--out", str(tmp_path / "lab.pt")]) == 0
    calibrated = load_checkpoint(tmp_path / "lab.pt")
    plain = ImageTextPredictor.from_checkpoint()
    adapted = ImageTextPredictor.from_checkpoint(cells=tmp_path / "lab.pt")
    image = sorted((cells / "Monocyte").glob("*.png"))[:1]
    _, before = plain.embed_files(image)
    _, after = adapted.embed_files(image)
    # A base model trained with fixed statistics keeps them through calibration; the weights calibration fine-tuned
    # are not the image tower's (its projection learnt the base network's features).
    new_statistics = not calibrated.fixed_norm_statistics
    assert before.shape == after.shape and (abs(before - after).max() > 1e-4) == new_statistics
    assert adapted.identity != plain.identity  # a gallery index built with one is not reused by the other
    assert calibrated.metrics["calibration"]["cells"]["Monocyte"] == 5
    capsys.readouterr()
    assert main(["describe", str(image[0]), "--cells", str(tmp_path / "lab.pt")]) == 0
    assert "Monocyte-0.png" in capsys.readouterr().out
