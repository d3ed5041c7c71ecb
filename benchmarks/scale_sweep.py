"""The detector across magnifications: BCCD test fields resized by 0.33x to 3x, WBC AP50 of the shipped detector
with plain letterboxing (the field's longer side to the input size, as in training) and with the field's scale
estimated from its own red cells and tiled at the working scale (:mod:`leukolens.predict.scale`), and how far off the
estimate is. Beside it, the detector-free alternative measured and not kept: granulometry of the red-cell mask.

Runs the shipped detector in eager PyTorch on a subset of the test fields (``FIELDS``); trains nothing. About three
minutes on two cores with ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import leukolens
from leukolens.models.detector import Detections

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
FACTORS = (0.33, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
FIELDS = 12  # BCCD test fields used (evenly spread over the 72)
BCCD_WORKING = 0.8  # BCCD's 640x480 letterboxed to 512: the scale the shipped detector learnt


def shipped_detect():
    """The shipped detector as ``detect(image) -> (boxes, scores, labels)`` at the image's own pixels (padded to a
    multiple of 32, never resized), and its class names."""
    import torch

    from leukolens.data.fields import PAD_COLOUR
    from leukolens.models.detector import FieldNetwork, decode, load_detector

    checkpoint = load_detector(Path(leukolens.__file__).parent / "weights" / "detector-bccd.pt")
    network = FieldNetwork(checkpoint.build(), checkpoint.mean, checkpoint.std).eval()

    def detect(image: np.ndarray):
        height, width = image.shape[:2]
        canvas = np.empty((1, -(-height // 32) * 32, -(-width // 32) * 32, 3), np.uint8)
        canvas[:] = PAD_COLOUR
        canvas[0, :height, :width] = image
        with torch.inference_mode():
            outputs = [o.numpy() for o in network(torch.from_numpy(canvas))]
        found = decode(*outputs, stride=checkpoint.config.stride, threshold=0.01)[0]
        centres = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2
        inside = (centres[:, 0] < width) & (centres[:, 1] < height)  # a peak in the padding is no cell
        boxes = found.boxes[inside].copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        return boxes, found.scores[inside], found.labels[inside]

    return detect, checkpoint


def mask_diameter(image: np.ndarray) -> float | None:
    """The detector-free alternative: median inscribed diameter of the components of the cell mask (green channel
    below its Otsu threshold, holes filled so a red cell's pale centre counts, opened), components cut by the border
    or smaller than 0.05% of the field left out; None with fewer than three."""
    from scipy import ndimage

    green = image[..., 1]
    hist = np.bincount(green.ravel(), minlength=256) / green.size
    below, mean_below = np.cumsum(hist), np.cumsum(hist * np.arange(256))
    between = (mean_below[-1] * below - mean_below) ** 2 / np.maximum(below * (1 - below), 1e-12)
    cells = ndimage.binary_opening(ndimage.binary_fill_holes(green < int(np.argmax(between))), iterations=2)
    labelled, count = ndimage.label(cells)
    if count == 0:
        return None
    index = np.arange(1, count + 1)
    inscribed = 2 * ndimage.maximum(ndimage.distance_transform_edt(cells), labelled, index)
    area = ndimage.sum(cells, labelled, index)
    border = np.unique(np.concatenate([labelled[0], labelled[-1], labelled[:, 0], labelled[:, -1]]))
    kept = (area > 0.0005 * cells.size) & ~np.isin(index, border)
    return float(np.median(inscribed[kept])) if kept.sum() >= 3 else None


def _wbc_ap50(fields, detections, classes) -> float:
    from leukolens.eval.detection import coco_ground_truth, coco_metrics, coco_results

    metrics = coco_metrics(coco_ground_truth(fields, classes), coco_results(detections), classes)
    return metrics["per_class"]["WBC"]["AP50"]


def run() -> str:
    from leukolens.data.cells import load_image
    from leukolens.io import ProblemLog, read_dataset
    from leukolens.predict.scale import RED_CELLS, detect_at_scale, estimate_scale, letterbox_factor, resize
    from leukolens.records import Vocabulary

    title = "## Scale sweep: the detector on fields at other magnifications"
    if not (SHARED / "bccd").is_dir():
        return f"{title}\n\nNo BCCD data at {SHARED / 'bccd'}."
    detect, checkpoint = shipped_detect()
    classes = Vocabulary("detector", checkpoint.classes)
    test = read_dataset(SHARED / "bccd", log=ProblemLog()).splits["test"]
    fields = test[:: max(1, len(test) // FIELDS)][:FIELDS]
    originals = [np.asarray(load_image(f.image)) for f in fields]
    rows, mask_ratios, seconds = {}, {}, {"letterbox": 0.0, "estimate": 0.0, "tiled": 0.0}
    for resized in FACTORS:
        plain, tiled, errors, fallbacks = [], [], [], 0
        for image in (resize(original, resized) for original in originals):
            height, width = image.shape[:2]
            to_original = np.float32(resized)  # detections are scored against the original annotations
            started = time.perf_counter()
            found = detect_at_scale(image, detect, factor=letterbox_factor(width, height, checkpoint.input_size))
            seconds["letterbox"] += time.perf_counter() - started
            plain.append(Detections(found.boxes / to_original, found.scores, found.labels))
            started = time.perf_counter()
            scale = estimate_scale(image, detect, classes=checkpoint.classes)
            seconds["estimate"] += time.perf_counter() - started
            started = time.perf_counter()
            found = detect_at_scale(image, detect, factor=scale.factor)
            seconds["tiled"] += time.perf_counter() - started
            tiled.append(Detections(found.boxes / to_original, found.scores, found.labels))
            fallbacks += scale.method != RED_CELLS
            errors.append(scale.factor / (BCCD_WORKING / resized) - 1)
            measured = mask_diameter(image)
            mask_ratios.setdefault(resized, []).append(None if measured is None else measured / resized)
        ap50 = _wbc_ap50(fields, plain, classes), _wbc_ap50(fields, tiled, classes)
        rows[resized] = (*ap50, np.abs(errors), fallbacks)
    # The mask's diameter, calibrated on the unresized fields (its own median there), as a factor error.
    unit = float(np.median([r for r in mask_ratios[1.0] if r is not None]))
    runs = len(FACTORS) * len(fields)
    lines = [
        title,
        "",
        f"{len(fields)} BCCD test fields (every {max(1, len(test) // FIELDS)}th), resized by each factor; boxes scored "
        "against the original annotations (COCO AP50, WBC). *Letterbox*: the field's longer side to "
        f"{checkpoint.input_size} px, as in training. *Estimate + tiles*: the factor from the field's red cells "
        "(`leukolens.predict.scale.estimate_scale`), the field resized by it and cut into overlapping "
        f"{checkpoint.input_size} px tiles when larger, merged by class-wise NMS. Factor error: |estimated / true - 1|"
        f", the true factor being {BCCD_WORKING} / resize (BCCD letterboxed, the scale the detector learnt).",
        "",
        "| resize | WBC AP50 letterbox | WBC AP50 estimate + tiles | factor error median | max | fallbacks "
        "| mask granulometry error median | max | no answer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for resized, (plain, tiled, errors, fallbacks) in rows.items():
        mask = [r for r in mask_ratios[resized] if r is not None]
        mask_errors = np.abs(np.array(mask) / unit - 1) if mask else np.array([np.nan])
        lines.append(
            f"| {resized}x | {plain:.3f} | **{tiled:.3f}** | {np.median(errors):.1%} | {errors.max():.1%} | "
            f"{fallbacks} | {np.median(mask_errors):.1%} | {mask_errors.max():.1%} | "
            f"{len(mask_ratios[resized]) - len(mask)} |"
        )
    lines += [
        "",
        "Mask granulometry: green channel below its Otsu threshold, holes filled, opened; the median inscribed "
        "diameter of components not cut by the border, calibrated by its own median on the unresized fields "
        "(which favours it); touching and overlapping red cells merge into larger components, so it is kept out.",
        "",
        f"Time per field (eager PyTorch, one thread): letterbox {seconds['letterbox'] / runs * 1000:.0f} ms; "
        f"estimate {seconds['estimate'] / runs * 1000:.0f} ms plus tiled detection "
        f"{seconds['tiled'] / runs * 1000:.0f} ms. Target: WBC AP50 at least 0.95 at every factor.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
