"""`analyze` on more than one process: fields/s in one process and on a local Dask cluster of one and of two
one-thread workers (and two workers with four fields a task), on the same fields, the outputs compared file by file.

The fields are BCCD's test fields from ``../shared/data`` (the six bundled ones, repeated under new names, when it is
absent), with the shipped models, overlays on and the report off (the report is the client's, once per sample).
Each cluster's start and its workers' first task (model loading, ONNX sessions) are timed apart from the throughput,
which is the wall time of one ``analyze`` call on a warm cluster: the client's share (the sample's scale from its
first fields, the summary) is in it, as a user sees it.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_BCCD = REPO.parent / "shared" / "data" / "bccd" / "BCCD"
FIELDS = 96
REPEATS = 3
"""Calls timed per run; the median is reported (a call takes seconds, and one busy second moves a single one)."""
WARM_FIELDS = 8
TARGET = 1.7
"""--workers 2 against --workers 1 on this 2-core machine (docs/scaling.md)."""
RUNS = ((1, 1), (2, 1), (2, 4))
"""(workers, fields a task) of the cluster runs."""


def _field_images(count: int) -> list[Path]:
    test = SHARED_BCCD / "ImageSets" / "Main" / "test.txt"
    if test.is_file():
        names = [SHARED_BCCD / "JPEGImages" / f"{n.strip()}.jpg" for n in test.read_text().split() if n.strip()]
        names = [p for p in names if p.is_file()]
    else:
        from leukolens.demo import sample_path

        names = sorted((sample_path("bccd") / "BCCD" / "JPEGImages").glob("*.jpg"))
    return [names[i % len(names)] for i in range(count)]


def _sample(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    for i, path in enumerate(_field_images(count)):
        shutil.copy(path, folder / f"{i:03d}_{path.name}")
    return folder


def _documents(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.json")) if p.name != "summary.json"}


def _seconds(sample: Path, out: Path, **options) -> float:
    """Wall time of one ``analyze`` call."""
    from leukolens.analyze import analyze

    started = time.perf_counter()
    analyze([sample], out=out, report=False, log=lambda _: None, **options)
    return time.perf_counter() - started


@dataclass
class Measured:
    """One way of running ``analyze``, timed."""

    label: str
    seconds: float  # the whole sample, one call
    one_field: float  # a one-field sample, one call: the client's fixed share and one field
    fields: int
    start: float | None = None  # the cluster's start
    warm_up: float | None = None  # the first call on the new cluster: each worker loads its models
    identical: str = "(the reference)"

    @property
    def per_second(self) -> float:
        return self.fields / self.seconds

    @property
    def beyond_fixed(self) -> float:
        """Fields/s of the fields after the first, the fixed share of a call left out."""
        return (self.fields - 1) / max(self.seconds - self.one_field, 1e-9)


def _measure(label: str, tmp: Path, name: str, sample: Path, single: Path, fields: int, **options) -> Measured:
    """The median of :data:`REPEATS` calls on the whole sample and on one field (each into a fresh folder)."""
    whole = [_seconds(sample, tmp / (name if i == 0 else f"{name}-{i}"), **options) for i in range(REPEATS)]
    one = [_seconds(single, tmp / f"{name}-one-{i}", **options) for i in range(REPEATS)]
    return Measured(label, statistics.median(whole), statistics.median(one), fields)


def run(fields: int = FIELDS) -> str:
    from leukolens.cluster import open_cluster

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        sample, warm, single = (_sample(tmp / "sample", fields), _sample(tmp / "warm", WARM_FIELDS),
                                _sample(tmp / "single", 1))
        _seconds(warm, tmp / "warm-here")  # ONNX exports made, files cached
        runs = [_measure("in one process (ONNX Runtime on 2 threads)", tmp, "here", sample, single, fields)]
        reference = _documents(tmp / "here")
        for workers, per_task in RUNS:
            name = f"{workers}-{per_task}"
            label = f"--workers {workers}" + (f", {per_task} fields a task" if per_task > 1 else "")
            started = time.perf_counter()
            with open_cluster(workers=workers, fields_per_task=per_task, log=lambda _: None) as cluster:
                start = time.perf_counter() - started
                warm_up = _seconds(warm, tmp / f"warm-{name}", cluster=cluster)
                measured = _measure(label, tmp, name, sample, single, fields, cluster=cluster)
            measured.start, measured.warm_up = start, warm_up
            measured.identical = "yes" if _documents(tmp / name) == reference else "**no**"
            runs.append(measured)
    load_after = os.getloadavg()
    here, one, two, two_batched = runs
    lines = [
        "## Scaling: analyze on Dask workers",
        "",
        f"{fields} BCCD fields (640x480), shipped detector and cell model, overlays written, report off; each worker "
        "one process with one thread for each network. The cluster's start and its first call (each worker loads "
        f"its models; {WARM_FIELDS} fields) are timed apart. Fields/s: one `analyze` call on the warm cluster (the "
        f"median of {REPEATS}), the "
        "client's share included (it loads the detector, estimates the sample's scale from its first fields and "
        "writes the summary); beyond the fixed share: the fields after the first, a one-field call's time taken "
        f"off. Load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in load_before)}; after: "
        f"{', '.join(f'{v:.2f}' for v in load_after)}.",
        "",
        "| run | cluster start (s) | warm-up (s) | one-field call (s) | whole sample (s) | fields/s | fields/s beyond "
        "the fixed share | per-field JSON identical to one process |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in runs:
        start = "-" if m.start is None else f"{m.start:.1f}"
        warm_up = "-" if m.warm_up is None else f"{m.warm_up:.1f}"
        lines.append(f"| {m.label} | {start} | {warm_up} | {m.one_field:.1f} | {m.seconds:.1f} | {m.per_second:.2f} | "
                     f"{m.beyond_fixed:.2f} | {m.identical} |")
    ratio = two.per_second / one.per_second
    lines += [
        "",
        f"--workers 2 against --workers 1: **{ratio:.2f}x** the fields/s ({'meets' if ratio >= TARGET else 'misses'} "
        f"the {TARGET}x target), {two.beyond_fixed / one.beyond_fixed:.2f}x beyond the fixed share; against one "
        f"process: {two.per_second / here.per_second:.2f}x. Four fields a task against one (two workers): "
        f"{two_batched.per_second / two.per_second:.2f}x.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else FIELDS))
