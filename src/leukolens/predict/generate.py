"""Generated cells on disk: a trained GAN's samples written as a data set leukolens reads back.

    >>> from leukolens.predict import generate_cells
    >>> generate_cells("out/gan/generator.pt", "out/basophils", classes=["Basophil"], n=500)

Images go to ``OUT/<class>/gan_<class>_<index>.png`` (a folder per class: ``leukolens data info OUT`` reads it). For
an attribute-conditioned GAN, the attributes each cell was generated with go to ``OUT/wbcatt_attributes.csv`` in
WBCAtt's columns (``leukolens data info OUT/wbcatt_attributes.csv`` reads them with the images); WBCAtt holds only its
five classes with all eleven attributes known, so cells of other classes are in the folders only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from leukolens.errors import LeukolensError, atomic_write_bytes, atomic_write_text
from leukolens.models.gan import sample_images
from leukolens.models.gan_checkpoint import class_index, conditions_for, load_gan

ATTRIBUTES_CSV = "wbcatt_attributes.csv"


def generate_cells(
    gan_path: str | Path,
    out: str | Path,
    *,
    classes: Sequence[str] = (),
    n: int = 100,
    seed: int = 0,
    truncation: float = 0.0,
) -> dict[str, int]:
    """Write ``n`` generated cells of each class (all the GAN's classes when ``classes`` is empty).

    Returns how many cells were written per class.
    """
    from leukolens.io.wbcatt import WBCATT_COLUMNS
    from leukolens.records import WBCATT_CLASSES, WBCATT_SCHEMA

    if n < 1:
        raise LeukolensError(f"--n must be at least 1, got {n}")
    checkpoint = load_gan(gan_path)
    generator = checkpoint.build()
    config = checkpoint.config
    names = list(classes) or list(config.classes)
    out = Path(out)
    rows, written = [], {}
    for name in names:
        index = class_index(config, name)
        labels, codes = conditions_for(checkpoint.attribute_pool, index, n, config, seed=seed + index)
        crops = sample_images(generator, labels, codes, seed=seed * 1000 + index, truncation=truncation).numpy()
        folder = out / name
        stem = name.lower().replace(" ", "-")
        for i, crop in enumerate(crops):
            path = folder / f"gan_{stem}_{seed}_{i:05d}.png"
            buffer = io.BytesIO()
            Image.fromarray(crop).save(buffer, format="PNG")
            atomic_write_bytes(path, buffer.getvalue())
            if codes is not None and name in WBCATT_CLASSES:
                values = _attribute_values(config.attributes, codes[i].tolist())
                if all(values.get(a) in WBCATT_SCHEMA[a].values for a in WBCATT_SCHEMA.names):
                    rows.append([path.name, name, *(values[a] for a in WBCATT_SCHEMA.names),
                                 path.relative_to(out).as_posix()])
        written[name] = len(crops)
    if rows:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(WBCATT_COLUMNS)
        writer.writerows(rows)
        atomic_write_text(out / ATTRIBUTES_CSV, buffer.getvalue())
    return written


def _attribute_values(specs, codes: list[int]) -> dict[str, str]:
    return {spec.name: spec.values[code] for spec, code in zip(specs, codes) if 0 <= code < len(spec.values)}


def class_counts(out: str | Path) -> dict[str, int]:
    """PNG files per class folder of a generated set (for messages and checks)."""
    out = Path(out)
    return {p.name: len(list(p.glob("*.png"))) for p in sorted(out.iterdir()) if p.is_dir()}


__all__ = ["ATTRIBUTES_CSV", "class_counts", "generate_cells"]
