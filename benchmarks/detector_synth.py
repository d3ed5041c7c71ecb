"""Synthetic fields in the detector's training: do fields rendered under many microscopes, cameras and stains help
the detector find white cells on a source it never saw?

Protocol (fixed before any of these runs was trained or evaluated):
- Synthetic fields: ``leukolens synth``, :data:`PATIENTS` patients cycling through the five diagnoses, one
  640x640 field each under each of the six 100x captures (:data:`CAPTURES`: both synthetic microscopes under the
  three cameras), seed :data:`SEED`; split by patient (60 / 20 / 20) and written as a WBC-only data set (every
  white cell but smudge cells a ``WBC`` box, as :mod:`benchmarks.sim2real` writes it), so they teach white cells only:
  their red cells and platelets are drawn but not boxed, and train nothing.
- Runs: the leave-one-source-out recipe of :mod:`benchmarks.detector_loso` (same sources, budget, seed) with the
  synthetic training fields as one more extra data set, their share of each batch in proportion to their fields
  like any extra set, scale matched to the primary set by their white cells like the others.
- Test: as :mod:`benchmarks.detector_loso`: every field of the held-out source, WBC AP50, detected as ``analyze``
  does. Compared with that benchmark's kept result for the same source (the recipe without synthetic fields).
- Held-out sources, in order: Chula-WBC (the furthest below the 0.95 target), then the others whose run without
  synthetic fields is kept in ``benchmarks/results/detector_loso`` (PBC, BCCD), as time allows.
- Decision rule: synthetic fields join the shipped recipe only if they gain on every held-out source measured. One
  seed per run: the run-to-run spread of the detector is not measured, so a gain
  of a point or two is no evidence.

Trains what it does not have cached in ``out/bench/detector-synth`` (about 15-20 minutes a source on 2 cores).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from benchmarks.detector_loso import RESULTS as LOSO_RESULTS
from benchmarks.detector_loso import recipe, source_fields, wbc_ap50
from benchmarks.detector_runs import RUNS, number, train_run
from benchmarks.sim2real import write_synthetic_wbc
from leukolens.io.common import atomic_write_text
from leukolens.predict.fields import Detector
from leukolens.records import Vocabulary

GROUP = "detector-synth"
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "detector_synth"
PATIENTS = 60
SEED = 21
CAPTURES = tuple(f"{m}:{c}:100x" for m in ("high-cost", "low-cost") for c in ("high-end", "mid-level", "phone"))
HELD_OUT = ("Chula-WBC", "PBC", "BCCD")


def synthetic_data() -> Path:
    return write_synthetic_wbc(RUNS / GROUP / "data", patients=PATIENTS, fields_per_patient=1, domains=CAPTURES,
                               seed=SEED)


def measure(source: str, *, train: bool = True) -> dict | None:
    """The held-out source's WBC AP50 with synthetic fields in training (kept in :data:`RESULTS`), or None."""
    kept = RESULTS / f"{source}.json"
    if kept.is_file():
        return json.loads(kept.read_text())
    base = recipe(source)
    config = dataclasses.replace(base, extra_data=(*base.extra_data, str(synthetic_data())))
    trained = train_run(GROUP, source.lower(), config, train=train)
    if trained is None:
        return None
    detector = Detector.from_checkpoint(trained["checkpoint"], engine="torch")
    fields = source_fields(source, Vocabulary("detector", detector.classes))
    result = {"fields": len(fields), "with_synthetic": wbc_ap50(detector, fields), "steps": trained["steps"],
              "minutes": trained["minutes"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(kept, json.dumps(result) + "\n")
    return result


def run() -> str:
    # LEUKOLENS_BENCH_SOURCES=Chula-WBC: train only these in this call; LEUKOLENS_BENCH_NO_TRAIN=1: kept ones only.
    chosen = [s for s in os.environ.get("LEUKOLENS_BENCH_SOURCES", "").split(",") if s] or list(HELD_OUT)
    train = os.environ.get("LEUKOLENS_BENCH_NO_TRAIN") != "1"
    rows, verdicts = [], []
    for source in HELD_OUT:
        without = LOSO_RESULTS / f"{source}.json"
        result = measure(source, train=train and source in chosen)
        if result is None or not without.is_file():
            rows.append(f"| {source} | | | not run | |")
            continue
        before = json.loads(without.read_text())["held_out"]
        after = result["with_synthetic"]
        verdicts.append(after - before)
        rows.append(f"| {source} | {result['fields']} | {number(before)} | **{number(after)}** "
                    f"({100 * (after - before):+.1f}) | {result['steps']} ({result['minutes']:.1f} min) |")
        print(rows[-1], flush=True)
    passed = bool(verdicts) and all(v > 0 for v in verdicts)
    return "\n".join([
        "## Synthetic fields in the detector's training, on sources never seen",
        "",
        "Protocol in `benchmarks/detector_synth.py`: the leave-one-source-out recipe (`detector_loso`) with "
        f"{PATIENTS * len(CAPTURES)} synthetic fields ({PATIENTS} patients, one 640x640 field each under "
        f"{len(CAPTURES)} synthetic 100x captures: {', '.join(CAPTURES)}; WBC-only, their training split) as one more "
        "extra data set; same budget and seed; WBC AP50 on every field of the held-out source. Decision rule, fixed "
        "beforehand: join the shipped recipe only if they gain on every source measured.",
        "",
        "| held-out source | fields | without synthetic fields (`detector_loso`) | with | steps trained |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Rule: " + ("passed on every source measured." if passed else "not passed; the shipped recipe stays without "
                    "synthetic fields." if verdicts else "nothing measured yet."),
    ])


if __name__ == "__main__":
    print(run())
