"""Domain robustness: leave-one-source-out on TXL-PBC, WBC AP50 in-domain against cross-domain, with and without
the stain / blur / noise / zoom augmentation.

TXL-PBC gathers fields from four sources (BCCD, BCDD, PBC, Raabin-WBC; told apart by image size). For each source
S a WBC-only detector trains on the other three sources' training fields (validated on their val fields) and is
tested on S's test fields: the *cross-domain* AP50 of S. The *in-domain* AP50 of S is the mean over the three
models whose training sources include S, tested on the same S test fields. So every model trains on three sources,
and in-domain and cross-domain numbers come from equally sized training sets; gap = in-domain - cross-domain.

Settings (``SETTINGS``): ``plain`` trains with geometry only (windows, zoom 0.75-1.3, flips, quarter turns);
``robust`` adds strong HED stain jitter, brightness / contrast / saturation, Gaussian blur, sensor noise and a wider
zoom (0.6-1.6): :data:`leukolens.data.fields.FIELD_AUGMENT_PRESETS`. ``+reinhard`` also normalises every field's
stain (training and test) to one reference field, the first training field (Reinhard), as ``--stain-norm reinhard``
does. Short budgets: ``MINUTES`` per model, fields at 320 px, windows of 224 px, one torch thread,
WBC only. These are short-budget runs comparing techniques under equal budgets, not the shipped detector.

``python -m benchmarks.domains synth`` runs the same protocol over synthetic microscopes (``leukolens synth``
fields, high-cost vs low-cost), when there is CPU time for it.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from benchmarks.detector_runs import RUNS, SHARED, evaluate_run, number, train_run
from leukolens.data.fields import FIELD_AUGMENT_PRESETS
from leukolens.train.detector import TrainDetectorConfig

MINUTES = 2.0
SOURCES = ("BCCD", "BCDD", "PBC", "Raabin-WBC")
SETTINGS = ("plain", "robust", "robust+reinhard")  # what `make bench BENCH=domains` trains
EXTRA_SETTINGS = ("plain+reinhard",)  # shown when trained (``python -m benchmarks.domains plain+reinhard``)


def config(setting: str, sources: tuple[str, ...], *, data=SHARED / "txl_pbc", domain_key="source",
           minutes: float = MINUTES) -> TrainDetectorConfig:
    augment, _, stain = setting.partition("+")
    return TrainDetectorConfig(
        data=str(data),
        classes=("WBC",),
        sources=sources,
        domain_key=domain_key,
        input_size=320,
        augment=dataclasses.replace(FIELD_AUGMENT_PRESETS[augment], window=224),
        stain_norm=stain or "none",
        epochs=10,  # 300 steps planned; the budget ends the run first and the cosine schedule shortens
        steps_per_epoch=30,
        val_fields=40,
        max_minutes=minutes,
        threads=1,
    )


def leave_one_out(setting: str, groups: tuple[str, ...], *, train: bool, group_name="domains", data=SHARED / "txl_pbc",
                  domain_key="source", minutes: float = MINUTES) -> dict | None:
    """Per held-out group: cross-domain WBC AP50, in-domain WBC AP50 (mean over the other models), gap."""
    models = {}
    for held_out in groups:
        kept = tuple(g for g in groups if g != held_out)
        run = train_run(group_name, f"{setting}-without-{held_out}",
                        config(setting, kept, data=data, domain_key=domain_key, minutes=minutes), train=train)
        if run is None:
            return None
        models[held_out] = run
    def wbc(run: dict, target: str) -> float:
        report = evaluate_run(run, data, sources=(target,), domain_key=domain_key)
        return report["per_class"]["WBC"]["AP50"] or 0.0

    rows = {}
    for target in groups:
        cross = wbc(models[target], target)
        inside = [wbc(models[other], target) for other in groups if other != target]
        rows[target] = {"cross": cross, "in_domain": float(np.mean(inside)), "in_domain_runs": inside}
        rows[target]["gap"] = rows[target]["in_domain"] - cross
    steps = [m["steps"] for m in models.values()]
    return {"rows": rows, "steps": (min(steps), max(steps))}


def _fields_per_source() -> dict[str, int]:
    from leukolens.io import ProblemLog, read_dataset

    test = read_dataset(SHARED / "txl_pbc", log=ProblemLog()).splits["test"]
    return {s: sum(f.domain.source == s for f in test) for s in SOURCES}


def run() -> str:
    results = {s: leave_one_out(s, SOURCES, train=True) for s in SETTINGS}
    results.update({s: leave_one_out(s, SOURCES, train=False) for s in EXTRA_SETTINGS})
    results = {s: r for s, r in results.items() if r is not None}
    counts = _fields_per_source()
    lines = [
        "## Domain robustness: leave one TXL-PBC source out",
        "",
        f"WBC-only detectors, each trained for {MINUTES:g} minutes on three of TXL-PBC's four sources (fields at "
        "320 px, windows of 224 px, one torch thread), tested on the WBC boxes of every source's test fields. "
        "Cross-domain: the model that never saw the source; in-domain: the mean of the three models that trained "
        "on it (same amount of training data). Gap = in-domain - cross-domain, in AP50 points x 100. Short-budget "
        "runs comparing techniques under "
        "equal budgets, not the shipped detector.",
        "",
        "| setting | held-out source (test fields) | in-domain WBC AP50 | cross-domain WBC AP50 | gap (points) |",
        "|---|---|---|---|---|",
    ]
    for setting, result in results.items():
        for source, row in result["rows"].items():
            lines.append(
                f"| {setting} | {source} ({counts[source]}) | {number(row['in_domain'])} | {number(row['cross'])} | "
                f"{100 * row['gap']:+.1f} |"
            )
        gaps = [row["gap"] for row in result["rows"].values()]
        cross = [row["cross"] for row in result["rows"].values()]
        lines.append(
            f"| **{setting}** | **mean** | {number(float(np.mean([r['in_domain'] for r in result['rows'].values()])))}"
            f" | {number(float(np.mean(cross)))} | **{100 * float(np.mean(gaps)):+.1f}** |"
        )
    synthetic = {s: synthetic_microscopes(s, train=False) for s in SYNTH_SETTINGS}
    synthetic = {s: r for s, r in synthetic.items() if r is not None}
    if synthetic:
        lines += [
            "",
            "Leave one synthetic microscope out (`python -m benchmarks.domains synth`): `leukolens synth` fields of 40 "
            f"patients under four captures ({', '.join(SYNTH_DOMAINS)}), two fields each; one model trains on the "
            "high-cost microscope's fields and is tested on the low-cost one's, and the other way round; in-domain is "
            "the other model on its own microscope's test fields. Same recipe and minutes as above.",
            "",
            "| setting | held-out microscope | in-domain WBC AP50 | cross-domain WBC AP50 | gap (points) |",
            "|---|---|---|---|---|",
        ]
        for setting, result in synthetic.items():
            for group, row in result["rows"].items():
                lines.append(f"| {setting} | {group} | {number(row['in_domain'])} | {number(row['cross'])} | "
                             f"{100 * row['gap']:+.1f} |")
    lines += [""]
    for setting, result in results.items():
        gap = 100 * float(np.mean([row["gap"] for row in result["rows"].values()]))
        lines.append(
            f"- {setting}: {result['steps'][0]}-{result['steps'][1]} training steps per model; mean gap {gap:+.1f} "
            f"points (target at most 3: {'met' if gap <= 3 else 'missed'})."
        )
    return "\n".join(lines)


SYNTH_DOMAINS = ("high-cost:high-end:100x", "high-cost:phone:100x", "low-cost:mid-level:100x", "low-cost:phone:100x")
SYNTH_SETTINGS = ("plain", "robust")


def synthetic_microscopes(setting: str = "robust", *, train: bool = True, minutes: float = MINUTES) -> dict | None:
    """Leave one synthetic microscope out: 40 patients' fields under four captures at 100x, WBC-only."""
    from benchmarks.sim2real import write_synthetic_wbc

    folder = RUNS / "synth-domains" / "data"
    if not train and not (folder / "data.yaml").is_file():
        return None
    data = write_synthetic_wbc(folder, patients=40, fields_per_patient=2, seed=7, domains=SYNTH_DOMAINS)
    return leave_one_out(setting, ("high-cost", "low-cost"), train=train, group_name="synth-domains", data=data,
                         domain_key="microscope", minutes=minutes)


if __name__ == "__main__":
    wanted = sys.argv[1:] or list(SETTINGS)
    for name in wanted:
        if name == "synth":
            for setting in SYNTH_SETTINGS:
                print(synthetic_microscopes(setting))
        else:
            print(leave_one_out(name, SOURCES, train=True))
