"""``leukolens data``: inspect, validate, convert, split and draw labelled data sets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from leukolens.cli.common import EXIT_PROBLEMS, data_arguments, json_argument, load, progress, write_json
from leukolens.errors import LeukolensError, atomic_write_text
from leukolens.io import WRITE_FORMATS, ProblemLog, check_images, write_dataset
from leukolens.splits import DEFAULT_RATIOS


def cmd_data_info(args: argparse.Namespace) -> int:
    from leukolens.data.summary import format_summary, summarize

    log = ProblemLog(strict=args.strict)
    dataset, format = load(args, log)
    summary = summarize(dataset, log, format=format)
    print(format_summary(summary))
    if args.json:
        write_json(args.json, summary)
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    from leukolens.data.summary import format_problems, summarize

    log = ProblemLog(strict=args.strict)
    dataset, format = load(args, log)
    sound = check_images(dataset, log=log, progress=progress("decoding images"))
    summary = summarize(dataset, log, format=format)
    summary["sound_images"] = sound
    print(
        f"{args.data} ({format}): {len(dataset):,} fields, {summary['cells']:,} cells, {sound:,} images decoded "
        "without error"
    )
    print("\n".join(format_problems(summary)))
    if args.json:
        write_json(args.json, summary)
    return EXIT_PROBLEMS if log.problems else 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    log = ProblemLog(strict=args.strict)
    dataset, _ = load(args, log)
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
    dataset, format = load(args, log)
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
    dataset, _ = load(args, log)
    fields = dataset.fields
    if args.images:
        wanted = set(args.images)
        fields = [f for f in fields if f.image.name in wanted or f.id in wanted]
    fields = fields[: args.limit] if args.limit else fields
    out = Path(args.out)
    for f in progress("drawing")(fields):
        drawing = draw_field(f, dataset.classes, schema=dataset.schema, attributes=not args.no_attributes)
        save_png(drawing, out / f"{f.id}.png")
    print(f"drew {len(fields):,} fields to {out}")
    return 0


def add_commands(commands) -> None:
    data = commands.add_parser("data", help="inspect, validate, convert, split and draw labelled data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    info = data_commands.add_parser("info", help="fields, cells per class, attributes, domains, splits, sizes")
    data_arguments(info)
    json_argument(info, "also write the numbers as JSON")
    info.set_defaults(run=cmd_data_info)

    validate = data_commands.add_parser("validate", help="check every label line and decode every image")
    data_arguments(validate)
    json_argument(validate, "also write every problem as JSON")
    validate.set_defaults(run=cmd_data_validate)

    convert = data_commands.add_parser("convert", help="write the data set in another format")
    data_arguments(convert)
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
    data_arguments(split)
    split.add_argument("--out", required=True, help="output folder for the split data set and splits.csv")
    split.add_argument("--to", choices=WRITE_FORMATS, help="output format (default: the input's, else coco)")
    split.add_argument(
        "--ratios", default=",".join(str(r) for r in DEFAULT_RATIOS), help="train,val,test shares (default %(default)s)"
    )
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--by", choices=("auto", "sample", "class"), default="auto")
    split.add_argument("--images", choices=("link", "copy", "none"), default="link")
    split.set_defaults(run=cmd_data_split)

    view = data_commands.add_parser("view", help="draw boxes, classes, attributes and annotated regions to PNG")
    data_arguments(view)
    view.add_argument("--out", required=True, help="folder for the PNG files")
    view.add_argument("--images", nargs="*", help="only these images (file names or stems)")
    view.add_argument("--limit", type=int, default=0, help="draw at most this many fields (0: all)")
    view.add_argument("--no-attributes", action="store_true", help="boxes and classes only")
    view.set_defaults(run=cmd_data_view)
