"""Colour normalisation of whole fields at detection time, on sources the detector never saw: does bringing a new
microscope's fields to the training colours help the detectors that trained without them?

Protocol (fixed before these runs; the detectors are those of :mod:`benchmarks.detector_loso`, trained without the
source, and the shipped detector for the in-domain check):
- Cases: the Chula-left-out detector on Chula fields, the PBC-left-out detector on TXL-PBC's PBC fields, the
  BCCD-left-out detector on BCCD fields (every sixth field of the source, for time), and the shipped detector on
  every third BCCD test field (in-domain: what normalising costs where nothing needs it).
- Normalisations, each field on its own, before the scale estimate and the detection (as ``Detector.normalise``
  would apply a stored reference):
  ``reinhard``: each CIELAB channel's mean and spread over the stained pixels matched to the primary training set's
  (:func:`leukolens.data.stain.reinhard_normalize`; primary: BCCD, or TXL-PBC's Raabin-WBC fields when BCCD is left
  out, the set that sets the working scale); ``reinhard, all sources``: the same with every training source in equal
  share; ``reinhard, light half``: statistics from the lighter half of the pixels only (background and red cells,
  whatever the white cells), to the primary set's; ``white balance``: each RGB channel scaled so that its 95th
  percentile (the background) matches the primary set's; ``red cells and background`` (added later, before its
  first run, with the rule unchanged): a first detection on the field as it is finds its red cells and its empty
  background; each channel is divided by the background's level (white balance) and its optical density scaled so
  that the red cells' median density matches the primary set's (Beer-Lambert: a stain's absorbance scales each
  channel's density), then the field is detected again. Anchoring on objects of a known kind, not on a field's
  overall statistics, is meant to keep a field that is mostly one white cell (CellaVision) from pulling the map.
  References from 24 training fields per source (every n-th, resized to 256x192; for the anchors, at full size and
  found by the same detector).
- Decision rule, fixed beforehand: a normalisation is worth shipping only if it loses at most 1 point of WBC AP50
  in every case.

WBC AP50 (and mAP50 where the set boxes every class) with :mod:`leukolens.eval.detection`, scale estimated from the
field's red cells. About 35 minutes on two cores; needs the runs of ``detector_loso`` in ``out/bench``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.detector_loso import source_fields
from benchmarks.detector_runs import SHARED
from leukolens.data.cells import load_image
from leukolens.data.stain import lab_to_rgb, reinhard_fit, reinhard_normalize, rgb_to_lab
from leukolens.eval.detection import evaluate_detections
from leukolens.io import ProblemLog, read_dataset
from leukolens.io.common import atomic_write_text
from leukolens.predict.fields import Detector
from leukolens.predict.weights import default_detector
from leukolens.records import Field, Vocabulary
from leukolens.train.detector import _extra_dataset

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "out" / "bench" / "detector-loso"
RESULTS = REPO / "benchmarks" / "results" / "detector_stain.json"
SOURCES = ("BCCD", "BCDD", "PBC", "Raabin-WBC", "Chula-WBC")
CASES = (  # (detector run, test source, primary training set)
    ("chula-wbc", "Chula-WBC", "BCCD"),
    ("pbc", "PBC", "BCCD"),
    ("bccd", "BCCD", "Raabin-WBC"),
    ("shipped", "BCCD test", "BCCD"),
)
REFERENCE_FIELDS = 24
MAX_LOSS = 0.01
ANCHOR_NAME = "red cells and background"
MIN_ANCHOR_RED_CELLS = 5
MIN_BACKGROUND_SHARE = 0.02  # of the field's pixels outside every detected cell


def training_fields(source: str) -> list[Field]:
    if source == "BCCD":
        fields = read_dataset(SHARED / "bccd", log=ProblemLog()).splits["train"]
    elif source == "Chula-WBC":
        dataset, _ = _extra_dataset(str(SHARED / "chula"), Vocabulary("d", ("RBC", "WBC", "Platelets")), ())
        fields = [f for f in dataset.fields if f.split == "train"]
    else:
        fields = [f for f in read_dataset(SHARED / "txl_pbc", log=ProblemLog()).fields
                  if f.domain.source == source and f.split == "train"]
    return fields[:: max(1, len(fields) // REFERENCE_FIELDS)][:REFERENCE_FIELDS]


def mosaic(sources) -> np.ndarray:
    return np.concatenate([np.asarray(load_image(f.image).convert("RGB").resize((256, 192)))
                           for s in sources for f in training_fields(s)], 0)


def _light_statistics(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = rgb_to_lab(image).reshape(-1, 3)
    light = lab[lab[:, 0] >= np.median(lab[:, 0])]
    return light.mean(0), light.std(0)


def normalisations(primary: str, held_out: str | None) -> dict[str, Callable[[np.ndarray], np.ndarray] | None]:
    """Each normalisation by name, its references from the training sources (``held_out``: the source left out of
    training, None for the shipped detector, which trained on every source)."""
    reference = mosaic((primary,))
    everything = mosaic(tuple(s for s in SOURCES if s != held_out))
    reinhard, pooled = reinhard_fit(reference), reinhard_fit(everything)
    light_mean, light_std = _light_statistics(reference)
    background = np.array([np.percentile(reference[..., c], 95) for c in range(3)])

    def light_half(image):
        mean, std = _light_statistics(image)
        return lab_to_rgb((rgb_to_lab(image) - mean) * (light_std / np.maximum(std, 1e-6)) + light_mean)

    def white_balance(image):
        here = np.array([np.percentile(image[..., c], 95) for c in range(3)])
        return np.clip(image * (background / np.maximum(here, 1)), 0, 255).astype(np.uint8)

    return {
        "none": None,
        "reinhard": lambda image: reinhard_normalize(image, reinhard),
        "reinhard, all sources": lambda image: reinhard_normalize(image, pooled),
        "reinhard, light half": light_half,
        "white balance": white_balance,
    }


def colour_anchors(image: np.ndarray, found, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """(background, red cell) median RGB of a field from its detections, or None with too few red cells or too
    little empty background. Red cells: the inner ellipse (80% of the box) of each red-cell box; background: the
    pixels outside every box grown by a fifth."""
    height, width = image.shape[:2]
    occupied = np.zeros((height, width), bool)
    inner = np.zeros((height, width), bool)
    red = classes.index("RBC")
    count = 0
    for (x1, y1, x2, y2), label in zip(found.boxes, found.labels):
        cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        top, left = max(0, int(cy - 1.2 * hh)), max(0, int(cx - 1.2 * hw))
        occupied[top: int(cy + 1.2 * hh) + 1, left: int(cx + 1.2 * hw) + 1] = True
        if label == red and hw >= 2 and hh >= 2:
            top, left = max(0, int(y1)), max(0, int(x1))
            yy, xx = np.mgrid[top: min(height, int(y2) + 1), left: min(width, int(x2) + 1)]
            inner[top: top + yy.shape[0], left: left + yy.shape[1]] |= (
                ((xx - cx) / (0.8 * hw)) ** 2 + ((yy - cy) / (0.8 * hh)) ** 2 <= 1)
            count += 1
    empty = ~occupied
    if count < MIN_ANCHOR_RED_CELLS or empty.mean() < MIN_BACKGROUND_SHARE:
        return None
    return np.median(image[empty], axis=0).astype(float), np.median(image[inner], axis=0).astype(float)


def anchored(image: np.ndarray, anchors, reference) -> np.ndarray:
    """The field white-balanced on its background and each channel's optical density scaled so that its red cells'
    matches the reference's (a factor between a third and three)."""
    (background, red), (ref_background, ref_red) = anchors, reference
    density = -np.log(np.clip(red, 1, None) / np.maximum(background, 1))
    ref_density = -np.log(np.clip(ref_red, 1, None) / np.maximum(ref_background, 1))
    factor = np.clip(ref_density / np.maximum(density, 0.02), 1 / 3, 3)
    transmission = np.clip((image.astype(float) + 0.5) / np.maximum(background, 1), 1e-3, None)
    return np.clip(ref_background * np.exp(np.log(transmission) * factor), 0, 255).astype(np.uint8)


def anchor_reference(detector: Detector, primary: str) -> tuple[np.ndarray, np.ndarray]:
    """The primary training set's anchors: medians over its reference fields, found by the same detector."""
    anchors = []
    for f in training_fields(primary):
        array = np.asarray(load_image(f.image).convert("RGB"))
        found = detector.detect([Image.fromarray(array)])[0]
        if (a := colour_anchors(array, found, detector.classes)) is not None:
            anchors.append(a)
    return np.median([a[0] for a in anchors], axis=0), np.median([a[1] for a in anchors], axis=0)


def detect_anchored(detector: Detector, array: np.ndarray, reference, *, threshold: float):
    """Detect, map the field's colours by its anchors, detect again (the field as it is when it has none)."""
    first = detector.detect([Image.fromarray(array)])[0]
    anchors = colour_anchors(array, first, detector.classes)
    mapped = array if anchors is None else anchored(array, anchors, reference)
    return detector.detect([Image.fromarray(mapped)], threshold=threshold)[0], anchors is not None


def measure() -> dict:
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for run, source, primary in CASES:
        key = f"{run}: {source}"
        if key in results and ANCHOR_NAME in results[key]["scores"]:
            continue
        path = default_detector() if run == "shipped" else RUNS / run / "best.pt"
        detector = Detector.from_checkpoint(path, engine="torch")
        classes = Vocabulary("detector", detector.classes)
        if source == "BCCD test":
            fields = read_dataset(SHARED / "bccd", log=ProblemLog()).splits["test"][::3]
        else:
            fields = source_fields(source, classes)[::6]
        arrays = [np.asarray(load_image(f.image).convert("RGB")) for f in fields]
        scores = results[key]["scores"] if key in results else {}
        for name, normalise in normalisations(primary, None if run == "shipped" else source).items():
            if name in scores:
                continue
            found = [detector.detect([Image.fromarray(normalise(a) if normalise else a)], threshold=0.01)[0]
                     for a in arrays]
            report = evaluate_detections(fields, found, classes, threshold=detector.score_threshold)
            scores[name] = {"wbc_ap50": report["per_class"]["WBC"]["AP50"], "map50": report.get("mAP50")}
            print(key, name, scores[name], flush=True)
        if ANCHOR_NAME not in scores:
            reference = anchor_reference(detector, primary)
            runs = [detect_anchored(detector, a, reference, threshold=0.01) for a in arrays]
            report = evaluate_detections(fields, [r[0] for r in runs], classes, threshold=detector.score_threshold)
            scores[ANCHOR_NAME] = {"wbc_ap50": report["per_class"]["WBC"]["AP50"], "map50": report.get("mAP50"),
                                   "anchored_fields": sum(r[1] for r in runs)}
            print(key, ANCHOR_NAME, scores[ANCHOR_NAME], [round(float(v)) for v in np.concatenate(reference)],
                  flush=True)
        results[key] = {"fields": len(fields), "primary": primary, "scores": scores}
        atomic_write_text(RESULTS, json.dumps(results, indent=1) + "\n")
    return results


def run() -> str:
    results = measure()
    names = list(next(iter(results.values()))["scores"])
    lines = [
        "## Field colour normalisation at detection time, on sources never trained on",
        "",
        "Protocol in `benchmarks/detector_stain.py`: the leave-one-source-out detectors (`detector_loso`) on their "
        "held-out source (every sixth field) and the shipped detector on every third BCCD test field, each field "
        "normalised before detection. WBC AP50; decision rule fixed beforehand: ship a normalisation only if it "
        f"loses at most {100 * MAX_LOSS:.0f} point in every case.",
        "",
        "| detector: fields (count) | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, r in results.items():
        base = r["scores"]["none"]["wbc_ap50"]
        cells = [f"{s['wbc_ap50']:.3f}" + ("" if name == "none" else f" ({100 * (s['wbc_ap50'] - base):+.1f})")
                 for name, s in r["scores"].items()]
        lines.append(f"| {key} ({r['fields']}) | " + " | ".join(cells) + " |")
    passed = [n for n in names[1:] if all(r["scores"][n]["wbc_ap50"] >= r["scores"]["none"]["wbc_ap50"] - MAX_LOSS
                                          for r in results.values())]
    lines += ["", "Passing the rule: " + (", ".join(passed) if passed else "none; the detector reads fields as they "
                                          "are.")]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
