"""The main job on the bundled sample data: read it, validate it, describe it, and draw it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from leukolens.data.summary import format_summary, summarize
from leukolens.io import ProblemLog, check_images, read_dataset, sniff_format
from leukolens.report.overlay import draw_field, save_png


def sample_path(name: str) -> Path:
    """A bundled sample data set: ``bccd`` (six VOC fields) or ``pbc`` (seven crops with WBCAtt attributes)."""
    path = Path(str(resources.files("leukolens") / "samples" / name))
    if not path.is_dir():
        raise FileNotFoundError(f"no bundled sample {name!r} at {path}")
    return path


SAMPLES = ("bccd", "pbc")


def run_demo(out: Path) -> dict[str, Path]:
    """Validate, describe and draw each bundled sample; returns the folder of drawings per sample."""
    drawn = {}
    for name in SAMPLES:
        path = sample_path(name)
        log = ProblemLog()
        format = sniff_format(path)
        dataset = read_dataset(path, format=format, log=log)
        check_images(dataset, log=log)
        print(format_summary(summarize(dataset, log, format=format)))
        folder = out / name
        for field in dataset.fields:
            save_png(draw_field(field, dataset.classes, schema=dataset.schema), folder / f"{field.id}.png")
        print(f"drew {len(dataset):,} fields with their labels to {folder}\n")
        drawn[name] = folder
    drawn["analyze"] = run_analyze_demo(out / "analyze")
    return drawn


def run_analyze_demo(out: Path) -> Path | None:
    """The main job on the bundled BCCD fields with the shipped weights: cells found, typed, described, counted."""
    from leukolens.analyze import analyze
    from leukolens.predict.weights import default_detector
    from leukolens.report.html import REPORT_NAME
    from leukolens.sample.differential import format_summary as format_differential

    if not default_detector().is_file():
        print(f"no shipped detector at {default_detector()}: skipping `leukolens analyze` (make weights-detector)")
        return None
    fields = sample_path("bccd") / "BCCD" / "JPEGImages"
    print(f"leukolens analyze {fields} --out {out}")
    print(format_differential(analyze([fields], out=out), out))
    report = out / REPORT_NAME
    if report.is_file():
        print(f"report: {report.resolve()} (open it in a browser: one file, works offline, prints)")
    return out
