"""Detector evaluation: COCO mAP@[.5:.95] and AP50 per class (faster-coco-eval, pycocotools' numbers, about 4x
faster), the counting error per field, and predictions as a COCO results file.

COCO's AP interpolates precision at 101 recall points: a class with two boxes of which one is found (first, at
precision 1) scores 51/101 = 0.505, not 0.5. Classes without any ground-truth box in the evaluated fields are left
out of the means (reported as null).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from leukolens.data.fields import boxes_of
from leukolens.io.common import LeukolensError, atomic_write_text
from leukolens.models.detector import Detections
from leukolens.records import Field, Vocabulary


def coco_ground_truth(fields: Sequence[Field], classes: Vocabulary) -> dict:
    """The fields' boxes as a COCO ground-truth dict; image ids are positions (1-based), category ids class + 1."""
    images, annotations = [], []
    for image_id, f in enumerate(fields, start=1):
        images.append({"id": image_id, "file_name": str(f.image), "width": f.width, "height": f.height})
        boxes, labels = boxes_of(f, classes)
        for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes.names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_results(detections: Sequence[Detections]) -> list[dict]:
    """Detections per field (same order as the fields) as a COCO results list (bbox as x, y, width, height)."""
    results = []
    for image_id, found in enumerate(detections, start=1):
        for (x1, y1, x2, y2), score, label in zip(found.boxes.tolist(), found.scores.tolist(), found.labels.tolist()):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "score": round(float(score), 5),
                }
            )
    return results


def coco_metrics(ground_truth: dict, results: list[dict], classes: Vocabulary) -> dict:
    """mAP@[.5:.95], mAP50, and AP / AP50 per class."""
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        raise LeukolensError("detector evaluation needs faster-coco-eval: pip install 'leukolens[eval]'") from None

    quiet = lambda *args, **kwargs: None  # noqa: E731
    gt = COCO(ground_truth, print_function=quiet)
    per_class = {name: {"AP": None, "AP50": None, "boxes": 0} for name in classes.names}
    for a in ground_truth["annotations"]:
        per_class[classes.names[a["category_id"] - 1]]["boxes"] += 1
    if results:
        dt = gt.loadRes(results)
        evaluator = COCOeval_faster(gt, dt, "bbox", print_function=quiet)
        evaluator.params.maxDets = [1, 10, 300]  # a field holds up to ~100 cells; COCO's 100 would cut some
        evaluator.evaluate()
        evaluator.accumulate()
        precision = evaluator.eval["precision"]  # [iou thresholds, recall points, classes, areas, max dets]
        for k, name in enumerate(classes.names):
            if per_class[name]["boxes"] == 0:
                continue
            curve = precision[:, :, k, 0, -1]  # area "all", most detections
            per_class[name]["AP"] = float(np.mean(np.where(curve < 0, 0, curve)))
            per_class[name]["AP50"] = float(np.mean(np.where(curve[0] < 0, 0, curve[0])))
    else:
        for numbers in per_class.values():
            if numbers["boxes"]:
                numbers["AP"], numbers["AP50"] = 0.0, 0.0
    present = [v for v in per_class.values() if v["AP"] is not None]
    return {
        "mAP": float(np.mean([v["AP"] for v in present])) if present else None,
        "mAP50": float(np.mean([v["AP50"] for v in present])) if present else None,
        "per_class": per_class,
    }


def counting_error(
    fields: Sequence[Field], detections: Sequence[Detections], classes: Vocabulary, *, threshold: float
) -> dict:
    """Per class: mean absolute error of the count per field (detections scoring at least ``threshold``), mean
    signed error (positive: over-counting), and the true count per field."""
    out = {}
    for k, name in enumerate(classes.names):
        true = np.array([sum(c.label == name for c in f.cells) for f in fields], dtype=np.float64)
        found = np.array([int(((d.labels == k) & (d.scores >= threshold)).sum()) for d in detections], np.float64)
        out[name] = {
            "mae": float(np.abs(found - true).mean()) if len(true) else None,
            "bias": float((found - true).mean()) if len(true) else None,
            "mean_true": float(true.mean()) if len(true) else None,
        }
    return out


def within_annotation(field: Field, found: Detections) -> Detections:
    """The detections a field's labels can judge: all of them in a fully annotated field; in a sparsely annotated
    one, those whose centre lies in an annotated region (outside, a cell may be real but unlabelled)."""
    if not field.regions:
        return found
    centres = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2
    inside = np.zeros(len(found), bool)
    for region in field.regions:
        x1, y1, x2, y2 = region.pixels_xyxy(field.size)
        inside |= (centres[:, 0] >= x1) & (centres[:, 0] <= x2) & (centres[:, 1] >= y1) & (centres[:, 1] <= y2)
    return Detections(found.boxes[inside], found.scores[inside], found.labels[inside])


def evaluate_detections(
    fields: Sequence[Field], detections: Sequence[Detections], classes: Vocabulary, *, threshold: float
) -> dict:
    """Every detector number for these fields (sparsely annotated fields judged inside their regions only)."""
    detections = [within_annotation(f, d) for f, d in zip(fields, detections)]
    metrics = coco_metrics(coco_ground_truth(fields, classes), coco_results(detections), classes)
    metrics["counting"] = counting_error(fields, detections, classes, threshold=threshold)
    metrics["fields"] = len(fields)
    metrics["score_threshold"] = threshold
    return metrics


def detect_fields(detector, fields: Sequence[Field], *, progress: Callable | None = None) -> list[Detections]:
    """Run a :class:`~leukolens.predict.fields.Detector` on fields at a low threshold (AP needs the whole ranking)."""
    from leukolens.data.cells import load_image

    out = []
    for f in progress(fields) if progress else fields:
        out.extend(detector.detect([load_image(f.image)], threshold=0.01))
    return out


def evaluate_detector(
    detector,
    data: str | Path,
    *,
    split: str = "test",
    results_path: str | Path | None = None,
    sources: Sequence[str] = (),
    domain_key: str = "source",
    progress: Callable | None = None,
) -> dict:
    """Evaluate a detector on one split of a data set; optionally write the COCO results file.

    Args:
        detector: a :class:`leukolens.predict.Detector` (anything with ``detect(images)``, ``classes``,
            ``score_threshold`` and ``path``), built by the caller so that evaluation stays below prediction.
        sources: only the fields whose ``Field.domain`` value ``domain_key`` is one of these (e.g. TXL-PBC's four
            sources, or synthetic microscopes with ``domain_key="microscope"``); empty: all.
    """
    from leukolens.io import ProblemLog, read_dataset

    dataset = read_dataset(data, log=ProblemLog())
    fields = dataset.fields if split == "all" else dataset.splits.get(split, [])
    if sources:
        fields = [f for f in fields if getattr(f.domain, domain_key) in sources]
    if not fields:
        raise LeukolensError(
            f"{data}: no fields in split {split!r}" + (f" from sources {', '.join(sources)}" if sources else "")
            + f" (splits: {', '.join(dataset.splits) or 'none'})"
        )
    classes = Vocabulary("detector", detector.classes)
    started = time.perf_counter()
    detections = detect_fields(detector, fields, progress=progress)
    seconds = time.perf_counter() - started
    report = evaluate_detections(fields, detections, classes, threshold=detector.score_threshold)
    report.update(
        {"checkpoint": str(getattr(detector, "path", "")), "data": str(data), "split": split, "sources": list(sources),
         "fields_per_second": len(fields) / seconds}
    )
    if results_path:
        results = coco_results(detections)
        for r in results:  # name the image, so the file stands on its own
            r["file_name"] = str(fields[r["image_id"] - 1].image)
        atomic_write_text(results_path, json.dumps(results) + "\n")
        report["results"] = str(results_path)
    return report


def format_report(report: dict) -> str:
    def number(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        f"{report.get('data', '')} [{report.get('split', '')}]: {report['fields']} fields; "
        f"mAP@[.5:.95] {number(report['mAP'])}, mAP50 {number(report['mAP50'])}",
        f"  {'class':<10} {'boxes':>6} {'AP50':>6} {'AP':>6} {'count MAE':>10} {'bias':>6}",
    ]
    for name, v in report["per_class"].items():
        c = report["counting"][name]
        lines.append(
            f"  {name:<10} {v['boxes']:>6} {number(v['AP50']):>6} {number(v['AP']):>6} {number(c['mae']):>10} "
            f"{c['bias']:>+6.2f}"
        )
    if "fields_per_second" in report:
        lines.append(f"  {report['fields_per_second']:.1f} fields/s (decode + detect)")
    return "\n".join(lines)
