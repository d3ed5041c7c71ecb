"""Cell typing on microscopes never trained on: leave one domain out over PBC, BCCD and Chula, plus Munich AML.

Protocol (fixed before any test domain was looked at):
- Domains: PBC (CellaVision DM96, single-cell images), BCCD (640x480 fields, one typed WBC per field from
  ``wbc_types.csv``), Chula (a Raspberry Pi camera, 960x600 fields, typed WBC boxes). For each domain D, a cell model
  trains on the other two (their own train splits; Chula split by slide) and is validated on their val splits; it
  is tested on D: PBC's test split, every typed BCCD cell, every Chula cell, the five normal types only.
- Munich AML (another CellaVision-like 100x setting, a different lab) is a test-only domain for every model: its
  normal classes LYT, MON, NGS, NGB, EOS, BAS (60 cells), whole images as given.
- Every cell is cut the same way, whatever the microscope: a square window twice its box's longer side, at the
  model's input size (``CropConfig(mode="box")``).
- Settings compare what makes a model indifferent to the microscope: ``default`` augmentation (flips, turns, gentle
  stain and colour jitter), ``robust`` (strong HED stain jitter, hue, grey, blur, noise, vignetting, JPEG and a wider
  zoom: :data:`leukolens.data.augment.AUGMENT_PRESETS`), ``robust+frozen-norm`` (also every batch-norm layer
  keeps its ImageNet statistics), ``+per-cell`` (also each crop standardised by its own colour statistics) and
  ``+self-training`` (also the boxed, untyped white cells of TXL-PBC's Raabin-WBC and BCDD fields, typed by a
  mean teacher where it is confident: :mod:`leukolens.train.unlabelled`).
  ``+averaged``: the checkpoint holds the uniform average of the weights over the last half of the planned steps,
  and validation reads that average (SWAD-style weight averaging, :class:`leukolens.train.ema.WeightAverage`).
  ``+synthetic`` (added later, fixed before its first run): also typed synthetic white cells as one more training
  domain: :data:`SYNTHETIC_PER_CLASS` cells of each of the five normal types, each drawn from its morphology by
  :func:`leukolens.synth.slide.render_cell` (seed = its index) in a 320 px field with red cells around it, under
  the six synthetic 100x captures (two microscopes x three cameras) and the three stains in turn; every fifth cell
  validates. No WBCAtt attributes. The question: do cells drawn from their morphology under many stains and
  captures teach what tells the types apart on a microscope never seen?
- Budget: ``EPOCHS`` epochs per model (an epoch budget, not minutes, so that a busy machine does not change the
  result), seed 0, the best epoch on the training domains' validation cells kept. A cell counts as right when the
  model's top class among all its classes is the true one.

``python -m benchmarks.cell_domains train SETTING [DOMAIN ...]`` trains missing runs; ``make bench BENCH=cell_domains``
trains the ``robust`` runs when missing and writes the section with every run trained so far.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from leukolens.data.augment import AUGMENT_PRESETS, VIEWS
from leukolens.data.cells import CellSample, load_crops
from leukolens.data.domains import WBC_CLASSES, typed_cells
from leukolens.eval.domains import evaluate_cells
from leukolens.models.checkpoint import load_checkpoint
from leukolens.train.cells import TrainCellsConfig, fit_atypicality, train_cells

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RUNS = REPO / "out" / "cell-domains"
RESULTS = REPO / "benchmarks" / "results" / "cell_domains"
"""Each evaluated run's scores (a small JSON), kept in the repository so that the section can be written again
without the trained runs, which stay in ``out/``."""
EPOCHS = 6
DOMAINS = {"PBC": SHARED / "pbc", "BCCD": SHARED / "bccd", "Chula": SHARED / "chula"}
NORMAL = ("Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil")
MUNICH = {"LYT": "Lymphocyte", "MON": "Monocyte", "NGS": "Neutrophil", "NGB": "Neutrophil", "EOS": "Eosinophil",
          "BAS": "Basophil"}
SETTINGS = {
    "default": {"augment": "default", "freeze_norm": False},
    "robust": {"augment": "robust", "freeze_norm": False},
    "robust+frozen-norm": {"augment": "robust", "freeze_norm": True},
    "robust+frozen-norm+per-cell": {"augment": "robust", "freeze_norm": True, "input_norm": "per-cell"},
    "robust+frozen-norm+per-cell+self-training": {"augment": "robust", "freeze_norm": True, "input_norm": "per-cell",
                                                  "self_training": True},
    "robust+frozen-norm+per-cell+mix-style": {"augment": "robust", "freeze_norm": True, "input_norm": "per-cell",
                                              "mix_style": 0.5},
    "robust+frozen-norm+per-cell+averaged": {"augment": "robust", "freeze_norm": True, "input_norm": "per-cell",
                                             "average_weights": 0.5},
    "robust+frozen-norm+per-cell+synthetic": {"augment": "robust", "freeze_norm": True, "input_norm": "per-cell",
                                              "synthetic": True},
}
PARTIAL = ("robust+frozen-norm+per-cell+synthetic",)
"""Settings measured with views and size only (the tables of :func:`views_run` and :func:`size_run`): no adapted,
atypicality or calibrate figures, which take about ten minutes a model more."""
SYNTHETIC_PER_CLASS = 160
SYNTHETIC = RUNS / "synthetic-cells"


def synthetic_cells() -> Path:
    """The ``+synthetic`` setting's cell set, rendered and written (COCO) once."""
    from benchmarks.detector_synth import CAPTURES
    from leukolens.io import write_dataset
    from leukolens.records import LLD_CLASSES, LLD_SCHEMA, Dataset, Domain, Field
    from leukolens.synth.domains import STAINS, parse_domains
    from leukolens.synth.slide import render_cell

    data = SYNTHETIC / "data"
    if (data / "annotations.json").is_file():
        return data
    captures = parse_domains(CAPTURES)  # the six synthetic 100x captures the detector benchmark renders too
    stains = list(STAINS)
    (SYNTHETIC / "images").mkdir(parents=True, exist_ok=True)
    fields = []
    for k, label in enumerate(NORMAL):
        for i in range(SYNTHETIC_PER_CLASS):
            index = k * SYNTHETIC_PER_CLASS + i
            image, cell = render_cell(label, seed=index, stain=stains[index % len(stains)],
                                      domain=captures[index % len(captures)], size=320)
            path = SYNTHETIC / "images" / f"{label.lower()}_{i:03d}.jpg"
            image.save(path, format="JPEG", quality=90)
            domain = Domain(source="leukolens-synth-cells", sample_id=f"C{index:04d}")
            fields.append(Field(path, 320, 320, [cell], [], domain, "val" if i % 5 == 4 else "train"))
    write_dataset(Dataset(fields, LLD_CLASSES, LLD_SCHEMA, name="leukolens-synth-cells"), data, format="coco",
                  images="none")
    return data


UNLABELLED = SHARED / "txl_pbc"
UNLABELLED_SOURCES = ("Raabin-WBC", "BCDD")
"""Self-training's unlabelled white cells: TXL-PBC's fields of two microscopes none of the typed domains comes from.
BCDD is left out when BCCD is the never-seen domain: its fields may come from BCCD's microscope."""


def run_config(setting: str, held_out: str, *, epochs: int = EPOCHS, seed: int = 0) -> TrainCellsConfig:
    """The run's config; ``seed`` other than 0 is a repeat (its own folder, ``-seedN``), to see the spread."""
    train_domains = [DOMAINS[d] for d in DOMAINS if d != held_out]
    options = SETTINGS[setting]
    return TrainCellsConfig(
        data=str(train_domains[0]),
        extra_data=tuple(str(p) for p in train_domains[1:]) + ((str(SYNTHETIC / "data"),) if options.get("synthetic")
                                                               else ()),
        out=str(RUNS / (f"{setting}-without-{held_out}" + (f"-seed{seed}" if seed else ""))),
        augment=AUGMENT_PRESETS[options["augment"]],
        freeze_norm=options["freeze_norm"],
        input_norm=options.get("input_norm", "dataset"),
        mix_style=options.get("mix_style", 0.0),
        average_weights=options.get("average_weights", 0.0),
        unlabelled_data=(str(UNLABELLED),) if options.get("self_training") else (),
        unlabelled_sources=tuple(s for s in UNLABELLED_SOURCES if not (held_out == "BCCD" and s == "BCDD")),
        epochs=epochs,
        patience=epochs,
        seed=seed,
    )


def train_run(setting: str, held_out: str, *, seed: int = 0) -> Path:
    config = run_config(setting, held_out, seed=seed)
    best = Path(config.out) / "best.pt"
    if not (Path(config.out) / "done").is_file():
        if SETTINGS[setting].get("synthetic"):
            synthetic_cells()
        best = train_cells(config)
        fit_atypicality(best, config)
        (Path(config.out) / "done").write_text("trained\n")
    return best


def test_cells(domain: str, part: str = "all") -> tuple[list[CellSample], list[str], list[str]]:
    """The test cells of a domain (five normal types), their true class names, and their samples (slide when known,
    else the domain: what per-sample adaptation adapts to).

    Args:
        part: ``all`` (what leave-one-domain-out tests on: PBC's test split, all of BCCD and Chula), ``pool`` (the
            cells ``calibrate`` may draw from: the domain's train split) or ``held`` (what calibrated models are
            tested on: PBC test, BCCD val and test, Chula's validation slides).
    """
    if domain == "Munich":
        samples, truth = [], []
        for code, label in MUNICH.items():
            for path in sorted((SHARED / "munich_aml_sample" / code).glob("*")):
                with Image.open(path) as image:
                    size = image.size
                samples.append(CellSample(path, (0.0, 0.0, float(size[0]), float(size[1])), size, 0))
                truth.append(label)
        return samples, truth, ["Munich"] * len(samples)
    cells = [c for c in typed_cells(DOMAINS[domain]) if WBC_CLASSES[c.sample.label] in NORMAL]
    if part == "pool":
        cells = [c for c in cells if c.split == "train"]
    elif domain == "PBC":
        cells = [c for c in cells if c.split == "test"]
    elif part == "held":
        cells = [c for c in cells if c.split != "train"]
    return [c.sample for c in cells], [WBC_CLASSES[c.sample.label] for c in cells], [c.slide or domain for c in cells]


TABLE_VIEWS = 1
"""The leave-one-domain-out and calibrate tables read each cell once (the upright crop), as they did before
predictions averaged several views; :func:`views_run` measures what the views add on the same models."""
VIEW_COUNTS = (1, 4, 8)


def kept_result(setting: str, held_out: str, key: str, measure, *, seed: int = 0) -> dict | None:
    """``key`` of a run's kept results, measured by ``measure(checkpoint)`` and kept when missing; None for a run
    that is neither kept nor trained here."""
    out = Path(run_config(setting, held_out, seed=seed).out)
    results_path = RESULTS / f"{out.name}.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if key in results or not (out / "best.pt").is_file():
        return results.get(key)
    results[key] = measure(load_checkpoint(out / "best.pt"))
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    return results[key]


def views_run(setting: str, held_out: str, *, seed: int = 0) -> dict | None:
    """Accuracy on the never-seen domain and on Munich with 1, 4 and 8 views per cell (:data:`VIEW_COUNTS`), kept
    in the run's results under ``views``; None for a run that is not trained here."""

    def measure(checkpoint) -> dict:
        scores = {}
        for domain in (held_out, "Munich"):
            samples, truth, _ = test_cells(domain)
            scores[domain] = {
                str(n): {k: v for k, v in evaluate_cells(checkpoint, samples, truth, views=n).items()
                         if k in ("accuracy", "balanced_accuracy")}
                for n in VIEW_COUNTS
            }
        return scores

    return kept_result(setting, held_out, "views", measure, seed=seed)


SIZE_FIT_CELLS = 60
"""Training cells per class and training domain whose sizes fit a leave-one-domain-out model's size prior (train
splits, seed 0; as ``leukolens train size`` by default): the prior is fitted on the domains the model trained on,
never on the one it is tested on. The prior's form and its fixed scale uncertainty were set before any test domain
was scored with it (:mod:`leukolens.models.size`)."""
SCALES = RESULTS / "scales.json"
"""Each image's µm per pixel as the shipped detector estimates it from its own red cells (None: not found), cached:
the estimates take minutes and do not change between runs."""


def image_scales(samples: list[CellSample]) -> dict[str, float | None]:
    """µm per pixel of each sample's image, per image (as one field read alone), from the shipped detector."""
    from leukolens.predict.fields import Detector

    cache = json.loads(SCALES.read_text()) if SCALES.is_file() else {}
    key = {s.image: str(Path(s.image).resolve().relative_to(SHARED.resolve())) for s in samples}
    missing = sorted({k for k in key.values() if k not in cache})
    if missing:
        detector = Detector.from_checkpoint()
        for name in missing:
            with Image.open(SHARED / name) as image:
                cache[name] = detector.red_cell_scale(image.convert("RGB"))
        SCALES.parent.mkdir(parents=True, exist_ok=True)
        SCALES.write_text(json.dumps(dict(sorted(cache.items())), indent=0) + "\n")
    return {image: cache[name] for image, name in key.items()}


def cell_sizes(samples: list[CellSample]) -> np.ndarray:
    from leukolens.models.size import cell_diameter_um

    scales = image_scales(samples)
    return np.array([cell_diameter_um(s.box, scales[s.image]) for s in samples])


def size_run(setting: str, held_out: str, *, seed: int = 0) -> dict | None:
    """Accuracy on the never-seen domain with and without the size prior (:mod:`leukolens.models.size`), fitted on
    the training domains' cells, each image's scale estimated from its red cells; kept under ``size``."""
    from leukolens.eval.cells import run_checkpoint
    from leukolens.models.size import fit_size_prior

    def measure(checkpoint) -> dict:
        classes = checkpoint.config.classes
        rng = np.random.default_rng(0)
        fit, fit_truth = [], []
        for domain in DOMAINS:
            if domain == held_out:
                continue
            pool, truth, _ = test_cells(domain, "pool")
            for name in NORMAL:
                mine = [i for i, t in enumerate(truth) if t == name]
                for i in rng.permutation(mine)[:SIZE_FIT_CELLS]:
                    fit.append(pool[i])
                    fit_truth.append(name)
        prior = fit_size_prior(cell_sizes(fit), fit_truth, classes)
        samples, truth, _ = test_cells(held_out)
        sizes = cell_sizes(samples)
        crops = load_crops(samples, size=checkpoint.crop.input_size, context=checkpoint.crop.context,
                           stain=checkpoint.preprocess.stain_normalizer())
        image = run_checkpoint(checkpoint.build(), checkpoint, crops, margin=1.0, views=VIEWS).class_probabilities
        truth_array = np.array(truth)
        scores = {}
        for name, probabilities in (("image", image), ("image+size", prior.apply(image, sizes, classes))):
            guesses = np.array(classes)[probabilities.argmax(1)]
            recall = {c: float((guesses[truth_array == c] == c).mean()) for c in NORMAL if (truth_array == c).any()}
            scores[name] = {"accuracy": float((guesses == truth_array).mean()),
                            "balanced_accuracy": float(np.mean(list(recall.values()))), "per_class_recall": recall}
        return {"views": VIEWS, "sized": float(np.isfinite(sizes).mean()), "prior": prior.as_dict(), **scores}

    return kept_result(setting, held_out, "size", measure, seed=seed)


def evaluate_run(setting: str, held_out: str) -> dict:
    out = Path(run_config(setting, held_out).out)
    results_path = RESULTS / f"{out.name}.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    trained = (out / "best.pt").is_file()
    if results and ("calibrate fine-tuned" in results or not trained):
        return results
    checkpoint = load_checkpoint(out / "best.pt")
    if not results:
        results = {"held_out": held_out, "setting": setting, "train": checkpoint.train.get("history", [])[-1:]}
        for domain in (held_out, "Munich"):
            samples, truth, groups = test_cells(domain)
            results[domain] = evaluate_cells(checkpoint, samples, truth, views=TABLE_VIEWS)
            results[f"{domain} adapted"] = evaluate_cells(checkpoint, samples, truth, groups=groups, views=TABLE_VIEWS)
        results["calibrate"] = calibration_curve(checkpoint, held_out)
    results["calibrate fine-tuned"] = calibration_curve(checkpoint, held_out, FINETUNE_EPOCHS)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    return results


SHOTS = (10, 25, 50, 100)
FINETUNE_EPOCHS = 15
"""``calibrate --finetune-epochs`` as measured (fixed before the first fine-tuned curve on BCCD and Chula): the head
refit, then the backbone's last stages fine-tuned on the lab's cells for this many epochs (the other fine-tuning
settings are :class:`CalibrateConfig`'s defaults). The other curve is ``--finetune-epochs 0``: the head only."""


def calibration_curve(checkpoint, domain: str, finetune_epochs: int = 0) -> dict:
    """``calibrate`` with 10 to 100 labelled cells of the never-seen domain (its train split, drawn evenly over
    the classes, seed 0), tested on the domain's held-out cells; with ``finetune_epochs``, fine-tuning too."""
    from leukolens.train.calibrate import CalibrateConfig, calibrate

    pool, pool_truth, _ = test_cells(domain, "pool")
    held, held_truth, _ = test_cells(domain, "held")
    rng = np.random.default_rng(0)
    by_class = {c: list(rng.permutation([i for i, t in enumerate(pool_truth) if t == c])) for c in NORMAL}
    curve = {}
    for shots in SHOTS:
        chosen = []  # round robin over the classes, each in its shuffled order, until there are ``shots``
        for rank in range(max(len(v) for v in by_class.values())):
            for c in NORMAL:
                if rank < len(by_class[c]) and len(chosen) < shots:
                    chosen.append(by_class[c][rank])
        config = CalibrateConfig(min_cells_per_class=1, finetune_epochs=finetune_epochs)  # 0: the head only
        calibrated, report = calibrate(checkpoint, [pool[i] for i in chosen], [pool_truth[i] for i in chosen], config)
        result = evaluate_cells(calibrated, held, held_truth, views=TABLE_VIEWS)
        curve[str(shots)] = {**{k: result[k] for k in ("accuracy", "balanced_accuracy", "flagged_atypical")},
                             "seconds": report.seconds, "cells": len(held)}
    return curve


def demo_agreement(adapt: bool = False) -> dict:
    """What `make demo` says of its own six BCCD test fields (7 white cells) against BCCD's ``wbc_types.csv``:
    white cells typed as BCCD types them (a field's types compared as a multiset), with the shipped models."""
    import csv
    import tempfile
    from collections import Counter

    from leukolens.analyze import analyze
    from leukolens.cli.demo import sample_path
    from leukolens.data.domains import canonical_class

    expected = {}
    with (SHARED / "bccd" / "wbc_types.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if (row.get("Image") or "").strip().isdigit():
                names = [canonical_class(t) for t in (row.get("Category") or "").split(",") if t.strip()]
                expected[f"BloodImage_{int(row['Image']):05d}"] = Counter(n for n in names if n)
    folder = sample_path("bccd") / "BCCD" / "JPEGImages"
    with tempfile.TemporaryDirectory() as out:
        analyze([folder], out=out, adapt=adapt, log=lambda _: None)
        right, cells, seen = 0, 0, []
        for path in sorted(folder.glob("*.jpg")):
            record = json.loads((Path(out) / f"{path.stem}.json").read_text())
            found = Counter(c["type"] for c in record["cells"] if c.get("type"))
            right += sum((found & expected[path.stem]).values())
            cells += sum(expected[path.stem].values())
            seen.append(f"{path.stem}: {dict(found)} (BCCD: {dict(expected[path.stem])})")
    return {"right": right, "cells": cells, "fields": seen}


def _pct(value) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}%"


def _views(n: int) -> str:
    return f"{n} view" if n == 1 else f"{n} views"


def _curve_row(setting: str, held_out: str, curve: dict) -> str:
    cells = " | ".join(f"{_pct(curve[str(n)]['accuracy'])} ({_pct(curve[str(n)]['flagged_atypical'])})" for n in SHOTS)
    seconds = curve[str(SHOTS[-1])]["seconds"]
    return f"| {setting} | {held_out} | {curve[str(SHOTS[0])]['cells']} | {cells} | {seconds:.0f} |"


def earlier_rows() -> list[dict[tuple[str, str], str]]:
    """Each table of the section as docs/benchmarks.md has it now (leave one domain out, calibrate, calibrate
    fine-tuned), as (setting, domain) -> row: runs measured before their scores were kept in :data:`RESULTS`."""
    doc = REPO / "docs" / "benchmarks.md"
    text = doc.read_text() if doc.is_file() else ""
    start, end = text.find("<!-- bench:cell_domains -->"), text.find("<!-- /bench:cell_domains -->")
    tables, rows = [], None
    for line in text[start:end].splitlines() if start >= 0 else ():
        if line.startswith("| setting"):
            rows = {}
            tables.append(rows)
        elif line.startswith("| ") and rows is not None:
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[(cells[0], cells[1])] = line
        elif not line.startswith("|"):
            rows = None
    return tables + [{}] * (3 - len(tables))


CURVE_HEADER = [
    "| setting | domain | held-out cells | " + " | ".join(f"{n} cells" for n in SHOTS) + " | seconds (100) |",
    "|---|---|---|" + "---|" * len(SHOTS) + "---|",
]


def section(settings=tuple(SETTINGS)) -> str:
    scored = [(s, d) for s in settings for d in DOMAINS
              if (RESULTS / f"{s}-without-{d}.json").is_file() or (RUNS / f"{s}-without-{d}" / "done").is_file()]
    carried = earlier_rows()
    earlier = {k for k in carried[0] if k[0] in settings and k[1] in DOMAINS}
    done = sorted(set(scored) | earlier, key=lambda k: (list(SETTINGS).index(k[0]), list(DOMAINS).index(k[1])))
    partial = [k for k in done if k[0] in PARTIAL]
    done = [k for k in done if k not in partial]
    results = {k: evaluate_run(*k) for k in done if k in scored}
    lines = [
        "## Cells on microscopes never trained on: leave one domain out, per-sample adaptation, calibrate",
        "",
        "Leave one domain out: each model trains on the two other domains and is tested on the one it never saw. "
        f"{EPOCHS} epochs per model, seed 0; protocol in `benchmarks/cell_domains.py`. *Adapted*: batch-norm "
        "statistics re-estimated on each sample's own cells before typing (per slide where known, else per domain), "
        "no labels.",
        "",
        "| setting | never-seen domain | cells | accuracy | adapted | balanced accuracy (adapted) | flagged atypical "
        "| Munich normal accuracy (adapted) | per-class recall, adapted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for setting, held_out in done:
        if (setting, held_out) not in scored:
            lines.append(carried[0][(setting, held_out)])
            continue
        r = results[(setting, held_out)]
        d, a, m, ma = r[held_out], r[f"{held_out} adapted"], r["Munich"], r["Munich adapted"]
        recall = ", ".join(f"{c} {_pct(v)} of {a['per_class_cells'][c]}" for c, v in a["per_class_recall"].items())
        lines.append(
            f"| {setting} | {held_out} | {d['cells']} | {_pct(d['accuracy'])} | {_pct(a['accuracy'])} | "
            f"{_pct(d['balanced_accuracy'])} ({_pct(a['balanced_accuracy'])}) | {_pct(d.get('flagged_atypical'))} | "
            f"{_pct(m['accuracy'])} ({_pct(ma['accuracy'])}) | {recall} |"
        )
    viewed = {k: v for k in done + partial if k in scored and (v := views_run(*k))}
    if viewed:
        lines += [
            "",
            f"The table above reads each cell once ({_views(TABLE_VIEWS)}). A prediction averages the class "
            f"probabilities over {VIEWS} of the cell's flips and quarter turns (`--views`, `data/augment.py`); the "
            "same models with 1, 4 and 8 views, accuracy (balanced accuracy):",
            "",
            # Not "| setting ...": earlier_rows() finds the other tables by that header.
            "| model (setting) | never-seen domain | " + " | ".join(_views(n) for n in VIEW_COUNTS) + " | "
            + " | ".join(f"Munich, {_views(n)}" for n in VIEW_COUNTS) + " |",
            "|---|---|" + "---|" * (2 * len(VIEW_COUNTS)),
        ]
        for (setting, held_out), v in viewed.items():
            cells = [f"{_pct(v[d][str(n)]['accuracy'])} ({_pct(v[d][str(n)]['balanced_accuracy'])})"
                     for d in (held_out, "Munich") for n in VIEW_COUNTS]
            lines.append(f"| {setting} | {held_out} | " + " | ".join(cells) + " |")
        gains = [v[k[1]][str(VIEWS)]["accuracy"] - v[k[1]]["1"]["accuracy"] for k, v in viewed.items()]
        lines.append(f"\n{VIEWS} views against 1 on the never-seen domain: {100 * min(gains):+.1f} to "
                     f"{100 * max(gains):+.1f} points over {len(gains)} models (mean {100 * np.mean(gains):+.1f}).")
    sized = {k: v for k in done + partial if k in scored and (v := size_run(*k))}
    if sized:
        lines += [
            "",
            "Size (`models/size.py`, `leukolens train size`): each cell's diameter in µm (its box's longer side times "
            "its image's scale, which the shipped detector estimates from the image's own red cells, as `analyze` "
            "does) weighed into its type by Bayes' rule with per-class log-normal sizes fitted on "
            f"{SIZE_FIT_CELLS} training cells per class of each training domain (never the test domain); "
            f"{VIEWS} views. Accuracy (balanced accuracy) from the image alone and with size; per-class recall with "
            "size:",
            "",
            "| model (setting) | never-seen domain | cells with a scale | image | image + size | per-class recall, "
            "image + size (image) |",
            "|---|---|---|---|---|---|",
        ]
        for (setting, held_out), v in sized.items():
            image, both = v["image"], v["image+size"]
            recall = ", ".join(f"{c} {_pct(x)} ({_pct(image['per_class_recall'][c])})"
                               for c, x in both["per_class_recall"].items())
            lines.append(
                f"| {setting} | {held_out} | {_pct(v['sized'])} | {_pct(image['accuracy'])} "
                f"({_pct(image['balanced_accuracy'])}) | {_pct(both['accuracy'])} ({_pct(both['balanced_accuracy'])}) "
                f"| {recall} |"
            )
        gains = [v["image+size"]["accuracy"] - v["image"]["accuracy"] for v in sized.values()]
        lines.append(f"\nWith size against without, on the never-seen domain: {100 * min(gains):+.1f} to "
                     f"{100 * max(gains):+.1f} points over {len(gains)} models (mean {100 * np.mean(gains):+.1f}).")
    lines += [
        "",
        "`leukolens calibrate` (the head only: the default) with labelled cells of the never-seen domain "
        "(drawn evenly over the five classes from its train split, seed 0), tested on its held-out cells (PBC test, "
        "BCCD val and test, Chula's validation slides): accuracy, and share of those ordinary cells flagged atypical.",
        "",
        *CURVE_HEADER,
    ]
    for setting, held_out in done:
        if (setting, held_out) not in scored:
            if (setting, held_out) in carried[1]:
                lines.append(carried[1][(setting, held_out)])
            continue
        lines.append(_curve_row(setting, held_out, results[(setting, held_out)]["calibrate"]))
    tuned = [k for k in done if k in results and "calibrate fine-tuned" in results[k]]
    tuned_rows = [row for key, row in carried[2].items() if key not in tuned and key in carried[0]]
    if tuned or tuned_rows:
        lines += [
            "",
            f"The same with `calibrate --finetune-epochs {FINETUNE_EPOCHS}` (keeps no blast score): after the head is "
            "refit, the backbone's last two stages and the class head train on the lab's cells with the robust "
            "augmentation, batch-norm statistics kept, the attribute heads held to the base model's readings "
            "(`train/calibrate.py`).",
            "",
            *CURVE_HEADER,
            *tuned_rows,
        ]
    for setting, held_out in tuned:
        lines.append(_curve_row(setting, held_out, results[(setting, held_out)]["calibrate fine-tuned"]))
    demo = demo_agreement()
    lines += ["", f"`make demo` (`analyze` on its six bundled BCCD test fields, the shipped models): "
              f"{demo['right']} of {demo['cells']} white cells typed as BCCD types them (target 6 of 7); the PBC-only "
              "model typed 1."]
    lines += [
        "",
        "Published anchors: a model trained on Raabin-WBC scored 94% there and 52% on LISC (Tavakoli 2021); two "
        "training sets with a colour transform and at most 100 labelled target images gave above 80% on each of 8 "
        "other sets (Chossegros 2024). Targets: at least 90% on every never-seen domain, 95% after `calibrate` "
        "with 100 cells, at most 10% of ordinary cells flagged atypical.",
    ]
    return "\n".join(lines)


BENCH_SETTINGS = ("robust",)
"""What `make bench` trains when missing (about 35 minutes); the other settings are trained on request
(``python -m benchmarks.cell_domains train SETTING [DOMAIN ...]``) and shown once trained."""


def run() -> str:
    for setting in BENCH_SETTINGS:
        for held_out in DOMAINS:
            train_run(setting, held_out)
    return section()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "train":
        for held in sys.argv[3:] or DOMAINS:
            best = train_run(sys.argv[2], held)
            if sys.argv[2] in PARTIAL:
                print(json.dumps({"views": views_run(sys.argv[2], held),
                                  "size": {k: size_run(sys.argv[2], held)[k] for k in ("image", "image+size")}}))
                continue
            result = evaluate_run(sys.argv[2], held)
            print(json.dumps({k: result[k] for k in (held, "Munich")}, indent=1))
    else:
        print(section())
    np.set_printoptions()
