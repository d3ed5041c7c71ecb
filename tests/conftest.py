"""Shared test fixtures: the real data sets beside the checkout, and small images made on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LEUKOLENS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: present in CI and on developers' machines, absent in a user's clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set LEUKOLENS_SHARED_DATA to run these tests)")
    return SHARED_DATA


def make_image(path: Path, size: tuple[int, int] = (64, 48), colour=(200, 120, 140)) -> Path:
    """Write a small solid-colour image (JPEG or PNG by suffix) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


LAB_CELL_COLOURS = {"Lymphocyte": (150, 40, 160), "Basophil": (40, 40, 120), "Monocyte": (120, 150, 200),
                    "Plasma cell": (70, 90, 180)}


def lab_cells_folder(root: Path, counts: dict[str, int]) -> Path:
    """A folder per class of 48 x 48 cells: a flat disc of the class's colour on a pink background (a lab's cells)."""
    import numpy as np
    from PIL import ImageDraw

    rng = np.random.default_rng(0)
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = Image.new("RGB", (48, 48), (230, 200, 200))
            r = int(rng.integers(10, 16))
            ImageDraw.Draw(image).ellipse((24 - r, 24 - r, 24 + r, 24 + r), fill=LAB_CELL_COLOURS[name])
            image.save(root / name / f"{name}-{i}.png")
    return root


def every_cell_a_wbc_detector():
    """An untrained 64 px CenterNet whose heads are set so that every output cell (stride 8) is a WBC peak at its
    centre with a 16 px box: 48 white cells on a 640 x 480 field (8 x 6 on 64 x 48), none in the padding."""
    import torch

    from leukolens.models.detector import CenterNet, DetectorConfig, checkpoint_from_model
    from leukolens.records import BLOOD_CELLS

    torch.manual_seed(0)
    model = CenterNet(DetectorConfig(BLOOD_CELLS.names, neck_channels=16), pretrained=False).eval()
    with torch.no_grad():
        model.heatmap[-1].weight.zero_()
        model.heatmap[-1].bias.copy_(torch.tensor([3.0, -10.0, -10.0]))
        model.size[-1].weight.zero_()
        model.size[-1].bias.fill_(2.0)  # 2 output cells: 16 input px, 160 px of a 640 px field
        model.offset[-1].weight.zero_()
        model.offset[-1].bias.fill_(0.5)  # centres mid-cell
    return checkpoint_from_model(model, input_size=64, score_threshold=0.5)


def tiny_cell_checkpoint():
    """An untrained cell model with WBCAtt's heads, 64 px whole-image input, and an atypicality scorer fitted on
    random features (threshold 0.5): the fields tests' stand-in for the shipped model."""
    import numpy as np
    import torch

    from leukolens.data.cells import CropConfig
    from leukolens.models.atypicality import fit_scorer
    from leukolens.models.cellnet import AttributeSpec, CellNet, CellNetConfig
    from leukolens.models.checkpoint import from_model
    from leukolens.records import PBC_CLASSES, WBCATT_SCHEMA

    torch.manual_seed(0)
    heads = tuple(AttributeSpec(a.name, a.values) for a in WBCATT_SCHEMA)
    model = CellNet(CellNetConfig(PBC_CLASSES.names, heads), pretrained=False).eval()
    scorer = fit_scorer(np.random.default_rng(0).normal(size=(50, 1280)), np.arange(50) % 7, components=8)
    scorer.threshold = 0.5
    return from_model(model, CropConfig(input_size=64, mode="image"), schema="wbcatt", atypicality=scorer.as_dict())


def decisive_cell_checkpoint(classes, *, never: str | None = None, input_size: int = 32):
    """An untrained cell model whose class head is scaled up (probabilities spread from near 0 to near 1 instead of
    all near 1 / classes), for judging generated cells; class ``never`` gets a bias that keeps it from ever winning."""
    import torch

    from leukolens.data.cells import CropConfig
    from leukolens.models.cellnet import CellNet, CellNetConfig
    from leukolens.models.checkpoint import from_model

    torch.manual_seed(0)
    model = CellNet(CellNetConfig(tuple(classes)), pretrained=False).eval()
    linear = model.class_head[-1]
    with torch.no_grad():
        linear.weight.mul_(30)
        linear.bias.zero_()
        if never is not None:
            linear.weight[list(classes).index(never)] = 0
            linear.bias[list(classes).index(never)] = -100
    return from_model(model, CropConfig(input_size=input_size, mode="image"))


# Module-scoped stand-ins for the shipped models, saved once per test module, for the modules that run `analyze`
# end to end (a module may define its own fixture of the same name instead).
@pytest.fixture(scope="module")
def private_onnx_cache(tmp_path_factory):
    """ONNX exports of the tiny models go to a folder of the module's own, made once (workers inherit it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LEUKOLENS_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    from leukolens.models.detector import save_detector

    return save_detector(every_cell_a_wbc_detector(), tmp_path_factory.mktemp("detector") / "tiny-detector.pt")


@pytest.fixture(scope="module")
def tiny_cells(tmp_path_factory):
    from leukolens.models.checkpoint import save_checkpoint

    return save_checkpoint(tiny_cell_checkpoint(), tmp_path_factory.mktemp("cells") / "tiny-cells.pt")
