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
  percentile (the background) matches the primary set's.
  References from 24 training fields per source (every n-th, resized to 256x192).
- Decision rule, fixed beforehand: a normalisation is worth shipping only if it loses at most 1 point of WBC AP50
  in every case.

WBC AP50 (and mAP50 where the set boxes every class) with :mod:`leukolens.eval.detection`, scale estimated from the
field's red cells. About 25 minutes on two cores; needs the runs of ``detector_loso`` in ``out/bench``.
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


def measure() -> dict:
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for run, source, primary in CASES:
        key = f"{run}: {source}"
        if key in results:
            continue
        path = default_detector() if run == "shipped" else RUNS / run / "best.pt"
        detector = Detector.from_checkpoint(path, engine="torch")
        classes = Vocabulary("detector", detector.classes)
        if source == "BCCD test":
            fields = read_dataset(SHARED / "bccd", log=ProblemLog()).splits["test"][::3]
        else:
            fields = source_fields(source, classes)[::6]
        arrays = [np.asarray(load_image(f.image).convert("RGB")) for f in fields]
        scores = {}
        for name, normalise in normalisations(primary, None if run == "shipped" else source).items():
            found = [detector.detect([Image.fromarray(normalise(a) if normalise else a)], threshold=0.01)[0]
                     for a in arrays]
            report = evaluate_detections(fields, found, classes, threshold=detector.score_threshold)
            scores[name] = {"wbc_ap50": report["per_class"]["WBC"]["AP50"], "map50": report.get("mAP50")}
            print(key, name, scores[name], flush=True)
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
