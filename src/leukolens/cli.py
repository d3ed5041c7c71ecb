"""The ``leukolens`` command: a thin layer over the library.

A user's mistake (bad input, bad option) prints one clear message and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

from tqdm import tqdm

from leukolens import __version__
from leukolens.io import (
    READ_FORMATS,
    WRITE_FORMATS,
    LeukolensError,
    ProblemLog,
    check_images,
    read_dataset,
    sniff_format,
    write_dataset,
)
from leukolens.io.common import atomic_write_text
from leukolens.records import Dataset

EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def _progress(description: str):
    """A tqdm wrapper for long loops; quiet when stderr is not a terminal."""
    return partial(tqdm, desc=description, unit="img", leave=False, disable=None, file=sys.stderr)


def _load(args: argparse.Namespace, log: ProblemLog) -> tuple[Dataset, str]:
    names = tuple(n.strip() for n in args.names.split(",")) if getattr(args, "names", None) else None
    format = args.format or sniff_format(Path(args.data))
    dataset = read_dataset(args.data, format=format, log=log, names=names, progress=_progress("reading"))
    return dataset, format


def _write_json(path: str, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


# ------------------------------------------------------------------------------------------------------ commands
def cmd_data_info(args: argparse.Namespace) -> int:
    from leukolens.summary import format_summary, summarize

    log = ProblemLog(strict=args.strict)
    dataset, format = _load(args, log)
    summary = summarize(dataset, log, format=format)
    print(format_summary(summary))
    if args.json:
        _write_json(args.json, summary)
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    from leukolens.summary import format_problems, summarize

    log = ProblemLog(strict=args.strict)
    dataset, format = _load(args, log)
    sound = check_images(dataset, log=log, progress=_progress("decoding images"))
    summary = summarize(dataset, log, format=format)
    summary["sound_images"] = sound
    print(
        f"{args.data} ({format}): {len(dataset):,} fields, {summary['cells']:,} cells, {sound:,} images decoded "
        "without error"
    )
    print("\n".join(format_problems(summary)))
    if args.json:
        _write_json(args.json, summary)
    return EXIT_PROBLEMS if log.problems else 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    log = ProblemLog(strict=args.strict)
    dataset, _ = _load(args, log)
    if log.problems:
        print(
            f"read with {len(log.problems):,} problems (bad lines skipped; see `leukolens data validate`)",
            file=sys.stderr,
        )
    report = write_dataset(dataset, args.out, format=args.to, images=args.images)
    print(report.summary())
    return 0


def cmd_data_split(args: argparse.Namespace) -> int:
    from leukolens.splits import apply_splits, assign_splits

    try:
        ratios = tuple(float(r) for r in args.ratios.split(","))
    except ValueError:
        raise LeukolensError(f"--ratios takes three numbers like 0.7,0.15,0.15, got {args.ratios!r}") from None
    log = ProblemLog(strict=args.strict)
    dataset, format = _load(args, log)
    assignment = assign_splits(dataset, ratios=ratios, seed=args.seed, by=args.by)
    apply_splits(dataset, assignment)
    out = Path(args.out)
    report = write_dataset(
        dataset, out, format=args.to or (format if format in WRITE_FORMATS else "coco"), images=args.images
    )
    lines = ["image,split"] + [f"{name},{split}" for name, split in sorted(assignment.items())]
    atomic_write_text(
        out / "splits.csv" if out.suffix != ".json" else out.with_suffix(".splits.csv"), "\n".join(lines) + "\n"
    )
    counts = {s: list(assignment.values()).count(s) for s in ("train", "val", "test")}
    print(", ".join(f"{s} {n:,}" for s, n in counts.items()) + f" fields (seed {args.seed})")
    print(report.summary())
    return 0


def cmd_data_view(args: argparse.Namespace) -> int:
    from leukolens.report.overlay import draw_field, save_png

    log = ProblemLog(strict=args.strict)
    dataset, _ = _load(args, log)
    fields = dataset.fields
    if args.images:
        wanted = set(args.images)
        fields = [f for f in fields if f.image.name in wanted or f.id in wanted]
    fields = fields[: args.limit] if args.limit else fields
    out = Path(args.out)
    for f in _progress("drawing")(fields):
        drawing = draw_field(f, dataset.classes, schema=dataset.schema, attributes=not args.no_attributes)
        save_png(drawing, out / f"{f.id}.png")
    print(f"drew {len(fields):,} fields to {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from leukolens.demo import run_demo

    run_demo(Path(args.out))
    return 0


# ------------------------------------------------------------------------------------------------------ parser
def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="data set folder, COCO .json or WBCAtt .csv")
    parser.add_argument("--format", choices=READ_FORMATS, help="input format (default: recognised from the files)")
    parser.add_argument("--names", help="class names, comma-separated, for YOLO folders without data.yaml/classes.txt")
    parser.add_argument("--strict", action="store_true", help="stop at the first problem")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leukolens", description="Read peripheral blood smear images the way a hematologist does."
    )
    parser.add_argument("--version", action="version", version=f"leukolens {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="inspect, validate, convert, split and draw labelled data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    info = data_commands.add_parser("info", help="fields, cells per class, attributes, domains, splits, sizes")
    _data_arguments(info)
    info.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    info.set_defaults(run=cmd_data_info)

    validate = data_commands.add_parser("validate", help="check every label line and decode every image")
    _data_arguments(validate)
    validate.add_argument("--json", metavar="PATH", help="also write every problem as JSON")
    validate.set_defaults(run=cmd_data_validate)

    convert = data_commands.add_parser("convert", help="write the data set in another format")
    _data_arguments(convert)
    convert.add_argument("--to", required=True, choices=WRITE_FORMATS, help="output format")
    convert.add_argument("--out", required=True, help="output folder (or .json file for COCO)")
    convert.add_argument(
        "--images",
        choices=("link", "copy", "none"),
        default="link",
        help="how images reach the output: symlink (default), copy, or leave in place",
    )
    convert.set_defaults(run=cmd_data_convert)

    split = data_commands.add_parser("split", help="assign train/val/test by sample, else stratified by class")
    _data_arguments(split)
    split.add_argument("--out", required=True, help="output folder for the split data set and splits.csv")
    split.add_argument("--to", choices=WRITE_FORMATS, help="output format (default: the input's, else coco)")
    split.add_argument("--ratios", default="0.7,0.15,0.15", help="train,val,test shares (default 0.7,0.15,0.15)")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--by", choices=("auto", "sample", "class"), default="auto")
    split.add_argument("--images", choices=("link", "copy", "none"), default="link")
    split.set_defaults(run=cmd_data_split)

    view = data_commands.add_parser("view", help="draw boxes, classes, attributes and annotated regions to PNG")
    _data_arguments(view)
    view.add_argument("--out", required=True, help="folder for the PNG files")
    view.add_argument("--images", nargs="*", help="only these images (file names or stems)")
    view.add_argument("--limit", type=int, default=0, help="draw at most this many fields (0: all)")
    view.add_argument("--no-attributes", action="store_true", help="boxes and classes only")
    view.set_defaults(run=cmd_data_view)

    demo = commands.add_parser("demo", help="run the main job on the bundled sample data")
    demo.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except LeukolensError as error:
        print(f"leukolens: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("leukolens: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
