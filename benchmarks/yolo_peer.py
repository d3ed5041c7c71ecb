"""The peer, side by side: Ultralytics YOLO11n trained from its yaml (no downloaded weights) on BCCD train with the
same CPU minutes as our detector, both scored by leukolens's own evaluator on BCCD test, plus fields/s at batch 1.

Ultralytics is AGPL-3.0: a benchmark peer only, never a dependency of leukolens. It lives in its own virtual
environment (``out/yolo-venv``, made here with ``python -m venv`` and ``pip install ultralytics`` with the torch
leukolens uses), and runs in a child process that reads a YOLO copy of BCCD written by leukolens's own writer.
Nothing is downloaded at run time: no pretrained weights (``yolo11n.yaml``, ``pretrained=False``), no AMP check
(``amp=False``), no plots (``plots=False``), and the label font ultralytics checks for is a local copy of
matplotlib's DejaVu Sans.

Our side is the shipped detector's recipe (``TrainDetectorConfig`` defaults) on BCCD train alone. Both train for
``MINUTES`` of wall time on one torch thread each, at the same input size, at the same time (one core each), as the
issue's calibration did (YOLO11n, 20 minutes, 512 px). Speed: from the JPEG path to boxes, one field at a time,
after a warm-up, for both (ours through ONNX Runtime as `leukolens detect` runs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.detector_runs import REPO, RUNS, SHARED, evaluate_run, number, train_run
from leukolens.eval.detection import evaluate_detections
from leukolens.io import ProblemLog, read_dataset, write_dataset
from leukolens.io.common import atomic_write_text
from leukolens.models.detector import Detections
from leukolens.train.detector import TrainDetectorConfig

VENV = REPO / "out" / "yolo-venv"
# The torch and torchvision leukolens runs with (a CPU-only torch wheel with PyPI's torchvision fails: the latter's
# compiled operators need the CUDA build's libraries, even on a CPU).
REQUIREMENTS = ("ultralytics", "torch==2.14.1", "torchvision==0.29.1")
FOLDER = RUNS / "peer"
MINUTES = 20.0  # each side's training budget (wall time, one torch thread, both running at once)
IMAGE_SIZE = 512  # both sides: the longer side of a field in input pixels

CHILD = r"""
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from ultralytics import YOLO

args = json.loads(sys.argv[1])
out = Path(args["out"])
best = out / "train" / "weights" / "best.pt"
started = time.time()
if not best.is_file():
    model = YOLO("yolo11n.yaml")
    model.train(data=args["data"], epochs=1000, time=args["minutes"] / 60, imgsz=args["imgsz"], batch=16,
                device="cpu", workers=1, pretrained=False, amp=False, plots=False, cache="ram", seed=0,
                project=str(out), name="train", exist_ok=True, verbose=False)
record = out / "train.json"
if not record.is_file():
    record.write_text(json.dumps({"train_seconds": time.time() - started}))
train_seconds = json.loads(record.read_text())["train_seconds"]
model = YOLO(str(best))
images = args["images"]
model.predict(images[0], imgsz=args["imgsz"], conf=0.001, device="cpu", verbose=False)  # warm-up
predictions, started = [], time.perf_counter()
for path in images:
    result = model.predict(path, imgsz=args["imgsz"], conf=0.001, iou=0.7, max_det=300, device="cpu",
                           verbose=False)[0]
    boxes = result.boxes
    predictions.append({"boxes": boxes.xyxy.tolist(), "scores": boxes.conf.tolist(), "labels": boxes.cls.tolist()})
seconds = time.perf_counter() - started
epochs = None
results_csv = out / "train" / "results.csv"
if results_csv.is_file():
    epochs = len(results_csv.read_text().strip().splitlines()) - 1
json.dump({"predictions": predictions, "fields_per_second": len(images) / seconds, "train_seconds": train_seconds,
           "epochs": epochs}, open(out / "predictions.json", "w"))
"""


def ensure_venv(log=print) -> Path:
    """``out/yolo-venv`` with ultralytics and the CPU torch wheel (made once; about a minute from PyPI)."""
    python = VENV / "bin" / "python"
    if python.is_file() and subprocess.run([python, "-c", "import ultralytics"], capture_output=True).returncode == 0:
        return python
    log(f"making {VENV} (python -m venv; pip install ultralytics with the CPU torch wheel)")
    subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
    return python


def yolo_data() -> Path:
    """BCCD in YOLO layout (images linked), with an absolute ``path`` so that ultralytics finds it."""
    folder = FOLDER / "bccd-yolo"
    spec = folder / "data.yaml"
    if not spec.is_file():
        dataset = read_dataset(SHARED / "bccd", log=ProblemLog())
        write_dataset(dataset, folder, format="yolo", images="link")
        values = yaml.safe_load(spec.read_text())
        values["path"] = str(folder.resolve())
        atomic_write_text(spec, yaml.safe_dump(values, sort_keys=False))
    return spec


def _environment() -> dict:
    config = FOLDER / "yolo-config"  # ultralytics' settings and fonts stay here, not in the user's home
    config.mkdir(parents=True, exist_ok=True)
    font = next((VENV / "lib").glob("python*/site-packages/matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf"), None)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if font is not None and not (config / name).is_file():
            shutil.copy(font, config / name)
    return {**os.environ, "YOLO_CONFIG_DIR": str(config), "YOLO_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run_yolo(minutes: float, test_images: list[Path]) -> dict:
    python = ensure_venv()
    out = FOLDER / f"yolo11n-{minutes:g}min"
    out.mkdir(parents=True, exist_ok=True)
    args = {"data": str(yolo_data()), "minutes": minutes, "imgsz": IMAGE_SIZE, "out": str(out.resolve()),
            "images": [str(p) for p in test_images]}
    subprocess.run([python, "-c", CHILD, json.dumps(args)], check=True, env=_environment(), cwd=out)
    return json.loads((out / "predictions.json").read_text())


def ours_speed(checkpoint: str, test_images: list[Path]) -> float:
    """Fields/s of our detector, from the JPEG path to boxes, one field at a time, ONNX Runtime on one thread (two
    threads stall at every barrier when other jobs share the cores)."""
    from leukolens.data.cells import load_image
    from leukolens.predict.fields import Detector

    detector = Detector.from_checkpoint(checkpoint, cache_dir=FOLDER / "onnx-cache", threads=1)  # as YOLO's child
    detector.detect([load_image(test_images[0])], threshold=0.01)  # export and warm-up
    started = time.perf_counter()
    for path in test_images:
        detector.detect([load_image(path)], threshold=0.01)
    return len(test_images) / (time.perf_counter() - started)


def ours_config() -> TrainDetectorConfig:
    """Our side: the shipped detector's recipe on BCCD train alone, ``MINUTES`` on one thread."""
    return TrainDetectorConfig(data=str(SHARED / "bccd"), input_size=IMAGE_SIZE, epochs=40, steps_per_epoch=100,
                               max_minutes=MINUTES, threads=1)


def train_ours() -> dict:
    return train_run("peer", f"ours-{MINUTES:g}min", ours_config())


def run() -> str:
    dataset = read_dataset(SHARED / "bccd", log=ProblemLog())
    test = dataset.splits["test"]
    ours = train_ours()
    ours_report = evaluate_run(ours, SHARED / "bccd")
    ours_fps = ours_speed(ours["checkpoint"], [f.image for f in test])
    try:
        yolo = run_yolo(MINUTES, [f.image for f in test])
    except (subprocess.CalledProcessError, OSError) as error:
        return (f"## Peer: YOLO11n side by side\n\nThe YOLO11n run failed ({error}); see the log. Ours at "
                f"{MINUTES:g} minutes: BCCD test mAP50 {number(ours_report['mAP50'])}.")
    detections = [
        Detections(np.array(p["boxes"], np.float32).reshape(-1, 4), np.array(p["scores"], np.float32),
                   np.array(p["labels"], np.int64))
        for p in yolo["predictions"]
    ]
    yolo_report = evaluate_detections(test, detections, dataset.classes, threshold=0.25)

    def row(name: str, report: dict, trained: str, fps: float) -> str:
        per_class = report["per_class"]
        return (f"| {name} | {trained} | **{number(report['mAP50'])}** | {number(per_class['WBC']['AP50'])} | "
                f"{number(per_class['RBC']['AP50'])} | {number(per_class['Platelets']['AP50'])} | "
                f"{number(report['mAP'])} | {fps:.1f} |")

    lines = [
        "## Peer: YOLO11n side by side",
        "",
        f"Both trained on BCCD train (205 fields) for {MINUTES:g} minutes of wall time on this machine, at the "
        "same time, one torch thread each (one core each), selected on BCCD val, and scored by leukolens's "
        "evaluator (`leukolens.eval.detection`, COCO AP via faster-coco-eval) on the 72 BCCD test fields. Both at "
        f"{IMAGE_SIZE} px. YOLO11n from `yolo11n.yaml` (no pretrained weights), batch 16, ultralytics' default "
        "augmentation, in its own virtual environment (AGPL: a peer, not a dependency); ours: the shipped "
        "detector's recipe (ImageNet EfficientNet-Lite0, windows of 320 px, batch 8) on BCCD train alone. Speed: "
        "JPEG path to boxes, batch 1, after a warm-up, one thread each (ours through ONNX Runtime, YOLO11n through "
        "PyTorch), measured one after the other while another one-thread job used the other core.",
        "",
        "| detector | training | mAP50 | WBC AP50 | RBC AP50 | Platelets AP50 | mAP@[.5:.95] | fields/s (batch 1) |",
        "|---|---|---|---|---|---|---|---|",
        row("leukolens CenterNet (EfficientNet-Lite0)", ours_report,
            f"{ours['steps']} steps of 8 windows, {ours['minutes']} min", ours_fps),
        row("Ultralytics YOLO11n (from yaml)", yolo_report,
            f"{yolo.get('epochs')} epochs ({(yolo.get('epochs') or 0) * -(-205 // 16)} steps of 16 images), "
            f"{yolo['train_seconds'] / 60:.1f} min with its final validation", yolo["fields_per_second"]),
        "",
    ]
    ahead = ours_report["mAP50"] > yolo_report["mAP50"] and ours_fps > yolo["fields_per_second"]
    lines.append(f"Target: ahead of YOLO11n in the same run on AP50 and fields/s: **{'met' if ahead else 'missed'}**.")
    return "\n".join(lines)


if __name__ == "__main__":
    # ``python -m benchmarks.yolo_peer ours|yolo`` trains one side only (run both at once, one per core).
    side = sys.argv[1] if len(sys.argv) > 1 else ""
    if side == "ours":
        train_ours()
    elif side == "yolo":
        run_yolo(MINUTES, [f.image for f in read_dataset(SHARED / "bccd", log=ProblemLog()).splits["test"]])
    else:
        print(run())
