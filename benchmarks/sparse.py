"""The annotation-cost curve: WBC AP50 on BCCD test against the share of each training field that is annotated,
for three ways of training on sparse labels (naive, masked, pseudo), at equal short CPU budgets.

Every run trains the detector on BCCD train (205 fields, three classes) for ``MINUTES`` minutes of wall time on
this machine, from the same ImageNet backbone and seed; the sparse runs see the labels of a random rectangle of
``fraction`` of each field (the same rectangle in every mode, :mod:`leukolens.data.sparse`), and validate on BCCD
val labelled just as sparsely. These are short-budget runs that compare methods under equal budgets, not the
shipped detector (docs/detector.md).

``python -m benchmarks.sparse 0.25 0.05`` trains further fractions; the section shows every fraction trained.
"""

from __future__ import annotations

import dataclasses
import sys

from benchmarks.detector_runs import REPO, SHARED, evaluate_run, number, train_run
from leukolens.data.fields import FieldAugmentConfig
from leukolens.data.sparse import sparsify
from leukolens.io import ProblemLog, read_dataset
from leukolens.losses.pseudo import PseudoLabelConfig
from leukolens.report.plots import line_chart
from leukolens.train.detector import TrainDetectorConfig

MINUTES = 5.0
INPUT_SIZE = 384  # fields at 384 px (platelets about 15 px), windows of 256 px: more steps per minute
THREADS = 1  # other jobs share the two cores: one thread each degrades far less under contention
FRACTIONS = (1.0, 0.1, 0.05, 0.25, 0.5)  # what `make bench BENCH=sparse` trains, in this order
EXTRA_FRACTIONS = ()
MODES = ("naive", "masked", "pseudo")
# Pseudo-labels start after about a quarter of a run's steps, once the teacher has learnt from the real labels.
PSEUDO = PseudoLabelConfig(threshold=0.5, weight=0.5, momentum=0.999, warmup_steps=100)
# The LLD paper's two filters, as options at 10% annotated (values fixed before any run: half the 3-class maximum
# entropy of 1.1 nats; a cosine similarity of 0.5 to the class prototype).
VARIANTS = {
    "pseudo+entropy": dataclasses.replace(PSEUDO, max_entropy=0.55),
    "pseudo+prototype": dataclasses.replace(PSEUDO, min_prototype_similarity=0.5),
}
VARIANT_FRACTION = 0.1
IMAGE = REPO / "docs" / "images" / "annotation-cost.png"


def config(fraction: float, mode: str) -> TrainDetectorConfig:
    """The run: BCCD train only, all three classes, the shipped model's recipe at a short budget. ``mode`` is a
    sparse mode or a name in :data:`VARIANTS` (pseudo-labels with a filter)."""
    return TrainDetectorConfig(
        data=str(SHARED / "bccd"),
        input_size=INPUT_SIZE,
        augment=FieldAugmentConfig(window=256),
        epochs=15,  # 600 steps planned; the budget ends the run first and the cosine schedule shortens
        steps_per_epoch=40,
        max_minutes=MINUTES,
        threads=THREADS,
        annotated_fraction=fraction,
        sparse_mode=("pseudo" if mode in VARIANTS else mode) if fraction < 1 else "masked",
        pseudo=VARIANTS.get(mode, PSEUDO),
    )


def training_boxes(fraction: float, mode: str) -> str:
    """Boxes (and WBC boxes) the sparse training fields keep."""
    fields = read_dataset(SHARED / "bccd", log=ProblemLog()).splits["train"]
    kept = sparsify(fields, fraction, mode=mode if mode in MODES else "masked", seed=0)
    boxes = [c.label for f in kept for c in f.cells]
    return f"{len(boxes):,} ({boxes.count('WBC')})"


def runs(fractions, *, train: bool, variants: bool = True) -> dict[tuple[float, str], dict]:
    out = {}
    for fraction in fractions:
        modes = MODES if fraction < 1 else ("full",)
        if variants and fraction == VARIANT_FRACTION:
            modes = (*modes, *VARIANTS)
        for mode in modes:
            run = train_run("sparse", f"f{fraction:g}-{mode}-{MINUTES:g}min", config(fraction, mode), train=train)
            if run is not None:
                out[fraction, mode] = run
    return out


def run() -> str:
    trained = runs(FRACTIONS, train=True)
    trained.update(runs(EXTRA_FRACTIONS, train=False))
    results = {key: evaluate_run(r, SHARED / "bccd") for key, r in trained.items()}
    full = results.get((1.0, "full"))
    full_wbc = full["per_class"]["WBC"]["AP50"] if full else None
    lines = [
        "## Sparse annotation: the annotation-cost curve",
        "",
        f"Each run trains on BCCD train (205 fields, WBC, RBC, platelets) for {MINUTES:g} minutes on this machine (one "
        f"torch thread, fields at {INPUT_SIZE} px, windows of 256 px; the shipped detector's recipe otherwise, far "
        "shorter), and is scored on the 72 fully "
        "labelled BCCD test fields. A run at fraction F keeps the boxes of a random rectangle of F of each "
        "training (and validation) field's area. **naive**: the rest of the field is background; **masked**: the "
        "heatmap loss ignores the rest; **pseudo**: masked, plus an EMA teacher's (momentum "
        f"{PSEUDO.momentum}, warmed up) peaks above {PSEUDO.threshold} outside the rectangle as extra targets at "
        f"loss weight {PSEUDO.weight}, from step {PSEUDO.warmup_steps}. At {VARIANT_FRACTION:g}, two of the LLD "
        "paper's filters as options: **pseudo+entropy** drops teacher peaks whose class entropy exceeds "
        f"{VARIANTS['pseudo+entropy'].max_entropy} nats; **pseudo+prototype** drops peaks whose feature's cosine "
        f"similarity to its class prototype (a moving average of labelled cells' features) is below "
        f"{VARIANTS['pseudo+prototype'].min_prototype_similarity}. Short-budget runs comparing methods under "
        "equal budgets, not the shipped detector.",
        "",
        "| annotated fraction | mode | training boxes (WBC) | steps | WBC AP50 | share of full WBC AP50 | mAP50 "
        "| RBC AP50 | Platelets AP50 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = {"full": 0, **{m: i + 1 for i, m in enumerate((*MODES, *VARIANTS))}}
    for (fraction, mode), report in sorted(results.items(), key=lambda kv: (-kv[0][0], order[kv[0][1]])):
        run_record = trained[fraction, mode]
        wbc = report["per_class"]["WBC"]["AP50"]
        share = f"{wbc / full_wbc:.1%}" if full_wbc and wbc is not None else "-"
        boxes = training_boxes(fraction, mode)
        lines.append(
            f"| {fraction:g} | {mode} | {boxes} | {run_record['steps']} | **{number(wbc)}** | {share} | "
            f"{number(report['mAP50'])} | {number(report['per_class']['RBC']['AP50'])} | "
            f"{number(report['per_class']['Platelets']['AP50'])} |"
        )
    target = [r for (f, m), r in results.items() if f == 0.1 and m == "pseudo"]
    if full_wbc and target:
        ratio = target[0]["per_class"]["WBC"]["AP50"] / full_wbc
        lines += ["", f"Target: with 10% annotated, WBC AP50 at least 95% of the fully annotated run's: pseudo reaches "
                      f"**{ratio:.1%}** ({'met' if ratio >= 0.95 else 'missed'}) at this budget."]
    series: dict[str, list[tuple[float, float]]] = {}
    for (fraction, mode), report in results.items():
        wbc = report["per_class"]["WBC"]["AP50"] or 0.0
        for name in (MODES if mode == "full" else (mode,)):
            series.setdefault(name, []).append((fraction, wbc))
    if len(results) > 1:
        IMAGE.parent.mkdir(parents=True, exist_ok=True)
        line_chart(
            {k: series[k] for k in MODES if k in series},
            title=f"BCCD test WBC AP50 against annotated fraction ({MINUTES:g}-minute CPU runs)",
            x_label="annotated fraction of each field (log)",
            y_label="WBC AP50",
            log_x=True,
        ).save(IMAGE)
        lines += ["", f"![annotation-cost curve](images/{IMAGE.name})"]
    return "\n".join(lines)


if __name__ == "__main__":
    runs(tuple(float(a) for a in sys.argv[1:]) or FRACTIONS, train=True)
