"""``leukolens synth`` (synthetic smear fields with exact labels) and ``leukolens demo`` (the bundled samples)."""

from __future__ import annotations

import argparse
from pathlib import Path

from leukolens.cli.common import config_from_args, default, progress
from leukolens.synth import SynthConfig


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def cmd_synth(args: argparse.Namespace) -> int:
    from leukolens.synth import write_synthetic

    config = config_from_args(
        SynthConfig, args, diagnoses=_names(args.diagnoses), domains=_names(args.domains), stains=_names(args.stains)
    )
    report = write_synthetic(
        config,
        args.out,
        sparse_format=args.format,
        images=args.images,
        workers=args.workers,
        progress=progress("rendering"),
    )
    print(report.summary())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from leukolens.cli.demo import run_demo

    run_demo(Path(args.out))
    return 0


def add_commands(commands) -> None:
    synth = commands.add_parser(
        "synth",
        help="render synthetic smear fields with exact labels: sparse LLD (or COCO) and full COCO exports",
        description="Patients cycle through the diagnoses (5 patients give all five); every field is rendered under "
        "every domain with the same cells. Writes OUT/full (COCO, every cell, the images), OUT/sparse (only the "
        "cells in each field's annotated region) and OUT/patients.csv.",
    )

    def option(flag: str, name: str, kind: type, help: str) -> None:
        synth.add_argument(flag, type=kind, default=default(SynthConfig, name), help=help)

    def names_option(flag: str, name: str, help: str) -> None:
        synth.add_argument(flag, default=",".join(default(SynthConfig, name)), help=help)

    synth.add_argument("--out", required=True, help="output folder (new or empty)")
    option("--patients", "patients", int, "number of patients, one slide each (default %(default)s)")
    option("--fields-per-patient", "fields_per_patient", int, "fields per slide (default %(default)s)")
    option("--seed", "seed", int, "the same seed gives the same files (default %(default)s)")
    option("--size", "size", int, "field width and height in pixels (default %(default)s)")
    option("--annotated-fraction", "annotated_fraction", float, "share of a 100x field inside its annotated region")
    names_option("--diagnoses", "diagnoses", "comma-separated, cycled over patients")
    names_option(
        "--domains",
        "domains",
        "comma-separated MICROSCOPE:CAMERA:MAGNIFICATION[:STAIN] (microscopes high-cost, low-cost; cameras "
        "high-end, mid-level, phone; 100x, 40x, 10x), or 'lld' for LLD's twelve captures",
    )
    names_option("--stains", "stains", "stains drawn per patient")
    option("--label-noise", "label_noise", float, "chance an attribute label is misread")
    synth.add_argument("--format", choices=("lld", "coco"), default="lld", help="sparse export format (default lld)")
    synth.add_argument("--images", choices=("copy", "link"), default="copy", help="images in the sparse export")
    synth.add_argument("--workers", type=int, default=2, help="rendering processes (default %(default)s)")
    synth.set_defaults(run=cmd_synth)

    demo = commands.add_parser("demo", help="run the main job on the bundled sample data")
    demo.add_argument("--out", default="out/demo", help="output folder (default %(default)s)")
    demo.set_defaults(run=cmd_demo)
