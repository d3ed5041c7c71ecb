"""Detector trainings and evaluations for the benchmarks, cached on disk so that a benchmark can be re-run (or
continued after an interruption) without training again what it already has.

A run lives in ``out/bench/GROUP/NAME``: ``best.pt`` and ``last.pt`` from the training, ``run.json`` with the config
it was trained with (a run whose config changed trains again), and ``eval-*.json`` per evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from leukolens.eval.detection import evaluate_detector
from leukolens.io.common import atomic_write_text
from leukolens.models.detector import load_detector
from leukolens.predict.fields import Detector
from leukolens.train.detector import TrainDetectorConfig, train_detector

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RUNS = REPO / "out" / "bench"


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _config_key(config: TrainDetectorConfig) -> dict:
    values = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    values.pop("out")
    return values


def train_run(group: str, name: str, config: TrainDetectorConfig, *, train: bool = True) -> dict | None:
    """Train (or reuse) one run; returns ``{"checkpoint", "minutes", "epochs", "steps", "history"}``, or None
    when ``train`` is False and no finished run with this config exists."""
    folder = RUNS / group / name
    record_path = folder / "run.json"
    key = _config_key(config)
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("config") == key and (folder / "best.pt").is_file():
            return record
    if not train:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.json"):
        stale.unlink()
    _log(f"[{group}/{name}] training ({config.max_minutes} min budget)")
    started = time.time()
    best = train_detector(dataclasses.replace(config, out=str(folder)), log=lambda t: _log(f"[{group}/{name}] {t}"))
    history = load_detector(folder / "last.pt").train.get("history", [])
    record = {
        "config": key,
        "checkpoint": str(best),
        "minutes": round((time.time() - started) / 60, 2),
        "epochs": len(history),
        "steps": history[-1].get("steps") if history else 0,
        "history": history,
    }
    atomic_write_text(record_path, json.dumps(record, indent=1) + "\n")
    return record


def evaluate_run(
    run: dict, data: Path, *, split: str = "test", sources: tuple[str, ...] = (), domain_key: str = "source"
) -> dict:
    """COCO metrics of a run's best checkpoint on one split (optionally only fields of some sources), cached."""
    folder = Path(run["checkpoint"]).parent
    tag = f"{Path(data).name}-{split}" + ("-" + "-".join(sources) if sources else "")
    path = folder / f"eval-{tag}.json"
    if path.is_file():
        return json.loads(path.read_text())
    report = evaluate_detector(
        Detector.from_checkpoint(run["checkpoint"], engine="torch"), data, split=split, sources=sources,
        domain_key=domain_key,
    )
    atomic_write_text(path, json.dumps(report, indent=1) + "\n")
    return report


def number(value) -> str:
    return "-" if value is None else f"{value:.3f}"
