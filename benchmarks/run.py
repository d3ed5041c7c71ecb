"""Run benchmarks and write their results into docs/benchmarks.md.

Usage: ``python -m benchmarks.run [all|NAME ...]``. Each benchmark owns one section of the document, between
``<!-- bench:NAME -->`` markers, and rewrites only that section: the command, the date, the machine, the numbers,
and the published or peer figure beside ours.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
from pathlib import Path

from benchmarks import (
    archive_search,
    blasts,
    cell_domains,
    cells,
    clip,
    colour_sweep,
    ddp,
    detector,
    detector_loso,
    detector_stain,
    detector_synth,
    domains,
    gan,
    gan_shipped,
    io_speed,
    onnx_speed,
    samples,
    scale_sweep,
    scaling,
    serve_load,
    sim2real,
    slides,
    sparse,
    synth_realism,
    synth_speed,
    yolo_peer,
)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
BENCHMARKS = {
    "io": io_speed.run,
    "synth": synth_speed.run,
    "realism": synth_realism.run,
    "cells": cells.run,
    "cell_domains": cell_domains.run,
    "blasts": blasts.run,
    "samples": samples.run,
    "scale_sweep": scale_sweep.run,
    "colour_sweep": colour_sweep.run,
    "detector": detector.run,
    "detector_loso": detector_loso.run,
    "detector_stain": detector_stain.run,
    "detector_synth": detector_synth.run,
    "sparse": sparse.run,
    "domains": domains.run,
    "peer": yolo_peer.run,
    "sim2real": sim2real.run,
    "clip": clip.run,
    "gan": gan.run,
    "gan_shipped": gan_shipped.run,
    "serve_load": serve_load.run,
    "archive_search": archive_search.run,
    "onnx": onnx_speed.run,
    "ddp": ddp.run,
    "scaling": scaling.run,
    "slides": slides.run,
}
HEADER = """# Benchmarks

Each section is written by `make bench` (or `make bench BENCH=NAME`) from `benchmarks/`; edit the code, not the
numbers.
"""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


def write_section(name: str, body: str) -> None:
    text = DOC.read_text() if DOC.exists() else HEADER
    stamp = f"Command: `make bench BENCH={name}`. Date: {datetime.date.today().isoformat()}. Machine: {machine()}.\n\n"
    section = f"<!-- bench:{name} -->\n{body.splitlines()[0]}\n\n{stamp}" + "\n".join(body.splitlines()[1:]).strip()
    section += f"\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text.rstrip() + "\n")


def main(argv: list[str]) -> int:
    names = [n for n in argv if n != "all"] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name in names:
        print(f"running benchmark {name} ...", flush=True)
        write_section(name, BENCHMARKS[name]())
        print(f"wrote section {name!r} of {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
