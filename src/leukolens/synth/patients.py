"""Patients: what a diagnosis puts in the blood, as documented tables, and one patient's draw from them.

Each diagnosis gives white-cell class shares as ranges (:class:`ClassMix`): ``fixed`` classes get a share drawn
uniformly in their range, the ``rest`` classes split what remains in proportion to jittered weights. A patient
draws one variant and one mix, so two AML patients differ as real ones do. Cell counts per 100x field, platelets,
smudge cells and red-cell size variation (anisocytosis) are per-diagnosis ranges too. :data:`DIAGNOSES` documents
the constraints each mix keeps (e.g. blasts above 20% of white cells in acute leukemia); the tests check them on
drawn cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leukolens.io.common import LeukolensError
from leukolens.records import LLD_CLASSES
from leukolens.synth.cells import CELL_TYPES

Range = tuple[float, float]

BLASTS = ("Myeloblast", "Lymphoblast", "Monoblast")
BLAST_EQUIVALENTS = ("Myeloblast", "Monoblast", "Promonocyte", "Abnormal promyelocyte")
"""Cells counted as blasts in AML (WHO: promonocytes and abnormal promyelocytes count with myeloblasts and
monoblasts)."""


@dataclass(frozen=True)
class ClassMix:
    """White-cell class shares of one variant of a diagnosis (shares of white cells, smudge cells not counted)."""

    name: str
    fixed: dict[str, Range]
    rest: dict[str, float]


@dataclass(frozen=True)
class Constraint:
    """A documented rule a diagnosis's class mix keeps: the share of ``classes`` among white cells is in range."""

    description: str
    classes: tuple[str, ...]
    minimum: float = 0.0
    maximum: float = 1.0


@dataclass(frozen=True)
class Diagnosis:
    """What blood of this diagnosis looks like on a smear.

    Attributes:
        variants: (probability, mix) pairs; a patient has one variant.
        white_cells: range of the mean number of white cells per 100x field (a 49 um square); smears from
            leukemia patients are crowded with white cells.
        red_cells: range of red cells per 100x field (fewer in the anaemia of acute leukemia).
        platelets: range of platelets per 100x field (few in acute leukemia, many in CML).
        smudge_cells: range of smudge cells per white cell (CLL's fragile lymphocytes).
        anisocytosis: standard deviation of red-cell diameter, micrometres.
    """

    name: str
    description: str
    variants: tuple[tuple[float, ClassMix], ...]
    constraints: tuple[Constraint, ...]
    white_cells: Range
    red_cells: Range
    platelets: Range
    smudge_cells: Range
    anisocytosis: float


DIAGNOSES: dict[str, Diagnosis] = {
    d.name: d
    for d in (
        Diagnosis(
            "normal",
            "healthy adult: mostly neutrophils and lymphocytes, no blasts",
            (
                (
                    1.0,
                    ClassMix(
                        "normal",
                        {"Neutrophil": (0.45, 0.65), "Lymphocyte": (0.20, 0.33)},
                        {"Monocyte": 5, "Eosinophil": 2.5, "Basophil": 0.5, "Atypical lymphocyte": 1},
                    ),
                ),
            ),
            (
                Constraint("neutrophils", ("Neutrophil",), minimum=0.35),
                Constraint(
                    "blasts and abnormal promyelocytes", BLASTS + ("Promonocyte", "Abnormal promyelocyte"), maximum=0
                ),
            ),
            white_cells=(1.0, 2.0),
            red_cells=(30, 40),
            platelets=(1, 4),
            smudge_cells=(0.0, 0.01),
            anisocytosis=0.4,
        ),
        Diagnosis(
            "ALL",
            "acute lymphoblastic leukemia: lymphoblasts over 20% of white cells",
            (
                (
                    1.0,
                    ClassMix(
                        "ALL",
                        {"Lymphoblast": (0.40, 0.90)},
                        {
                            "Lymphocyte": 20,
                            "Neutrophil": 8,
                            "Monocyte": 1.5,
                            "Atypical lymphocyte": 1,
                            "Eosinophil": 0.5,
                        },
                    ),
                ),
            ),
            (
                Constraint("lymphoblasts", ("Lymphoblast",), minimum=0.20),
                Constraint("myeloid blasts", BLAST_EQUIVALENTS, maximum=0),
            ),
            white_cells=(2.5, 6.0),
            red_cells=(18, 32),
            platelets=(0, 1),
            smudge_cells=(0.0, 0.05),
            anisocytosis=0.7,
        ),
        Diagnosis(
            "AML",
            "acute myeloid leukemia: blasts (or blast equivalents) over 20% of white cells",
            (
                (
                    0.55,
                    ClassMix(
                        "AML with myeloblasts",
                        {"Myeloblast": (0.35, 0.75)},
                        {
                            "Neutrophil": 15,
                            "Lymphocyte": 12,
                            "Monocyte": 4,
                            "Myelocyte": 3,
                            "Metamyelocyte": 3,
                            "Eosinophil": 1,
                            "Basophil": 0.5,
                        },
                    ),
                ),
                (
                    0.30,
                    ClassMix(
                        "acute monocytic leukemia",
                        {"Monoblast": (0.20, 0.45), "Promonocyte": (0.10, 0.25), "Myeloblast": (0.02, 0.10)},
                        {"Monocyte": 12, "Neutrophil": 10, "Lymphocyte": 10},
                    ),
                ),
                (
                    0.15,
                    ClassMix(
                        "acute promyelocytic leukemia",
                        {"Abnormal promyelocyte": (0.40, 0.80), "Myeloblast": (0.02, 0.08)},
                        {"Neutrophil": 8, "Lymphocyte": 12, "Monocyte": 2},
                    ),
                ),
            ),
            (
                Constraint("blasts and blast equivalents", BLAST_EQUIVALENTS, minimum=0.20),
                Constraint("lymphoblasts", ("Lymphoblast",), maximum=0),
            ),
            white_cells=(2.5, 6.0),
            red_cells=(18, 32),
            platelets=(0, 1),
            smudge_cells=(0.0, 0.02),
            anisocytosis=0.7,
        ),
        Diagnosis(
            "CLL",
            "chronic lymphocytic leukemia: many small mature lymphocytes, smudge cells",
            (
                (
                    1.0,
                    ClassMix(
                        "CLL",
                        {"Lymphocyte": (0.70, 0.90)},
                        {
                            "Neutrophil": 10,
                            "Atypical lymphocyte": 2,
                            "Monocyte": 2,
                            "Eosinophil": 0.5,
                            "Lymphoblast": 0.3,
                        },
                    ),
                ),
            ),
            (
                Constraint("lymphocytes", ("Lymphocyte",), minimum=0.60),
                Constraint("blasts", BLASTS, maximum=0.05),
            ),
            white_cells=(3.0, 7.0),
            red_cells=(22, 35),
            platelets=(0.5, 3),
            smudge_cells=(0.10, 0.30),
            anisocytosis=0.5,
        ),
        Diagnosis(
            "CML",
            "chronic myeloid leukemia, chronic phase: left shift with myelocytes, basophils and eosinophils",
            (
                (
                    1.0,
                    ClassMix(
                        "CML chronic phase",
                        {
                            "Neutrophil": (0.30, 0.42),
                            "Myelocyte": (0.10, 0.18),
                            "Metamyelocyte": (0.08, 0.14),
                            "Basophil": (0.04, 0.10),
                            "Eosinophil": (0.03, 0.08),
                            "Myeloblast": (0.01, 0.05),
                        },
                        {"Lymphocyte": 8, "Monocyte": 3},
                    ),
                ),
            ),
            (
                Constraint("myelocytes and metamyelocytes (left shift)", ("Myelocyte", "Metamyelocyte"), minimum=0.12),
                Constraint("basophils", ("Basophil",), minimum=0.02),
                Constraint("eosinophils", ("Eosinophil",), minimum=0.015),
                Constraint("blasts", BLASTS, maximum=0.10),
            ),
            white_cells=(4.0, 8.0),
            red_cells=(22, 35),
            platelets=(2, 6),
            smudge_cells=(0.0, 0.01),
            anisocytosis=0.5,
        ),
    )
}
"""The five diagnoses, in the order patients cycle through them."""


def diagnosis_name(text: str) -> str:
    """The canonical diagnosis name for a user's spelling (``aml``, ``Normal``...)."""
    for name in DIAGNOSES:
        if name.lower() == text.strip().lower():
            return name
    raise LeukolensError(f"unknown diagnosis {text!r}: use one of {', '.join(DIAGNOSES)}")


@dataclass(frozen=True)
class Patient:
    """One patient's sample: their diagnosis, their own class mix and counts, and the stain of their slide.

    Attributes:
        mix: class -> share of white cells (sums to 1).
        white_cells, red_cells, platelets: mean counts per 100x field.
        smudge_cells: smudge cells per white cell.
    """

    sample_id: str
    diagnosis: str
    variant: str
    stain: str
    seed: int
    mix: dict[str, float]
    white_cells: float
    red_cells: float
    platelets: float
    smudge_cells: float
    anisocytosis: float

    def draw_labels(self, rng: np.random.Generator, count: int) -> list[str]:
        """``count`` white-cell classes drawn from this patient's mix."""
        names = list(self.mix)
        return [names[i] for i in rng.choice(len(names), size=count, p=list(self.mix.values()))]


def draw_mix(mix: ClassMix, rng: np.random.Generator) -> dict[str, float]:
    """One patient's class shares from a variant's ranges; the rest classes split what the fixed ones leave."""
    shares = {name: float(rng.uniform(low, high)) for name, (low, high) in mix.fixed.items()}
    remaining = 1.0 - sum(shares.values())
    if remaining < 0:  # a table error, not a user's: the fixed ranges must leave room
        raise ValueError(f"class mix {mix.name!r}: fixed shares can exceed 1")
    weights = {name: w * float(rng.uniform(0.5, 1.5)) for name, w in mix.rest.items()}
    total = sum(weights.values())
    for name, weight in weights.items():
        shares[name] = shares.get(name, 0.0) + remaining * weight / total
    return {name: shares[name] for name in LLD_CLASSES.names if shares.get(name, 0) > 0}


def make_patient(diagnosis: str, *, sample_id: str, seed: int, stain: str) -> Patient:
    """Draw a patient of the given diagnosis: variant, class mix and cell counts, all from ``seed``."""
    table = DIAGNOSES[diagnosis_name(diagnosis)]
    rng = np.random.default_rng([seed, 7])
    probabilities = [p for p, _ in table.variants]
    variant = table.variants[int(rng.choice(len(probabilities), p=probabilities))][1]
    mix = draw_mix(variant, rng)
    assert all(name in CELL_TYPES for name in mix), "every class of a mix needs a cell type"
    return Patient(
        sample_id=sample_id,
        diagnosis=table.name,
        variant=variant.name,
        stain=stain,
        seed=seed,
        mix=mix,
        white_cells=float(rng.uniform(*table.white_cells)),
        red_cells=float(rng.uniform(*table.red_cells)),
        platelets=float(rng.uniform(*table.platelets)),
        smudge_cells=float(rng.uniform(*table.smudge_cells)),
        anisocytosis=table.anisocytosis,
    )
