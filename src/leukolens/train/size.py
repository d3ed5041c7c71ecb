"""Fit a cell checkpoint's size prior (``leukolens train size``): how large each type is, in µm, on several
microscopes.

The network is not trained here. Each training cell's diameter is its box's longer side times its image's scale,
which the caller gives: the CLI passes the detector's estimate from the image's own red cells, exactly as
``analyze`` finds a field's (:meth:`leukolens.predict.fields.Detector.red_cell_scale`); images whose red cells
cannot be found are skipped. The per-class log-normal fit
(:func:`leukolens.models.size.fit_size_prior`) is stored in the checkpoint, and ``analyze`` weighs it into every
cell whose field's scale it found::

    >>> from leukolens.predict.fields import Detector
    >>> from leukolens.train.size import TrainSizeConfig, fit_size
    >>> detector = Detector.from_checkpoint()
    >>> report = fit_size(TrainSizeConfig(checkpoint="cellnet.pt", data=("pbc/", "bccd/", "chula/")),
    ...                   scale_of=detector.red_cell_scale)

About 840 cells from three microscopes: about ten minutes on two CPU cores, nearly all of it the detector finding red
cells.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from leukolens.errors import LeukolensError
from leukolens.models.checkpoint import load_checkpoint, save_checkpoint
from leukolens.models.size import SizePrior, cell_diameter_um, fit_size_prior


@dataclass(frozen=True)
class TrainSizeConfig:
    """Which cells the size prior is fitted on and where it is written."""

    checkpoint: str  # the cell model to fit a size prior for
    data: tuple[str, ...]  # data sets of typed white cells with boxes (any format leukolens reads), one per microscope
    detector: str | None = None  # the detector whose red cells give each image's scale (None: the shipped one)
    cells_per_class: int = 60  # at most this many training cells per class and data set (images take the time)
    split: str = "train"
    seed: int = 0
    out: str | None = None  # where to write the checkpoint (None: over the checkpoint itself)


@dataclass
class SizeFitReport:
    prior: SizePrior
    path: Path
    measured: int  # cells whose image's scale was found
    skipped: int  # cells whose image's red cells could not be found

    def summary(self) -> str:
        medians = ", ".join(f"{c} {m:.1f} µm ({n} cells)" for (c, m), n in
                            zip(self.prior.median_um().items(), self.prior.cells, strict=True) if n)
        pooled = [c for c, n in zip(self.prior.classes, self.prior.cells, strict=True) if not n]
        text = f"size prior from {self.measured} cells ({self.skipped} skipped: no red cells found): {medians}"
        return text + (f"; too few cells, pooled: {', '.join(pooled)}" if pooled else "")


ScaleOf = Callable[[Image.Image], float | None]
"""µm per pixel of an image (None: not found), e.g. :meth:`leukolens.predict.fields.Detector.red_cell_scale`."""


def fit_size(config: TrainSizeConfig, scale_of: ScaleOf, *, log: Callable[[str], None] = print) -> SizeFitReport:
    """Measure training cells' sizes (each image's scale from ``scale_of``), fit the prior and write it into the
    checkpoint."""
    from leukolens.data.domains import WBC_CLASSES, typed_cells

    checkpoint = load_checkpoint(config.checkpoint, kind="cells")
    classes = checkpoint.config.classes
    rng = np.random.default_rng(config.seed)
    chosen = []
    for path in config.data:
        cells = [c for c in typed_cells(path) if c.split == config.split]
        if not cells:
            raise LeukolensError(f"{path}: no typed white cells in its {config.split!r} split")
        for name in classes:
            mine = [c for c in cells if WBC_CLASSES[c.sample.label] == name]
            chosen += [mine[i] for i in rng.permutation(len(mine))[: config.cells_per_class]]
    scales: dict[Path, float | None] = {}
    diameters, names = [], []
    for k, cell in enumerate(chosen):
        image = cell.sample.image
        if image not in scales:
            with Image.open(image) as opened:
                scales[image] = scale_of(opened.convert("RGB"))
        diameters.append(cell_diameter_um(cell.sample.box, scales[image]))
        names.append(WBC_CLASSES[cell.sample.label])
        if (k + 1) % 200 == 0:
            log(f"  {k + 1}/{len(chosen)} cells measured")
    measured = int(np.isfinite(diameters).sum())
    prior = fit_size_prior(diameters, names, classes)
    checkpoint.size = prior.as_dict()
    path = Path(config.out or config.checkpoint)
    save_checkpoint(checkpoint, path)
    return SizeFitReport(prior, path, measured, len(chosen) - measured)
