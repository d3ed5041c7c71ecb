"""The synthetic smear generator: peripheral blood smear fields with exact labels, for any diagnosis and domain.

Quick start::

    from leukolens.synth import SynthConfig, write_synthetic

    report = write_synthetic(SynthConfig(patients=5, fields_per_patient=4, seed=0), "out/synth")
    print(report.summary())

Or one field at a time::

    from leukolens.synth import DomainSpec, Slide, make_patient, render_field

    patient = make_patient("AML", sample_id="P001", seed=1, stain="Wright")
    field = render_field(Slide(patient), 0, DomainSpec("low-cost", "phone", "40x"))
    field.image.save("aml.png"); print(field.cells)

Modules: ``scene`` (drawing primitives), ``cells`` (cell types, attribute probabilities, drawing one cell),
``patients`` (diagnoses and their class mixes), ``domains`` (stain, microscope, camera, magnification),
``generate`` (slides, fields, data sets and their exports). ``docs/synthetic.md`` documents the tables and
compares synthetic fields with real ones.
"""

from leukolens.synth.cells import CELL_TYPES, SMUDGE, WhiteCell, draw_attributes, make_white_cell
from leukolens.synth.domains import (
    CAMERAS,
    DEFAULT_DOMAIN,
    LLD_DOMAINS,
    MAGNIFICATIONS,
    MICROSCOPES,
    STAINS,
    DomainSpec,
    parse_domains,
)
from leukolens.synth.generate import (
    RenderedField,
    Slide,
    SynthConfig,
    SynthReport,
    full_dataset,
    generate_dataset,
    make_patients,
    render_cell,
    render_field,
    sparse_dataset,
    write_synthetic,
)
from leukolens.synth.patients import DIAGNOSES, Patient, make_patient

__all__ = [
    "CAMERAS",
    "CELL_TYPES",
    "DEFAULT_DOMAIN",
    "DIAGNOSES",
    "LLD_DOMAINS",
    "MAGNIFICATIONS",
    "MICROSCOPES",
    "SMUDGE",
    "STAINS",
    "DomainSpec",
    "Patient",
    "RenderedField",
    "Slide",
    "SynthConfig",
    "SynthReport",
    "WhiteCell",
    "draw_attributes",
    "full_dataset",
    "generate_dataset",
    "make_patient",
    "make_patients",
    "make_white_cell",
    "parse_domains",
    "render_cell",
    "render_field",
    "sparse_dataset",
    "write_synthetic",
]
