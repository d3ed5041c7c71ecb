"""The exported ONNX files against eager PyTorch: ms per image for the cell model and the detector, at batch 1 and 8,
on 1 and 2 threads, and how far their outputs are apart.

Protocol: the shipped weights exported with ``leukolens export onnx`` (:func:`leukolens.predict.export.
export_onnx_file`) into a temporary folder. Inputs are real: the seven bundled PBC cells cut as the cell model's
checkpoint says (160 px crops, normalised; batch 8 repeats the first), and the six bundled BCCD fields letterboxed to
the detector's 512 px (512 x 384 canvases; batch 8 repeats the first two). PyTorch runs the network the way
``--engine torch`` does (eval, channels-last, inference mode) with ``torch.set_num_threads``; ONNX Runtime runs the
exported file on its CPU provider with ``intra_op_num_threads``. Each setting gets one warm-up call, then the median
of ``repeats`` calls. Parity: the largest absolute difference between the two over every output on the batch of 8.

Usage: ``make bench BENCH=onnx`` (writes docs/benchmarks.md), or ``python -m benchmarks.onnx_speed [REPEATS]`` to
print the section only (``1`` checks that it runs).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPEATS = 15
THREADS = (1, 2)
BATCHES = (1, 8)


def _median_seconds(call, repeats: int) -> float:
    call()  # warm-up: ONNX Runtime plans its kernels on the first call
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _inputs(kind: str, path: Path) -> np.ndarray:
    """Eight real inputs for the network of ``kind``, as its engine takes them."""
    from leukolens.cli.demo import sample_path
    from leukolens.data.augment import normalize

    if kind == "cells":
        from leukolens.predict.cells import CellReader

        reader = CellReader.from_checkpoint(path, engine="torch")
        images = sorted((sample_path("pbc") / "test" / "images").glob("*.jpg"))
        crops = np.stack([reader.crop(Image.open(p).convert("RGB")) for p in images])
        crops = np.concatenate([crops, crops[:1]])[:8]  # [8, size, size, 3] uint8
        batch = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
        return normalize(batch, reader.checkpoint.mean, reader.checkpoint.std).numpy()
    from leukolens.predict.fields import Detector

    detector = Detector.from_checkpoint(path, engine="torch")
    fields = sorted((sample_path("bccd") / "BCCD" / "JPEGImages").glob("*.jpg"))
    canvases = np.stack([detector.preprocess(Image.open(p).convert("RGB"))[0] for p in fields])
    return np.ascontiguousarray(np.concatenate([canvases, canvases[:2]])[:8])  # [8, h, w, 3] uint8


def _torch_engine(kind: str, checkpoint):
    from leukolens.predict.cells import cell_engine
    from leukolens.predict.fields import detector_engine

    if kind == "cells":
        return cell_engine(checkpoint.build(), input_size=checkpoint.crop.input_size, engine="torch", path=None)
    return detector_engine(checkpoint, engine="torch", path=None)


def measure(kind: str, folder: Path, repeats: int) -> dict:
    """Times and parity of the shipped network of ``kind``."""
    from leukolens.models.checkpoint import load_any_checkpoint
    from leukolens.predict import weights
    from leukolens.predict.engine import onnx_session
    from leukolens.predict.export import export_onnx_file

    path = weights.shipped(kind)
    exported = export_onnx_file(folder / f"{kind}.onnx", checkpoint=path)
    inputs = _inputs(kind, path)
    engine = _torch_engine(kind, load_any_checkpoint(path))
    name = exported.input.name
    rows = []
    previous = torch.get_num_threads()
    try:
        for threads in THREADS:
            torch.set_num_threads(threads)
            session = onnx_session(exported.path, threads=threads)
            for batch in BATCHES:
                x = np.ascontiguousarray(inputs[:batch])
                eager = _median_seconds(lambda x=x: engine(x), repeats)
                onnx = _median_seconds(lambda x=x, s=session: s.run(None, {name: x}), repeats)
                rows.append((threads, batch, 1000 * eager / batch, 1000 * onnx / batch))
        expected = engine(inputs)
        found = onnx_session(exported.path, threads=1).run(None, {name: inputs})
    finally:
        torch.set_num_threads(previous)
    diff = max(float(np.abs(e - f).max()) for e, f in zip(expected, found))
    return {"rows": rows, "diff": diff, "input": exported.input.describe(), "shape": inputs.shape[1:],
            "megabytes": exported.size_bytes / 1e6}


def run(repeats: int = REPEATS) -> str:
    from leukolens.predict import weights

    load = os.getloadavg()[0]
    results, missing = {}, []
    with tempfile.TemporaryDirectory(prefix="leukolens-onnx-bench-") as folder:
        for kind in ("cells", "detector"):
            if weights.shipped(kind).is_file():
                results[kind] = measure(kind, Path(folder), repeats)
            else:
                missing.append(kind)
    names = {"cells": "cell model", "detector": "detector"}
    lines = [
        "## ONNX export: ONNX Runtime against eager PyTorch",
        "",
        f"Protocol in `benchmarks/onnx_speed.py`: the shipped weights exported with `leukolens export onnx`, real "
        f"inputs (the bundled PBC cells and BCCD fields), median of {repeats} calls after a warm-up. Load average "
        f"at the start: {load:.2f} on {os.cpu_count()} cores.",
        "",
        "| network | input | threads | batch | PyTorch ms/image | ONNX Runtime ms/image | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, result in results.items():
        shape = " x ".join(str(s) for s in result["shape"])
        for threads, batch, eager, onnx in result["rows"]:
            lines.append(f"| {names[kind]} | {shape} | {threads} | {batch} | {eager:.1f} | {onnx:.1f} | "
                         f"{eager / onnx:.2f}x |")
    lines += [
        "",
        "Parity, the largest absolute difference between PyTorch and ONNX Runtime over every output on the batch "
        "of 8: " + "; ".join(f"{names[k]} {r['diff']:.2g} ({r['input']}, {r['megabytes']:.1f} MB)"
                             for k, r in results.items()) + ".",
    ]
    if missing:
        lines.append(f"Not measured (no shipped weights): {', '.join(names[k] for k in missing)}.")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else REPEATS))
