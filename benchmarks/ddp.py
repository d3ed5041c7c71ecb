"""Training on one process against two (``torchrun --nproc_per_node=2``, DDP over gloo): the cell model on PBC and the
detector on BCCD for a fixed number of steps, wall time, steps/s and the validation score each reaches.

Protocol: each run is a fresh process (``python -m benchmarks.ddp worker KIND CONFIG``, or the same under ``torchrun
--standalone --nproc_per_node=2``) that calls the trainer (:func:`leukolens.train.cells.train_cells`,
:func:`leukolens.train.detector.train_detector`) with a fixed seed and the same global batch; one process runs
torch's default threads (one per core), two run ``cores // 2`` each. The cell model: PBC's train split (2,501 cells),
batch 32, ``CELL_EPOCHS`` epochs (78 steps each), validated on PBC val (520 cells) after each epoch; the crop cache is
filled before either run. The detector: BCCD train, the default recipe (batch 8, 320 px windows of 512 px fields),
``DETECTOR_STEPS`` steps in one epoch, validated on BCCD val. Reported: the wall time of the trainer call (data,
model, training, validation, checkpoints), the training steps alone (``train_seconds`` of the checkpoint's history)
and the score of the last epoch (cells: class accuracy; detector: mAP50). The two runs draw different augmentation
and, for the detector, different windows (each rank its own stream), and batch-norm statistics are per rank: the
scores agree up to that noise.

Usage: ``make bench BENCH=ddp`` (several minutes a run), or ``python -m benchmarks.ddp quick`` (a few steps on a few
cells, to check that it runs; prints the section only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LEUKOLENS_SHARED_DATA", REPO.parent / "shared" / "data"))
CELL_EPOCHS = 2  # 156 steps of 32 cells
DETECTOR_STEPS = 120
RESULT = "ddp-result: "


# ------------------------------------------------------------------------------------------------------ the runs
def _tuples(values: dict) -> dict:
    """JSON lists back to the tuples the configs hold."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def config_from_json(kind: str, values: dict):
    """A trainer's config from ``dataclasses.asdict`` of it, read back from JSON (nested configs rebuilt)."""
    values = _tuples(values)
    if kind == "cells":
        from leukolens.data.augment import AugmentConfig
        from leukolens.train.cells import TrainCellsConfig

        return TrainCellsConfig(**{**values, "augment": AugmentConfig(**_tuples(values["augment"]))})
    from leukolens.data.fields import FieldAugmentConfig
    from leukolens.losses.pseudo import PseudoLabelConfig
    from leukolens.train.detector import TrainDetectorConfig

    return TrainDetectorConfig(**{**values, "augment": FieldAugmentConfig(**_tuples(values["augment"])),
                                  "pseudo": PseudoLabelConfig(**_tuples(values["pseudo"]))})


def worker(kind: str, config_json: str) -> None:
    """One run of a trainer (in every process under torchrun); rank 0 prints the result line."""
    from leukolens.models.checkpoint import load_checkpoint
    from leukolens.train.cells import train_cells
    from leukolens.train.detector import train_detector
    from leukolens.train.distributed import is_main_process

    config = config_from_json(kind, json.loads(config_json))
    started = time.perf_counter()
    (train_cells if kind == "cells" else train_detector)(config, log=lambda _: None)
    if is_main_process():
        last = load_checkpoint(Path(config.out) / "last.pt", kind=kind)
        result = {"wall": time.perf_counter() - started, "history": last.extra["history"]}
        print(RESULT + json.dumps(result), flush=True)


def _launch(kind: str, values: dict, processes: int) -> dict:
    """A run in fresh processes; its result line."""
    command = [sys.executable, "-m", "benchmarks.ddp", "worker", kind, json.dumps(values)]
    if processes > 1:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        command = [torchrun, "--standalone", f"--nproc_per_node={processes}", *command[1:]]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} on {processes} process(es) failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT):])


def _cell_config(folder: Path, *, epochs: int, cells: int) -> dict:
    """The cell-model run; with ``cells``, a data set of that many training and validation cells (a quick check)."""
    from leukolens.train.cells import TrainCellsConfig

    data = DATA / "pbc"
    if cells:
        data = _subset(data, folder / "pbc-subset.json", cells)
    return asdict(TrainCellsConfig(data=str(data), out=str(folder / "cells"), epochs=epochs, batch_size=32,
                                   patience=100, cache_dir=str(REPO / ".cache" / "leukolens"), seed=0))


def _subset(data: Path, out: Path, cells: int) -> Path:
    """The first ``cells`` training and validation cells of ``data``, as a COCO file pointing at the originals."""
    from leukolens.io import read_dataset, write_dataset

    dataset = read_dataset(data)
    dataset.fields = [f for split in ("train", "val") for f in [f for f in dataset.fields if f.split == split][:cells]]
    write_dataset(dataset, out, format="coco")
    return out


def _prefill_crops(values: dict) -> None:
    """Cache the crops both runs read, so that neither pays for decoding them."""
    from leukolens.data.cells import load_crops
    from leukolens.train.cells import training_cells

    config = config_from_json("cells", values)
    _, _, _, crop, train, val = training_cells(config)
    for samples in (train, val):
        load_crops(samples, size=crop.cache_size, context=crop.cache_context, cache_dir=Path(config.cache_dir))


def _detector_config(folder: Path, *, steps: int, val_fields: int) -> dict:
    from leukolens.train.detector import TrainDetectorConfig

    return asdict(TrainDetectorConfig(data=str(DATA / "bccd"), out=str(folder / "detector"), epochs=1,
                                      steps_per_epoch=steps, val_fields=val_fields, seed=0))


def measure(kind: str, values: dict) -> list[dict]:
    """The run on one and on two processes: wall and training seconds, steps, the last epoch's score."""
    rows = []
    for processes in (1, 2):
        result = _launch(kind, {**values, "out": f"{values['out']}-{processes}"}, processes)
        history = result["history"]
        last = history[-1]
        score = last["val_accuracy"] if kind == "cells" else next(
            v for k, v in last.items() if k.startswith("val_mAP50/"))
        rows.append({"processes": processes, "wall": result["wall"], "steps": last["steps"],
                     "train": sum(h["train_seconds"] for h in history), "score": score})
    return rows


def run(cell_epochs: int = CELL_EPOCHS, detector_steps: int = DETECTOR_STEPS, *, cells: int = 0,
        val_fields: int = 0) -> str:
    if not (DATA / "pbc").is_dir() or not (DATA / "bccd").is_dir():
        return f"## Training on two processes (DDP)\n\nNot run: no PBC or BCCD data under {DATA}."
    load = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory(prefix="leukolens-ddp-") as folder:
        cell_values = _cell_config(Path(folder), epochs=cell_epochs, cells=cells)
        _prefill_crops(cell_values)
        results["cell model (PBC, batch 32)"] = measure("cells", cell_values)
        detector_values = _detector_config(Path(folder), steps=detector_steps, val_fields=val_fields)
        results["detector (BCCD, batch 8)"] = measure("detector", detector_values)
    cores = os.cpu_count() or 1
    lines = [
        "## Training on two processes (DDP)",
        "",
        f"Protocol in `benchmarks/ddp.py`: the same run on one process ({cores} torch threads) and on two "
        f"(`torchrun --standalone --nproc_per_node=2`, {max(1, cores // 2)} thread each, half of each global batch "
        f"each), fixed seed. Load average at the start: {load:.2f} on {cores} cores."
        + (f" Quick check: {cells} training and validation cells." if cells else ""),
        "",
        "| model | processes | steps | wall s | training s | steps/s | validation score |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        for r in rows:
            lines.append(f"| {name} | {r['processes']} | {r['steps']} | {r['wall']:.0f} | {r['train']:.0f} | "
                         f"{r['steps'] / max(r['train'], 1e-9):.2f} | {r['score']:.4f} |")
    speedups = [f"{name.split(' (')[0]} {rows[0]['train'] / max(rows[1]['train'], 1e-9):.2f}x"
                for name, rows in results.items()]
    lines += ["", f"Speed-up of the training steps on two processes: {'; '.join(speedups)}. Validation score: cells "
              "class accuracy, detector mAP50 on BCCD val, of the last epoch."]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["quick"]:
        print(run(cell_epochs=1, detector_steps=2, cells=64, val_fields=4))
    else:
        print(run())
