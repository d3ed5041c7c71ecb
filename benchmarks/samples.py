"""Evaluation at the sample level: the blast percentage and the leukemia suggestion of whole samples.

Protocol (fixed before any number was looked at):

1. Virtual samples of real cells (the blast score and the interpretation, without the detector).
   - Cells: the shipped cell model (``src/leukolens/weights/cellnet-pbc.pt``, with its blast scorer; never refitted
     here, and refused when its examples include a Munich MYO cell) reads every cell once, whole, as
     ``leukolens predict cells`` reads a single-cell image (the blast benchmark's protocol); samples are composed
     from these cached predictions.
   - Blasts: the 10 Munich MYO myeloblasts (originals; the blast benchmark's test cells, never the scorer's examples,
     which are the Munich MOB and bone-marrow BLA cells).
   - Normal cells, two sources, each a sample of its own: PBC's test split (file-name prefixes SNE, BNE, LY, MO, EO,
     BA; the 8 undivided ``NEUTROPHIL`` images left out) and Munich's normal classes (NGS, NGB, LYT, MON, EOS, BAS,
     10 cells each; the same microscope as the blasts). Each normal cell's type is drawn from a normal adult
     differential (:data:`NORMAL_DIFFERENTIAL`: segmented neutrophils 55%, band neutrophils 5%, lymphocytes 30%,
     monocytes 6%, eosinophils 3%, basophils 1%).
   - A sample: :data:`SAMPLE_CELLS` (200, CLSI H20-A2's reference count) white cells, exactly ``round(fraction * 200)``
     of them blasts, at fractions 0, 5, 10, 20, 30, 50 and 80%; :data:`VIRTUAL_SEEDS` (20) seeds per fraction and
     source. Within a group (the blasts, or one normal type of one source) cells are drawn without replacement
     until the group is used up, then again from a reshuffled group: with 10 blasts, a sample with 160 blasts holds
     each of them 16 times, and a Munich sample each of its 10 segmented neutrophils about 11 times.
   - Each sample is one :class:`~leukolens.predict.results.AnalyzedField` of those cells given to
     :func:`leukolens.sample.interpret` with the blast scorer's call rates (as ``analyze`` gives them). Measured:
     the blast % it reports (cells called blast, % of white cells counted: what the rules test), the secondary
     estimate beside it (adjusted for the blast call's sensitivity and false-positive rate from the scorer's fit;
     no rule reads it), and its suggestion. (For one run the rules tested the adjusted estimate; it erred more than
     the count, 13.8 points against 12.6, and the count is the headline again: docs/interpretation.md.)
   - Reported: per true fraction and overall, the mean absolute error of the counted and of the adjusted blast %
     in points (target at most 5, on the counted); the AUROC of each for acute (true fraction at least 20%)
     against not (under 20%) over all samples (target at least 0.95, on the counted); the suggestion at each
     fraction, and acute leukemia suggested (any lineage) against truth at the 20% line. Also, not a target: the
     error of the expected blast % (the sum of the cells' blast probabilities), and the share of MYO and of normal
     cells called blast, which set the counted blast % of a sample.
2. Synthetic patients through the real ``analyze`` (detector, cell model, interpretation; shipped weights, default
   options: no overlays drawn, no adaptation, no stain matching).
   - Patients: ``make_patients(SynthConfig(patients=10, seed=15))``, the patients ``leukolens synth --patients 10
     --seed 15`` draws: :data:`PATIENTS_PER_DIAGNOSIS` (2) of each diagnosis (normal, ALL, AML, CLL, CML), their
     stain drawn per patient. 2 and not 4 to keep the whole benchmark to about six minutes on 2 cores: a sample
     takes 7-20 s of `analyze` (the detector, most of all at 40x, where fields are enlarged 2.5 times and tiled).
   - Fields: 640x640, fields 0, 1, 2... of the patient's slide rendered under a domain until their white cells
     (smudge cells aside, by the generator's labels) reach :data:`TARGET_WHITE_CELLS` (150, so that a detector
     missing some still leaves the 100 the interpretation needs), at most :data:`MAX_FIELDS` fields; one sample
     per patient and domain. (Changed after the first run, in the sample size, not the models or the rules: with
     120 and one patient per diagnosis, the detector counted 91 and 99 of 120 and 138 at 40x, two samples fell
     under 100 counted and got "not enough cells"; such a sample still counts as wrong.)
   - Domains: the shipped detector and cell model were trained on real sets only (BCCD, TXL-PBC, Chula; PBC, BCCD,
     Chula), never on a synthetic field, so every synthetic domain is one they never trained on. ``main``:
     ``high-cost:high-end:100x``, the generator's default and the nearest to the training sets (100x oil, good
     optics). ``held out``: ``low-cost:phone:40x``, a low-cost microscope photographed with a phone at 40x, the
     farthest from them. The same patients under both.
   - Truth: the patient's diagnosis. Suggestion -> type: acute leukemia, lymphoid -> ALL; myeloid -> AML; lineage
     unclear counts as neither (its own column); no evidence of leukemia -> normal; CLL, CML as named; not enough
     cells its own column. A suggestion counts whatever its status (supported or possible). Accuracy (target at
     least 90% in each domain) and the confusion matrix per domain; also the share of acute (ALL, AML) patients
     suggested acute leukemia of any lineage, and blast %: the true share of blasts and blast equivalents
     (myeloblasts, lymphoblasts, monoblasts, promonocytes, abnormal promyelocytes) among the rendered white cells
     against the reported ones (counted, and adjusted).

``make bench BENCH=samples`` runs both parts; nothing is trained or fitted.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from leukolens.analyze import analyze
from leukolens.eval.metrics import auroc
from leukolens.io.common import list_images
from leukolens.models.blast import BlastCallRates
from leukolens.models.weights import shipped
from leukolens.predict.cells import CellReader
from leukolens.predict.results import AnalyzedField, CellPrediction, PredictedCell
from leukolens.records import Box, BoxFormat
from leukolens.sample.interpret import interpret
from leukolens.synth import DIAGNOSES, DomainSpec, Slide, SynthConfig, make_patients, render_field
from leukolens.synth.cells import SMUDGE
from leukolens.synth.patients import BLAST_EQUIVALENTS, BLASTS

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
MUNICH = SHARED / "munich_aml_sample"
PBC_TEST = SHARED / "pbc" / "test" / "images"

BLAST_FRACTIONS = (0.0, 0.05, 0.10, 0.20, 0.30, 0.50, 0.80)
ACUTE_LINE = 0.20
SAMPLE_CELLS = 200
VIRTUAL_SEEDS = 20
NORMAL_DIFFERENTIAL = {
    "segmented neutrophil": 0.55,
    "band neutrophil": 0.05,
    "lymphocyte": 0.30,
    "monocyte": 0.06,
    "eosinophil": 0.03,
    "basophil": 0.01,
}
"""A normal adult differential (reference ranges: neutrophils 40-75% of which bands up to 5%, lymphocytes 20-45%,
monocytes 2-10%, eosinophils 1-6%, basophils 0-2%), near the middle of each range."""
PBC_PREFIXES = {"segmented neutrophil": "SNE", "band neutrophil": "BNE", "lymphocyte": "LY", "monocyte": "MO",
                "eosinophil": "EO", "basophil": "BA"}
MUNICH_CLASSES = {"segmented neutrophil": "NGS", "band neutrophil": "NGB", "lymphocyte": "LYT", "monocyte": "MON",
                  "eosinophil": "EOS", "basophil": "BAS"}
BLAST_CLASS = "MYO"

SYNTH_SEED = 15
PATIENTS_PER_DIAGNOSIS = 2
FIELD_SIZE = 640
TARGET_WHITE_CELLS = 150
MAX_FIELDS = 200
DOMAINS = {"main": "high-cost:high-end:100x", "held out": "low-cost:phone:40x"}
TRUE_BLASTS = tuple(dict.fromkeys((*BLASTS, *BLAST_EQUIVALENTS)))
SUGGESTED_TYPE = {
    "no evidence of leukemia": "normal",
    "acute leukemia, lymphoid": "ALL",
    "acute leukemia, myeloid": "AML",
    "acute leukemia, lineage unclear": "acute, lineage unclear",
    "CLL": "CLL",
    "CML": "CML",
    "not enough cells": "not enough cells",
}
TARGETS = {"mae": 5.0, "auroc": 0.95, "accuracy": 0.90}

Item = TypeVar("Item")


# ------------------------------------------------------------------------------------------------------ composing
def draw_cycled(group: Sequence[Item], count: int, rng: np.random.Generator) -> list[Item]:
    """``count`` members of ``group``: without replacement until the group is used up, then again from a reshuffled
    group, so that each member is drawn ``count // len(group)`` or one more times."""
    if count and not group:
        raise ValueError("cannot draw from an empty group")
    drawn: list[Item] = []
    while len(drawn) < count:
        drawn.extend(group[i] for i in rng.permutation(len(group)))
    return drawn[:count]


@dataclass(frozen=True)
class VirtualSample(Generic[Item]):
    """A sample composed of real cells: (group, cell) pairs, blasts under the group ``blast``."""

    blast_fraction: float
    cells: tuple[tuple[str, Item], ...]

    @property
    def blast_count(self) -> int:
        return sum(group == "blast" for group, _ in self.cells)

    def counts(self) -> Counter:
        return Counter(group for group, _ in self.cells)


def compose_sample(
    normal: Mapping[str, Sequence[Item]],
    blasts: Sequence[Item],
    *,
    blast_fraction: float,
    cells: int,
    proportions: Mapping[str, float],
    seed: int,
) -> VirtualSample[Item]:
    """A virtual sample of ``cells`` cells, exactly ``round(blast_fraction * cells)`` of them blasts; the type of each
    other cell drawn from ``proportions`` (normal type -> share), the cells of each group by :func:`draw_cycled`."""
    if not 0 <= blast_fraction <= 1:
        raise ValueError(f"blast fraction must be in [0, 1], got {blast_fraction}")
    rng = np.random.default_rng(seed)
    blast_count = round(blast_fraction * cells)
    names = list(proportions)
    shares = np.array([proportions[n] for n in names], dtype=float)
    per_type = rng.multinomial(cells - blast_count, shares / shares.sum())
    drawn = [("blast", c) for c in draw_cycled(blasts, blast_count, rng)]
    for name, count in zip(names, per_type):
        drawn.extend((name, c) for c in draw_cycled(normal[name], int(count), rng))
    order = rng.permutation(len(drawn))
    return VirtualSample(blast_fraction, tuple(drawn[i] for i in order))


def as_fields(predictions: Sequence[CellPrediction], stem: str = "virtual") -> list[tuple[str, AnalyzedField]]:
    """The cells as one analysed field, as ``analyze`` hands its fields to the interpretation."""
    cells = [
        PredictedCell(Box((0.0, 0.0, 1.0, 1.0), BoxFormat.XYXY), p.label,
                      attributes={n: a.value for n, a in p.attributes.items()}, number=i + 1, detector_class="WBC",
                      detector_score=1.0, prediction=p)
        for i, p in enumerate(predictions)
    ]
    return [(stem, AnalyzedField(Path(f"{stem}.jpg"), 1, 1, cells=cells))]


# ------------------------------------------------------------------------------------------------------ 1. virtual
def _groups() -> dict[str, tuple[dict[str, list[Path]], list[Path]]]:
    """Per normal source: its normal cells by type, and the blasts."""
    blasts = list_images(MUNICH / BLAST_CLASS)
    pbc = {name: [p for p in list_images(PBC_TEST) if p.name.split("_")[0] == prefix]
           for name, prefix in PBC_PREFIXES.items()}
    munich = {name: list_images(MUNICH / code) for name, code in MUNICH_CLASSES.items()}
    return {"PBC": (pbc, blasts), "Munich": (munich, blasts)}


def _reader() -> CellReader:
    reader = CellReader.from_checkpoint(shipped("cells"), engine="torch")
    if reader.blast is None:
        raise SystemExit("the shipped cell model has no blast scorer: run `make weights-blast` first")
    leaked = [s for s in reader.blast.example_sources if f"/{BLAST_CLASS}/" in s.replace("\\", "/")]
    if leaked:
        raise SystemExit(f"the blast scorer's examples include test blasts: {leaked}")
    return reader


@dataclass(frozen=True)
class VirtualResult:
    source: str
    fraction: float
    seed: int
    blast_percent: float  # as counted: what the rules test
    expected_percent: float
    suggestion: str
    status: str
    adjusted_percent: float  # the secondary estimate; nan when the scorer records no call rates


def virtual_samples(reader: CellReader) -> tuple[list[VirtualResult], dict[str, dict[str, float]]]:
    """Every virtual sample's reading; and per source, the share of each group called blast."""
    results, called = [], {}
    for source, (normal_paths, blast_paths) in _groups().items():
        normal = {name: reader.predict_files(paths) for name, paths in normal_paths.items()}
        blasts = reader.predict_files(blast_paths)
        called[source] = {name: float(np.mean([p.blast_suspected for p in cells])) for name, cells in normal.items()}
        called[source]["blast"] = float(np.mean([p.blast_suspected for p in blasts]))
        called[source]["normal (differential-weighted)"] = sum(
            NORMAL_DIFFERENTIAL[name] * called[source][name] for name in normal)
        for f, fraction in enumerate(BLAST_FRACTIONS):
            for seed in range(VIRTUAL_SEEDS):
                sample = compose_sample(normal, blasts, blast_fraction=fraction, cells=SAMPLE_CELLS,
                                        proportions=NORMAL_DIFFERENTIAL, seed=1000 * f + seed)
                reading = interpret(as_fields([p for _, p in sample.cells]), blast_call=reader.blast_call_rates)
                m, adjusted = reading.blasts.measured, reading.adjusted_blasts
                results.append(VirtualResult(source, fraction, seed, m.percent, m.expected_percent,
                                             reading.suggestion.name, reading.suggestion.status,
                                             float("nan") if adjusted is None else 100 * adjusted.share))
    return results, called


def _acute(name: str) -> bool:
    return name.startswith("acute leukemia")


def _called_text(called: dict[str, float]) -> str:
    per_type = ", ".join(f"{name} {share:.0%}" for name, share in called.items() if name in NORMAL_DIFFERENTIAL)
    return f"{per_type} ({called['normal (differential-weighted)']:.1%} in a normal differential)"


def _virtual_section(results: list[VirtualResult], called: dict[str, dict[str, float]]) -> tuple[list[str], dict]:
    sources = list(dict.fromkeys(r.source for r in results))

    def pick(source=None, fraction=None) -> list[VirtualResult]:
        return [r for r in results if source in (None, r.source) and fraction in (None, r.fraction)]

    def mae(rs, attribute="blast_percent") -> float:
        return float(np.mean([abs(getattr(r, attribute) - 100 * r.fraction) for r in rs]))

    def spread(rs, attribute) -> str:
        measured = [getattr(r, attribute) for r in rs]
        return f"{np.mean(measured):.1f} ({np.min(measured):.1f}-{np.max(measured):.1f})"

    def errors(rs) -> str:
        return f"{mae(rs):.1f} / {mae(rs, 'adjusted_percent'):.1f}"

    rows = []
    for fraction in BLAST_FRACTIONS:
        cells = []
        for source in sources:
            rs = pick(source, fraction)
            cells.append(f"{spread(rs, 'blast_percent')} | {spread(rs, 'adjusted_percent')} | {errors(rs)} | "
                         f"{sum(_acute(r.suggestion) for r in rs)}/{len(rs)}")
        rows.append(f"| {100 * fraction:.0f}% ({round(fraction * SAMPLE_CELLS)}) | " + " | ".join(cells)
                    + f" | {errors(pick(fraction=fraction))} |")
    summary = ["**all**", *(cell for s in sources for cell in ("", "", f"**{errors(pick(s))}**", "")),
               f"**{errors(results)}**"]
    rows.append("| " + " | ".join(summary) + " |")

    def area(rs, attribute="blast_percent") -> float:
        return auroc([getattr(r, attribute) for r in rs if r.fraction < ACUTE_LINE],
                     [getattr(r, attribute) for r in rs if r.fraction >= ACUTE_LINE])

    def table(rs) -> tuple[int, int, int, int]:
        truth = [r.fraction >= ACUTE_LINE for r in rs]
        said = [_acute(r.suggestion) for r in rs]
        return (sum(t and s for t, s in zip(truth, said)), sum(t and not s for t, s in zip(truth, said)),
                sum(s and not t for t, s in zip(truth, said)), sum(not t and not s for t, s in zip(truth, said)))

    order = list(SUGGESTED_TYPE) + sorted({r.suggestion for r in results} - set(SUGGESTED_TYPE))
    seen = sorted({f"{r.suggestion} ({r.status})" for r in results}, key=lambda s: order.index(s.rsplit(" (", 1)[0]))
    breakdown = []
    for fraction in BLAST_FRACTIONS:
        said = Counter(f"{r.suggestion} ({r.status})" for r in pick(fraction=fraction))
        breakdown.append(f"| {100 * fraction:.0f}% | " + " | ".join(str(said[s]) for s in seen) + " |")
    overall = {"mae": mae(results), "auroc": area(results), "mae_adjusted": mae(results, "adjusted_percent"),
               "auroc_adjusted": area(results, "adjusted_percent")}
    tp, fn, fp, tn = table(results)
    header = " | ".join(f"{s} normals: counted blast % mean (range) | adjusted blast % mean (range) | abs. error "
                        "counted / adjusted | acute suggested" for s in sources)
    lines = [
        "### 1. Virtual samples of real cells: Munich myeloblasts among normal cells",
        "",
        f"{SAMPLE_CELLS} white cells a sample, exactly the true share of them Munich MYO myeloblasts (10 cells, drawn "
        "again from a reshuffled set once used up: at 80% each blast is in the sample 16 times), the rest normal "
        "cells of one source in a normal differential (segmented neutrophils 55%, bands 5%, lymphocytes 30%, "
        "monocytes 6%, eosinophils 3%, basophils 1%; Munich has 10 cells a type, so they repeat too); "
        f"{VIRTUAL_SEEDS} samples per fraction and source, read by the shipped cell model once per cell (whole, as "
        "`predict cells` reads them) and interpreted by `leukolens.sample.interpret` with the scorer's call rates. "
        "Counted blast %: cells called blast, % of white cells counted (what the rules test); adjusted: (counted - "
        "FPR) / (TPR - FPR), clipped, with the rates from the scorer's fit (reported beside it, read by no rule); "
        "absolute error in points; acute suggested: acute leukemia of any lineage.",
        "",
        f"| true blasts (cells) | {header} | abs. error, both: counted / adjusted |",
        "|---|" + "---|---|---|---|" * len(sources) + "---|",
        *rows,
        "",
        f"Acute (at least {100 * ACUTE_LINE:.0f}% blasts) against not, over all {len(results)} samples: AUROC of the "
        f"counted blast % **{overall['auroc']:.3f}** (" + ", ".join(f"{s} {area(pick(s)):.3f}" for s in sources)
        + f"), of the adjusted {overall['auroc_adjusted']:.3f} (the adjustment is monotone: only ties at 0 can "
        f"change it); acute leukemia suggested for {tp} of {tp + fn} acute samples and {fp} of {fp + tn} others.",
        "",
        "Suggestions (and their status) at each true blast fraction, both sources:",
        "",
        "| true blasts | " + " | ".join(seen) + " |",
        "|---|" + "---|" * len(seen),
        *breakdown,
        "",
        f"Called blast, cell by cell (each cell once): MYO {called[sources[0]]['blast']:.0%}; normal cells "
        + "; ".join(f"{s} {_called_text(called[s])}" for s in sources)
        + ". The expected blast % (the sum of the cells' blast probabilities) errs by "
        f"{mae(results, 'expected_percent'):.1f} points on average (not a target).",
    ]
    return lines, overall


# ------------------------------------------------------------------------------------------------------ 2. synthetic
@dataclass(frozen=True)
class PatientResult:
    sample_id: str
    diagnosis: str
    variant: str
    domain: str
    fields: int
    true_white_cells: int
    true_blast_percent: float
    white_cells_counted: int
    blast_percent: float | None  # as counted: what the rules test
    suggestion: str
    status: str
    seconds: float
    adjusted_blast_percent: float | None = None  # the secondary estimate (None: not computed)


def render_sample(slide: Slide, spec: DomainSpec, folder: Path) -> tuple[int, Counter]:
    """Render the slide's fields under ``spec`` into ``folder`` until :data:`TARGET_WHITE_CELLS` white cells; the
    number of fields and the true white cells by class (smudge cells aside)."""
    truth: Counter = Counter()
    fields = 0
    while sum(truth.values()) < TARGET_WHITE_CELLS and fields < MAX_FIELDS:
        rendered = render_field(slide, fields, spec)
        (folder / f"{rendered.name}.jpg").write_bytes(rendered.jpeg)
        truth.update(c.label for c in rendered.cells if c.label != SMUDGE)
        fields += 1
    return fields, truth


def synthetic_patients() -> list[PatientResult]:
    config = SynthConfig(patients=PATIENTS_PER_DIAGNOSIS * len(DIAGNOSES), seed=SYNTH_SEED, size=FIELD_SIZE,
                         domains=tuple(DOMAINS.values()))
    results = []
    for patient in make_patients(config):
        slide = Slide(patient, size=FIELD_SIZE)
        for domain, text in DOMAINS.items():
            with tempfile.TemporaryDirectory(prefix="leukolens-samples-") as work:
                images, out = Path(work) / "fields", Path(work) / "out"
                images.mkdir()
                fields, truth = render_sample(slide, DomainSpec.parse(text), images)
                start = time.perf_counter()
                summary = analyze([images], out=out, overlays=False, log=lambda _: None)
                seconds = time.perf_counter() - start
            reading = summary["interpretation"]
            total = sum(truth.values())
            results.append(PatientResult(
                patient.sample_id, patient.diagnosis, patient.variant, domain, fields, total,
                100 * sum(truth[c] for c in TRUE_BLASTS) / total, reading["white_cells_counted"],
                reading["blasts"]["percent"], reading["suggestion"]["name"], reading["suggestion"]["status"], seconds,
                (reading["blasts"].get("adjusted") or {}).get("percent"),
            ))
    return results


def _synthetic_section(results: list[PatientResult]) -> tuple[list[str], dict]:
    truths = list(DIAGNOSES)
    columns = list(dict.fromkeys(SUGGESTED_TYPE.values())) + sorted(
        {r.suggestion for r in results} - set(SUGGESTED_TYPE))
    accuracy, lines = {}, ["### 2. Synthetic patients through `analyze`", ""]
    lines.append(
        f"{PATIENTS_PER_DIAGNOSIS} patients per diagnosis (`leukolens synth --patients "
        f"{PATIENTS_PER_DIAGNOSIS * len(DIAGNOSES)} --seed {SYNTH_SEED}`), {FIELD_SIZE}x{FIELD_SIZE} fields rendered "
        f"until {TARGET_WHITE_CELLS} white cells, each patient a sample under each domain, read by the real `analyze` "
        "(shipped detector and cell model, default options). The models never trained on a synthetic field; main: "
        f"`{DOMAINS['main']}` (nearest the training sets), held out: `{DOMAINS['held out']}` (a low-cost microscope "
        "and a phone camera at 40x, the farthest). Rows: truth; columns: the suggestion's type, whatever its status.")
    for domain in DOMAINS:
        rs = [r for r in results if r.domain == domain]
        right = [SUGGESTED_TYPE.get(r.suggestion, r.suggestion) == r.diagnosis for r in rs]
        accuracy[domain] = float(np.mean(right))
        acute = [r for r in rs if r.diagnosis in ("ALL", "AML")]
        only_possible = sum(r.status != "supported" for r, ok in zip(rs, right) if ok)
        lines += [
            "",
            f"**{domain}** (`{DOMAINS[domain]}`): suggested type right for **{sum(right)}/{len(rs)} "
            f"({accuracy[domain]:.0%})** (target 90%); {only_possible} of the right ones only possible; "
            f"acute patients suggested acute leukemia of any lineage: "
            f"{sum(_acute(r.suggestion) for r in acute)}/{len(acute)}.",
            "",
            "| truth | " + " | ".join(columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        for truth in truths:
            cells = [sum(r.diagnosis == truth and SUGGESTED_TYPE.get(r.suggestion, r.suggestion) == c for r in rs)
                     for c in columns]
            lines.append(f"| {truth} | " + " | ".join(f"**{n}**" if c == truth and n else str(n)
                                                      for n, c in zip(cells, columns)) + " |")
    lines += ["", "Per diagnosis (means over its patients): fields read, white cells rendered and counted, blasts "
              "(and blast equivalents) rendered against the blast % reported, counted and adjusted, seconds of "
              "`analyze` per sample.", "",
              "| diagnosis | domain | fields | white cells rendered / counted | blasts rendered % / counted % / "
              "adjusted % | suggestions | seconds |", "|---|---|---|---|---|---|---|"]
    for truth in truths:
        for domain in DOMAINS:
            rs = [r for r in results if r.diagnosis == truth and r.domain == domain]
            said = Counter(f"{r.suggestion} ({r.status})" for r in rs)
            counted = [r.blast_percent for r in rs if r.blast_percent is not None]
            adjusted = [r.adjusted_blast_percent for r in rs if r.adjusted_blast_percent is not None]
            lines.append(
                f"| {truth} | {domain} | {np.mean([r.fields for r in rs]):.0f} | "
                f"{np.mean([r.true_white_cells for r in rs]):.0f} / {np.mean([r.white_cells_counted for r in rs]):.0f}"
                f" | {np.mean([r.true_blast_percent for r in rs]):.1f} / "
                f"{np.mean(counted) if counted else float('nan'):.1f} / "
                f"{np.mean(adjusted) if adjusted else float('nan'):.1f} | "
                + ", ".join(f"{name} {n}" for name, n in said.most_common())
                + f" | {np.mean([r.seconds for r in rs]):.1f} |")
    return lines, accuracy


# ------------------------------------------------------------------------------------------------------ report
def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


ACUTE_TYPES = ("ALL", "AML")


def failure_cause(result: PatientResult) -> str | None:
    """Where a synthetic sample's wrong suggestion comes from (None when right): too few cells counted (the
    detector), acute against not (the blast %), the wrong lineage of an acute leukemia (blast morphology), or the
    wrong non-acute type (cell typing or the CML and CLL rules)."""
    said = SUGGESTED_TYPE.get(result.suggestion, result.suggestion)
    if said == result.diagnosis:
        return None
    if said == "not enough cells":
        return "too few white cells counted (detector)"
    if _acute(result.suggestion) != (result.diagnosis in ACUTE_TYPES):
        return "acute against not (blast %)"
    if _acute(result.suggestion):
        return "lineage (blast morphology)"
    return "non-acute type (cell typing or the CML/CLL rules)"


def _bottlenecks(virtual: list[VirtualResult], called: dict[str, dict[str, float]],
                 patients: list[PatientResult], rates: BlastCallRates | None = None) -> list[str]:
    """Where it fails, from the numbers: the blast score on the virtual samples, the causes of the synthetic
    patients' wrong suggestions."""
    predicted = [100 * (r.fraction * called[r.source]["blast"]
                        + (1 - r.fraction) * called[r.source]["normal (differential-weighted)"]) for r in virtual]
    fit = float(np.mean([abs(r.blast_percent - p) for r, p in zip(virtual, predicted)]))
    myo = called[virtual[0].source]["blast"]
    lines = [
        "Where it fails:",
        "",
        f"- Virtual samples: the counted blast % is, within {fit:.1f} points on average, f x {myo:.0%} + "
        "(1 - f) x the share of the source's normal cells called blast (" + ", ".join(
            f"{s} {c['normal (differential-weighted)']:.1%}" for s, c in called.items())
        + f"), f the true fraction: the per-cell blast score (it calls {myo:.0%} of the myeloblasts, and the "
        "normal cells above), not the interpretation's counting, sets the error.",
    ]
    if rates is not None:
        lines.append(
            f"- The adjustment undoes that only as far as the fitted rates (TPR {rates.true_positive_rate:.2f}, FPR "
            f"{rates.false_positive_rate:.3f}) are these cells' (TPR {myo:.2f} on the myeloblasts; FPR "
            + ", ".join(f"{s} {c['normal (differential-weighted)']:.3f}" for s, c in called.items())
            + " on the normal differentials).")
    for domain in DOMAINS:
        rs = [r for r in patients if r.domain == domain]
        causes = Counter(c for c in map(failure_cause, rs) if c)
        blasts = []
        for name, group in (("acute", [r for r in rs if r.diagnosis in ACUTE_TYPES]),
                            ("other", [r for r in rs if r.diagnosis not in ACUTE_TYPES])):
            counted = [r.blast_percent for r in group if r.blast_percent is not None]
            adjusted = [r.adjusted_blast_percent for r in group if r.adjusted_blast_percent is not None]
            blasts.append(f"{name} patients {np.mean([r.true_blast_percent for r in group]):.1f}% rendered, "
                          f"{np.mean(counted) if counted else float('nan'):.1f}% counted, "
                          f"{np.mean(adjusted) if adjusted else float('nan'):.1f}% adjusted")
        lines.append(
            f"- Synthetic, {domain}: wrong suggestions by cause: "
            + (", ".join(f"{cause} {n}" for cause, n in causes.most_common()) or "none")
            + "; blasts " + "; ".join(blasts) + ".")
    return lines


def run() -> str:
    start = time.perf_counter()
    reader = _reader()
    virtual, called = virtual_samples(reader)
    virtual_lines, overall = _virtual_section(virtual, called)
    virtual_seconds = time.perf_counter() - start
    patients = synthetic_patients()
    synthetic_lines, accuracy = _synthetic_section(patients)
    fitted, rates = reader.blast.fitted, reader.blast_call_rates
    rates_text = "no call rates: no adjusted blast %" if rates is None else (
        f"call rates TPR {rates.true_positive_rate:.3f} ({rates.blasts_called}/{rates.blasts} examples, each left out) "
        f"and FPR {rates.false_positive_rate:.3f} ({rates.normals_called}/{rates.normals} PBC validation cells)")
    lines = [
        "## Samples: blast % and the leukemia suggestion on whole samples",
        "Protocol in `benchmarks/samples.py` (fixed before any number was looked at, but for the synthetic samples' "
        "size, raised after the first run as its docstring says). Shipped weights: "
        f"`{shipped('cells').name}` (blast scorer: {fitted.get('examples')} examples, threshold "
        f"{reader.blast.threshold:.3f}, {rates_text}) and `{shipped('detector').name}`; nothing trained or fitted "
        "here.",
        "",
        *virtual_lines,
        "",
        *synthetic_lines,
        "",
        f"Targets: blast % (counted) mean absolute error {overall['mae']:.1f} points (adjusted, not a target: "
        f"{overall['mae_adjusted']:.1f}; target at most {TARGETS['mae']:.0f}): "
        f"{_met(overall['mae'] <= TARGETS['mae'])}; acute vs not at 20%, AUROC {overall['auroc']:.3f} (target "
        f"{TARGETS['auroc']}): {_met(overall['auroc'] >= TARGETS['auroc'])}; synthetic patients, suggested type "
        + "; ".join(f"{d} {a:.0%}" for d, a in accuracy.items())
        + f" (target 90% in each): {_met(all(a >= TARGETS['accuracy'] for a in accuracy.values()))}.",
        "",
        *_bottlenecks(virtual, called, patients, rates),
        "",
        f"{len(virtual)} virtual samples in {virtual_seconds:.0f} s; {len(patients)} synthetic samples in "
        f"{time.perf_counter() - start - virtual_seconds:.0f} s (rendering and `analyze`) on this machine.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
