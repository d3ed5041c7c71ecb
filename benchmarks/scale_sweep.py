"""The detector across magnifications, as a user's microscope gives them: WBC AP50 of the shipped detector with plain
letterboxing (``scale="letterbox"``: the field's longer side to the input size, as in training) and with the scale
estimated from the field's own red cells and the field tiled at the working scale (``scale="auto"``,
:mod:`leukolens.predict.scale`).

Resizing a whole field and letterboxing it gives the original scale back, so the simulated fields stay 640x480 and
change what they hold:

- zoom 0.33x and 0.5x: a mosaic of 3x3 / 2x2 BCCD test fields, each shrunk by the zoom and tiled into one 640x480
  field (a lower magnification sees more of the slide); 0.75x: the same with fields shrunk by 0.75 placed from the
  top-left, so the right and bottom ones are partial;
- zoom 1.5x, 2x, 3x: the field's centre (1/zoom of each side) enlarged back to 640x480;
- annotations moved with the pixels; a box cut by a field's edge is clipped and kept when at least half of it is
  visible.

Also Chula's low-cost-camera fields (960x600, white cells only boxed: only WBC is scored), one scale per slide as
``analyze`` does, and BCCD test fields upsampled 4.05x to 2592x1944 (what a large camera gives at BCCD's
magnification). Runs the shipped detector on ONNX Runtime, one thread; trains nothing. About four minutes on two
cores with ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
ZOOMS = (0.33, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
FIELDS = 12  # simulated fields per zoom (BCCD test fields taken in turn)
SAMPLE = 3  # fields per simulated sample: one scale estimated from their red cells, as `analyze` does
CHULA_EVERY = 12  # every 12th Chula field
LARGE_FIELDS = 8
WIDTH, HEIGHT = 640, 480
BCCD_WORKING = 0.8  # BCCD's 640x480 letterboxed to 512: the scale the shipped detector learnt


# ------------------------------------------------------------------------------------------------------ fields
def kept_boxes(boxes: np.ndarray, window: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``[n, 4]`` clipped to ``window`` (x1, y1, x2, y2) and which are kept (at least half visible)."""
    x1, y1, x2, y2 = window
    clipped = np.stack(
        [boxes[:, 0].clip(x1, x2), boxes[:, 1].clip(y1, y2), boxes[:, 2].clip(x1, x2), boxes[:, 3].clip(y1, y2)], 1
    )
    area = lambda b: (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)  # noqa: E731
    return clipped, area(clipped) >= 0.5 * np.maximum(area(boxes), 1e-9)


def mosaic(sources: Sequence[tuple[np.ndarray, np.ndarray]], zoom: float) -> tuple[np.ndarray, np.ndarray]:
    """Fields (image, WBC boxes) shrunk by ``zoom`` and tiled from the top-left into one 640x480 field, row by row,
    as many as fit (``ceil(1 / zoom)`` a side); boxes moved, clipped to the field, kept when at least half visible."""
    per_side = math.ceil(1 / zoom - 1e-6)
    canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    boxes = []
    for k, (image, wbc) in enumerate(sources[: per_side * per_side]):
        row, col = divmod(k, per_side)
        x0, y0 = round(col * WIDTH * zoom), round(row * HEIGHT * zoom)
        slot_w, slot_h = round((col + 1) * WIDTH * zoom) - x0, round((row + 1) * HEIGHT * zoom) - y0
        x1, y1 = min(WIDTH, x0 + slot_w), min(HEIGHT, y0 + slot_h)
        shrunk = np.asarray(Image.fromarray(image).resize((slot_w, slot_h), Image.BILINEAR))
        canvas[y0:y1, x0:x1] = shrunk[: y1 - y0, : x1 - x0]
        sx, sy = shrunk.shape[1] / image.shape[1], shrunk.shape[0] / image.shape[0]
        moved = wbc * np.array([sx, sy, sx, sy], np.float32) + np.array([x0, y0, x0, y0], np.float32)
        clipped, keep = kept_boxes(moved, (x0, y0, x1, y1))
        boxes.append(clipped[keep])
    return canvas, np.concatenate(boxes).reshape(-1, 4)


def centre_crop(image: np.ndarray, wbc: np.ndarray, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    """The centre 1/``zoom`` of the field enlarged back to its size; boxes cropped (kept when at least half
    visible) and moved."""
    height, width = image.shape[:2]
    crop_w, crop_h = round(width / zoom), round(height / zoom)
    x0, y0 = (width - crop_w) // 2, (height - crop_h) // 2
    crop = Image.fromarray(image[y0 : y0 + crop_h, x0 : x0 + crop_w])
    clipped, keep = kept_boxes(wbc, (x0, y0, x0 + crop_w, y0 + crop_h))
    sx, sy = width / crop_w, height / crop_h
    moved = (clipped[keep] - np.array([x0, y0, x0, y0], np.float32)) * np.array([sx, sy, sx, sy], np.float32)
    return np.asarray(crop.resize((width, height), Image.BILINEAR)), moved


def true_zoom(zoom: float) -> float:
    """0.33 is a 3x3 mosaic: 1/3 exactly, so that the fields tile the canvas."""
    return 1 / round(1 / zoom) if zoom < 1 and abs(1 / zoom - round(1 / zoom)) < 0.05 else zoom


def simulated(sources: Sequence[tuple[np.ndarray, np.ndarray]], zoom: float, count: int):
    """``count`` 640x480 fields at ``zoom``: mosaics below 1, centre crops above, the fields themselves at 1."""
    zoom = true_zoom(zoom)
    if zoom < 1:
        per_field = math.ceil(1 / zoom - 1e-6) ** 2
        return [
            mosaic([sources[(i * per_field + k) % len(sources)] for k in range(per_field)], zoom) for i in range(count)
        ]
    if zoom == 1:
        return list(sources[:count])
    return [centre_crop(*sources[i % len(sources)], zoom) for i in range(count)]


# ------------------------------------------------------------------------------------------------------ scoring
def wbc_ap50(truth: Sequence[np.ndarray], found, wbc: int) -> float:
    """COCO AP50 of the white cells: ``truth`` WBC boxes per field, ``found`` FieldDetections per field."""
    from leukolens.eval.detection import coco_metrics, coco_results
    from leukolens.models.detector import Detections
    from leukolens.records import Vocabulary

    images, annotations = [], []
    for image_id, boxes in enumerate(truth, start=1):
        images.append({"id": image_id, "file_name": str(image_id), "width": WIDTH, "height": HEIGHT})
        for x1, y1, x2, y2 in np.asarray(boxes, float).tolist():
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    ground_truth = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "WBC"}]}
    only_wbc = [Detections(f.boxes[f.labels == wbc], f.scores[f.labels == wbc], np.zeros((f.labels == wbc).sum(), int))
                for f in found]
    return coco_metrics(ground_truth, coco_results(only_wbc), Vocabulary("wbc", ("WBC",)))["per_class"]["WBC"]["AP50"]


def estimated_factor(detector, scale) -> float:
    """The working factor the estimate found (before a field just over one input is fitted into it)."""
    from leukolens.predict.scale import RBC_MICRONS

    if scale.microns_per_pixel is None:
        return scale.factor
    return detector.scale_config.rbc_diameter * scale.microns_per_pixel / RBC_MICRONS


def in_samples(count: int) -> list[list[int]]:
    """Field indices in consecutive samples of :data:`SAMPLE` fields."""
    return [list(range(i, min(i + SAMPLE, count))) for i in range(0, count, SAMPLE)]


def detect_both(detector, images: Sequence[np.ndarray], *, samples: Sequence[Sequence[int]]) -> dict:
    """Detections with letterbox and with auto scale (one estimate per group of ``samples``, from their red cells
    pooled), and the seconds each took."""
    pil = [Image.fromarray(image) for image in images]
    started = time.perf_counter()
    plain = detector.detect(pil, scale="letterbox", threshold=0.01)
    letterbox_s = time.perf_counter() - started
    auto: list = [None] * len(pil)
    started = time.perf_counter()
    for group in samples:
        scale = detector.sample_scale([pil[i] for i in group])
        for i, found in zip(group, detector.detect([pil[i] for i in group], threshold=0.01, field_scale=scale)):
            auto[i] = found
    return {"letterbox": plain, "auto": auto, "seconds": (letterbox_s, time.perf_counter() - started)}


def compare(detector, images: Sequence[np.ndarray], truth, *, samples: Sequence[Sequence[int]]) -> dict:
    """WBC AP50 with letterbox and with auto scale (:func:`detect_both`), the factors used, fallbacks, and seconds
    per field of each."""
    wbc = detector.classes.index("WBC")
    found = detect_both(detector, images, samples=samples)
    plain, auto = found["letterbox"], found["auto"]
    letterbox_s, auto_s = found["seconds"]
    return {
        "letterbox": wbc_ap50(truth, plain, wbc),
        "auto": wbc_ap50(truth, auto, wbc),
        "factors": np.array([estimated_factor(detector, f.scale) for f in auto]),
        "fallbacks": sum(f.scale.method.startswith("fallback") for f in auto),
        "tiles": max(f.tiles for f in auto),
        "seconds": (letterbox_s / len(images), auto_s / len(images)),
    }


def run() -> str:
    from leukolens.data.cells import load_image
    from leukolens.io import ProblemLog, read_dataset
    from leukolens.predict.fields import Detector
    from leukolens.predict.scale import resize

    title = "## Scale sweep: the detector on fields at other magnifications"
    if not (SHARED / "bccd").is_dir():
        return f"{title}\n\nNo BCCD data at {SHARED / 'bccd'}."
    detector = Detector.from_checkpoint(threads=1)
    test = read_dataset(SHARED / "bccd", log=ProblemLog()).splits["test"]

    def wbc_boxes(field) -> np.ndarray:
        return np.array([c.box.pixels_xyxy(field.size) for c in field.cells if c.label == "WBC"], np.float32).reshape(
            -1, 4
        )

    sources = [(np.asarray(load_image(f.image).convert("RGB").resize((WIDTH, HEIGHT))), wbc_boxes(f)) for f in test]
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale_sweep.py"
    lines = [
        title,
        "",
        f"`{command}`. BCCD test fields ({len(test)}) made into {FIELDS} 640x480 fields per zoom: below 1x a mosaic of "
        "fields each shrunk by the zoom (3x3 at 0.33x, 2x2 at 0.5x, 2x2 from the top-left at 0.75x so three are "
        "partial), above 1x the centre 1/zoom of a field enlarged back to 640x480; boxes moved with the pixels, "
        "clipped, kept when at least half visible. WBC AP50 (COCO) of the shipped detector. *letterbox*: the field's "
        "longer side to the input size, as in training (`scale=\"letterbox\"`). *auto*: the scale estimated from the "
        "field's own red cells, the field resized to the working scale and cut into overlapping input-size tiles "
        f"when larger, merged by NMS (`scale=\"auto\"`; one estimate per simulated sample of {SAMPLE} fields, from "
        "their red cells pooled, as `analyze` does; a field at most 1.2x larger than one input at the estimated factor "
        "is fitted into one input). Factor error: |estimated / true - 1|, the true factor being "
        f"{BCCD_WORKING} / zoom.",
        "",
        "| zoom | WBC AP50 letterbox | WBC AP50 auto | factor error median | max | fallbacks | tiles (most) |",
        "|---|---|---|---|---|---|---|",
    ]
    seconds = []
    for zoom in ZOOMS:
        made = simulated(sources, zoom, FIELDS)
        result = compare(detector, [m[0] for m in made], [m[1] for m in made], samples=in_samples(len(made)))
        errors = np.abs(result["factors"] / (BCCD_WORKING / true_zoom(zoom)) - 1)
        seconds.append(result["seconds"])
        lines.append(
            f"| {zoom}x | {result['letterbox']:.3f} | **{result['auto']:.3f}** | {np.median(errors):.1%} | "
            f"{errors.max():.1%} | {result['fallbacks']} | {result['tiles']} |"
        )
    # A large camera at BCCD's magnification: the same fields upsampled to 2592x1944.
    large = [(resize(image, 2592 / WIDTH), boxes * np.float32(2592 / WIDTH)) for image, boxes in
             sources[:: max(1, len(sources) // LARGE_FIELDS)][:LARGE_FIELDS]]
    result = compare(detector, [m[0] for m in large], [m[1] for m in large], samples=in_samples(len(large)))
    errors = np.abs(result["factors"] / (BCCD_WORKING * WIDTH / 2592) - 1)
    lines += [
        "",
        "| field | WBC AP50 letterbox | WBC AP50 auto | notes |",
        "|---|---|---|---|",
        f"| BCCD upsampled 4.05x to 2592x1944 ({len(large)} fields) | {result['letterbox']:.3f} | "
        f"**{result['auto']:.3f}** | factor error median {np.median(errors):.1%}, {result['fallbacks']} fallbacks, "
        f"at most {result['tiles']} tile(s); {result['seconds'][0] * 1000:.0f} / {result['seconds'][1] * 1000:.0f} "
        f"ms per field letterbox / auto (one estimate per {SAMPLE} fields) |",
    ]
    if (SHARED / "chula").is_dir():
        chula = read_dataset(SHARED / "chula", log=ProblemLog()).fields[::CHULA_EVERY]
        with open(SHARED / "chula" / "fields.csv", newline="") as handle:
            slide = {row["image"]: row["sample_id"] for row in csv.DictReader(handle)}
        samples: dict[str, list[int]] = {}
        for i, f in enumerate(chula):
            samples.setdefault(slide.get(Path(f.image).name, f.id), []).append(i)
        truth = [np.array([c.box.pixels_xyxy(f.size) for c in f.cells], np.float32).reshape(-1, 4) for f in chula]
        images = [np.asarray(load_image(f.image).convert("RGB")) for f in chula]
        result = compare(detector, images, truth, samples=list(samples.values()))
        lines.append(
            f"| Chula, Raspberry Pi camera, 960x600 ({len(chula)} fields, {len(samples)} slides, one scale per slide) "
            f"| {result['letterbox']:.3f} | **{result['auto']:.3f}** | factor median {np.median(result['factors']):.3f}"
            f" (letterbox {512 / 960:.3f}); {result['fallbacks']} fields on the fallback |"
        )
    letterbox_ms, auto_ms = (1000 * np.mean([s[i] for s in seconds]) for i in (0, 1))
    lines += [
        "",
        f"Time per 640x480 field (ONNX Runtime, one thread): letterbox {letterbox_ms:.0f} ms, auto {auto_ms:.0f} ms "
        f"with one scale estimate per {SAMPLE} fields (6-8 forward passes per field it looks at); `analyze` estimates "
        "once per sample. Target: WBC AP50 at least 0.95 at every zoom.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
