"""How fast leukolens reads, validates and converts the real data sets."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from leukolens.io import ProblemLog, check_images, read_dataset, write_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = ("bccd", "txl_pbc", "pbc")


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def run() -> str:
    if not SHARED.is_dir():
        raise SystemExit(f"the io benchmark needs the public data sets at {SHARED}")
    rows = []
    for name in SETS:
        dataset, read_s = _timed(read_dataset, SHARED / name, log=ProblemLog())
        _, check_s = _timed(check_images, dataset, log=ProblemLog())
        with tempfile.TemporaryDirectory() as tmp:
            _, coco_s = _timed(write_dataset, dataset, Path(tmp) / "a.json", format="coco")
            _, back_s = _timed(read_dataset, Path(tmp) / "a.json")
        cells = sum(1 for _ in dataset.cells())
        rows.append(
            f"| {name} | {len(dataset):,} | {cells:,} | {read_s:.2f} | {len(dataset) / read_s:,.0f} | "
            f"{check_s:.2f} | {coco_s:.2f} | {back_s:.2f} |"
        )
    return "\n".join(
        [
            "## Data I/O: reading, validating and converting the public data sets",
            "Reading parses every label line and reads each image header (not its pixels); validating decodes "
            "every image in full. PBC includes joining the 10,298 WBCAtt rows by file name. There is no published "
            "peer figure for label reading; the numbers are here so that a regression shows.",
            "",
            "| data set | fields | cells | read (s) | fields/s | decode all images (s) | write COCO (s) "
            "| read COCO (s) |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
