"""Synthetic data sets end to end: reproducible, sparse and full exports that agree, the same cells in every
domain, output that `leukolens data validate` accepts, and clear errors for bad parameters."""

from pathlib import Path

import numpy as np
import pytest

from leukolens.cli import main
from leukolens.io import read_dataset
from leukolens.io.common import LeukolensError
from leukolens.synth import (
    LLD_DOMAINS,
    DomainSpec,
    Slide,
    SynthConfig,
    make_patient,
    parse_domains,
    render_field,
    write_synthetic,
)

TWO_DOMAINS = ("high-cost:high-end:100x", "low-cost:phone:40x:Giemsa")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Five patients (all five diagnoses), one field each, in two domains, at 256 pixels."""
    out = tmp_path_factory.mktemp("synth") / "out"
    config = SynthConfig(patients=5, fields_per_patient=1, size=256, seed=3, domains=TWO_DOMAINS)
    return write_synthetic(config, out), out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_ones(tmp_path):
    config = SynthConfig(patients=2, fields_per_patient=1, size=128, seed=11)
    write_synthetic(config, tmp_path / "a")
    write_synthetic(config, tmp_path / "b", workers=2)  # worker processes must not change anything
    write_synthetic(SynthConfig(patients=2, fields_per_patient=1, size=128, seed=12), tmp_path / "c")
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    images_a = {data for name, data in a.items() if name.endswith(".jpg")}
    images_c = {data for name, data in c.items() if name.endswith(".jpg")}
    assert len(images_a) == 2 and not images_a & images_c


def test_five_patients_give_all_five_diagnoses_with_domain_metadata(run):
    report, out = run
    full = read_dataset(out / "full" / "annotations.json")
    assert {f.domain.diagnosis for f in full.fields} == {"normal", "ALL", "AML", "CLL", "CML"}
    assert len(full) == 10
    for f in full.fields:
        assert f.domain.source == "leukolens-synth" and f.domain.sample_id and f.domain.stain
        assert f.fully_annotated  # the full export labels every cell
    giemsa = [f for f in full.fields if f.domain.camera == "phone"]
    assert {f.domain.stain for f in giemsa} == {"Giemsa"} and {f.domain.magnification for f in giemsa} == {"40x"}
    assert "fields per diagnosis: normal 2, ALL 2, AML 2, CLL 2, CML 2" in report.summary()


def test_sparse_export_keeps_exactly_the_cells_centred_in_the_region(run):
    _, out = run
    sparse = {f.id: f for f in read_dataset(out / "sparse").fields}
    full = {f.id: f for f in read_dataset(out / "full" / "annotations.json").fields}
    assert sparse.keys() == full.keys()
    kept_any = False
    for name, f in sparse.items():
        assert len(f.regions) == 1
        region = f.regions[0]
        expected = []
        for cell in full[name].cells:
            x1, y1, x2, y2 = cell.box.pixels_xyxy(f.size)
            if region.contains_point((x1 + x2) / 2, (y1 + y2) / 2):
                expected.append(cell)
        assert [c.label for c in f.cells] == [c.label for c in expected]
        assert [c.attributes for c in f.cells] == [c.attributes for c in expected]
        assert all(c.box.close_to(e.box, image_size=f.size, tolerance=1e-3) for c, e in zip(f.cells, expected))
        kept_any |= bool(f.cells)
    assert kept_any
    label_file = next((out / "sparse" / "labels").glob("*.txt"))
    assert all(len(line.split()) == 16 for line in label_file.read_text().splitlines())


def test_the_annotated_region_covers_the_chosen_fraction_of_a_100x_field(run):
    report, _ = run
    fractions = [f.annotated_fraction() for f in report.dataset.fields if f.domain.magnification == "100x"]
    assert np.mean(fractions) == pytest.approx(0.1, abs=0.01)


def test_the_same_slide_under_two_domains_has_the_same_cells_and_other_pixels():
    slide = Slide(make_patient("CML", sample_id="P1", seed=8, stain="Wright"), size=320)
    a = render_field(slide, 0, DomainSpec("high-cost", "high-end", "100x"))
    b = render_field(slide, 0, DomainSpec("low-cost", "phone", "100x", "May-Grunwald-Giemsa"))
    assert a.cells and [(c.label, c.attributes, c.box) for c in a.cells] == [
        (c.label, c.attributes, c.box) for c in b.cells
    ]
    assert a.region == b.region
    difference = np.abs(np.asarray(a.image, float) - np.asarray(b.image, float)).mean()
    assert difference > 5


def test_at_40x_the_100x_cells_are_still_there_smaller_and_closer_to_the_centre():
    slide = Slide(make_patient("AML", sample_id="P1", seed=9, stain="Wright"), size=320)
    high = render_field(slide, 0, DomainSpec(magnification="100x"))
    low = render_field(slide, 0, DomainSpec(magnification="40x"))
    assert len(low.cells) >= len(high.cells)
    for cell in high.cells:
        x1, y1, x2, y2 = cell.box.pixels_xyxy()
        if min(x1, y1) <= 0 or max(x2, y2) >= 320:
            continue  # cut by the 100x border: its 100x box is not the whole cell
        centre = ((x1 + x2) / 2 - 160) * 0.4 + 160, ((y1 + y2) / 2 - 160) * 0.4 + 160
        matches = [
            c
            for c in low.cells
            if c.label == cell.label
            and c.attributes == cell.attributes
            and np.hypot(*(np.subtract(centre, np.mean(np.reshape(c.box.pixels_xyxy(), (2, 2)), axis=0)))) < 2
        ]
        assert len(matches) == 1


def test_data_validate_accepts_both_exports(run, capsys):
    _, out = run
    assert main(["data", "validate", str(out / "sparse")]) == 0
    assert main(["data", "validate", str(out / "full" / "annotations.json")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("problems: none") == 2


def test_the_cli_writes_fields_of_all_five_diagnoses(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["synth", "--patients", "5", "--fields-per-patient", "1", "--size", "160", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fields per diagnosis: normal 1, ALL 1, AML 1, CLL 1, CML 1" in printed
    assert (out / "patients.csv").read_text().count("\n") == 6
    assert main(["data", "validate", str(out / "sparse")]) == 0


def test_lld_names_its_twelve_captures():
    specs = parse_domains(["lld"])
    assert len(specs) == len(LLD_DOMAINS) == 12
    assert {s.magnification for s in specs} == {"100x", "40x", "10x"}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"annotated_fraction": 0}, r"annotated fraction must be in \(0, 1\]"),
        ({"annotated_fraction": 1.5}, r"annotated fraction must be in \(0, 1\]"),
        ({"patients": -1}, "patients must be at least 1, got -1"),
        ({"fields_per_patient": 0}, "fields per patient must be at least 1"),
        ({"size": 10}, "size must be between 64 and 4096"),
        ({"domains": ("high-cost:webcam:100x",)}, "unknown camera 'webcam': use one of high-end, mid-level, phone"),
        ({"domains": ("100x",)}, "should read MICROSCOPE:CAMERA:MAGNIFICATION"),
        ({"domains": ("high-cost:high-end:60x",)}, "unknown magnification '60x'"),
        ({"stains": ("H&E",)}, "unknown stain 'H&E'"),
        ({"diagnoses": ("MDS",)}, "unknown diagnosis 'MDS'"),
        ({"label_noise": 1.0}, r"label noise must be in \[0, 1\)"),
    ],
)
def test_bad_parameters_are_clear_errors(options, message):
    with pytest.raises(LeukolensError, match=message):
        SynthConfig(**options)


def test_the_cli_reports_bad_parameters_in_one_line(tmp_path, capsys):
    assert main(["synth", "--patients", "-2", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip() == "leukolens: error: patients must be at least 1, got -2"
    assert main(["synth", "--annotated-fraction", "0", "--out", str(tmp_path / "x")]) == 2
    assert "annotated fraction must be in (0, 1]" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a.txt").write_text("x")
    assert main(["synth", "--out", str(tmp_path / "full")]) == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert main(["synth", "--workers", "0", "--out", str(tmp_path / "y")]) == 2
    assert "workers must be at least 1" in capsys.readouterr().err
