"""The field detector, measured: BCCD test AP per class and mAP, TXL-PBC test WBC AP50, `analyze` fields/s end to
end on BCCD test fields, and how the shipped weights were trained, beside published and peer figures.

Expects the shipped detector (``make weights-detector``); trains nothing itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from leukolens.eval.detection import evaluate_detector
from leukolens.io import ProblemLog, read_dataset
from leukolens.models.detector import load_detector
from leukolens.predict.fields import Detector
from leukolens.predict.weights import default_checkpoint, default_detector

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
PUBLISHED = (
    ("YOLOv8n on BCCD (published)", "0.90-0.92", "", "", ""),
    ("best BCCD-specific YOLO (published)", "0.947", "", "", ""),
    ("our YOLO11n calibration (20 min CPU, 512 px; 32 fields/s batch 1)", "0.833", "0.970", "0.795", "0.733"),
)


def _number(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _analyze_speed(fields: list[Path]) -> tuple[float, str]:
    """Fields/s of `leukolens analyze` on these files (JPEG decode, detector, cell model, JSON and PNG written)."""
    from leukolens.analyze import analyze

    with tempfile.TemporaryDirectory() as folder:
        sample = Path(folder) / "sample"
        sample.mkdir()
        for path in fields:
            shutil.copy(path, sample / path.name)
        analyze([sample], out=Path(folder) / "warm", log=lambda _: None)  # ONNX export and warm-up
        started = time.perf_counter()
        summary = analyze([sample], out=Path(folder) / "out", log=lambda _: None)
        seconds = time.perf_counter() - started
    note = "" if summary["wbc_typed"] else " (no shipped cell model yet: detection, JSON and PNG only)"
    return len(fields) / seconds, note


PREVIOUS = "fe0e64c"  # the last commit whose shipped detector learnt from BCCD and TXL-PBC only


def _previous_detector() -> Path | None:
    """The previous shipped detector (BCCD and TXL-PBC only), from git, for a side-by-side on Chula."""
    import subprocess

    out = REPO / "out" / "previous-detector.pt"
    if not out.is_file():
        shown = subprocess.run(["git", "show", f"{PREVIOUS}:src/leukolens/weights/detector-bccd.pt"], cwd=REPO,
                               capture_output=True)
        if shown.returncode:
            return None
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(shown.stdout)
    return out


def chula_slides(detector: Detector, *, scale: str = "auto") -> tuple[float | None, int]:
    """WBC AP50 on Chula's validation slides (whole slides never trained on; the shipped detector's selection
    used them), only white cells being boxed there."""
    from leukolens.eval.detection import detect_fields, evaluate_detections
    from leukolens.records import Vocabulary
    from leukolens.train.detector import _extra_dataset

    classes = Vocabulary("detector", detector.classes)
    dataset, _ = _extra_dataset(str(SHARED / "chula"), classes, ())
    fields = dataset.splits["val"]

    class AtScale:  # the detector at a chosen scale mode, as eval calls it
        def detect(self, images, threshold):
            return detector.detect(images, threshold=threshold, scale=scale)

    report = evaluate_detections(fields, detect_fields(AtScale(), fields), classes,
                                 threshold=detector.score_threshold)
    return report["per_class"]["WBC"]["AP50"], len(fields)


def _large_fields(fields: list[Path], folder: Path, factor: float = 2592 / 640) -> list[Path]:
    """BCCD fields upsampled to 2592x1944: what a large camera gives at BCCD's magnification."""
    from PIL import Image

    out = []
    for path in fields:
        with Image.open(path) as image:
            large = image.convert("RGB").resize((round(image.width * factor), round(image.height * factor)))
        large.save(folder / path.name, quality=90)
        out.append(folder / path.name)
    return out


def run() -> str:
    path = default_detector()
    if not path.is_file():
        return "## Field detector\n\nNo shipped detector: run `make weights-detector` first."
    checkpoint = load_detector(path)
    bccd = evaluate_detector(Detector.from_checkpoint(path), SHARED / "bccd", split="test")
    txl = evaluate_detector(Detector.from_checkpoint(path), SHARED / "txl_pbc", split="test")
    test_fields = [f.image for f in read_dataset(SHARED / "bccd", log=ProblemLog()).splits["test"]]
    fields_per_second, note = _analyze_speed(test_fields)
    with tempfile.TemporaryDirectory() as folder:
        large_per_second, _ = _analyze_speed(_large_fields(test_fields[:10], Path(folder)))
    chula = {"shipped, auto scale": chula_slides(Detector.from_checkpoint(path))}
    previous = _previous_detector()
    if previous is not None:
        for mode in ("letterbox", "auto"):
            name = f"previous (BCCD + TXL-PBC only), {mode}"
            chula[name] = chula_slides(Detector.from_checkpoint(previous), scale=mode)
    history = checkpoint.train.get("history", [])
    minutes = history[-1]["minutes"] if history else None
    train = checkpoint.train
    command = (
        f"leukolens train detector --data {train.get('data')} "
        + (f"--extra-data {' '.join(train.get('extra_data', []))} " if train.get("extra_data") else "")
        + (f"--extra-classes {' '.join(train.get('extra_classes', []))} " if train.get("extra_classes") else "")
        + ("--match-scale " if train.get("match_scale") else "")
        + f"--epochs {train.get('epochs')} --steps-per-epoch {train.get('steps_per_epoch')} "
        f"--max-minutes {train.get('max_minutes')}"
    )
    per_class = bccd["per_class"]
    lines = [
        "## Field detector (WBC, RBC, platelets)",
        "",
        f"Shipped weights `{path.relative_to(REPO) if path.is_relative_to(REPO) else path}` "
        f"({path.stat().st_size / 1e6:.1f} MB, float16): CenterNet on EfficientNet-Lite0, stride "
        f"{checkpoint.config.stride}, fields at {checkpoint.input_size} px. Trained with `{command}` "
        f"in {minutes} minutes on this machine ({len(history)} epochs), selected on validation mAP50.",
        "",
        "| BCCD test (72 fields) | mAP50 | WBC AP50 | RBC AP50 | Platelets AP50 | mAP@[.5:.95] |",
        "|---|---|---|---|---|---|",
        f"| leukolens detector | **{_number(bccd['mAP50'])}** | {_number(per_class['WBC']['AP50'])} | "
        f"{_number(per_class['RBC']['AP50'])} | {_number(per_class['Platelets']['AP50'])} | {_number(bccd['mAP'])} |",
    ]
    for name, map50, wbc, rbc, platelets in PUBLISHED:
        lines.append(f"| {name} | {map50} | {wbc or '-'} | {rbc or '-'} | {platelets or '-'} | - |")
    lines += [
        "| target | 0.95 | 0.99 | | | |",
        "",
        f"TXL-PBC test ({txl['fields']} fields, four sources): WBC AP50 **{_number(txl['per_class']['WBC']['AP50'])}**"
        f" (target 0.98), mAP50 {_number(txl['mAP50'])}, mAP@[.5:.95] {_number(txl['mAP'])}. TXL-PBC's test split "
        "holds BCCD images re-annotated, some of which are in BCCD's training split.",
        "",
        "Counting error per field on BCCD test (mean absolute error at the checkpoint's threshold "
        f"{checkpoint.score_threshold}): "
        + ", ".join(
            f"{name} {v['mae']:.2f} (bias {v['bias']:+.2f}, mean {v['mean_true']:.1f} per field)"
            for name, v in bccd["counting"].items()
        )
        + ".",
        "",
        "Chula's validation slides (a Raspberry Pi camera; " + f"{next(iter(chula.values()))[1]} fields, white cells "
        "only; the shipped detector trained on the other slides): WBC AP50 "
        + "; ".join(f"{name} **{_number(ap)}**" for name, (ap, _) in chula.items()) + ".",
        "",
        f"`leukolens analyze` end to end on the 72 BCCD test fields (decode, scale, detect, cell model on every WBC, "
        f"JSON and overlay PNG written): **{fields_per_second:.1f} fields/s**{note} (target 10); on 10 of them "
        f"upsampled to 2592x1944: **{large_per_second:.2f} fields/s** (target 2). Detection alone "
        f"(`eval detector`): {bccd['fields_per_second']:.1f} fields/s. Load average at the end: "
        f"{os.getloadavg()[0]:.1f}.",
        "",
        f"Cell model used by analyze: {'shipped' if default_checkpoint().is_file() else 'none shipped yet'}.",
    ]
    return "\n".join(lines)
