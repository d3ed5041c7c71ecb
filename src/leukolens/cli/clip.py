"""The image-text model's commands: ``train clip``, ``eval clip``, ``describe`` and ``search``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from leukolens.cli.cells import blast_examples_argument, report_skipped_examples
from leukolens.cli.common import (
    EXIT_PROBLEMS,
    config_from_args,
    config_options,
    default,
    image_paths,
    json_argument,
    print_or_write_json,
    print_report,
    progress,
    report_skipped,
    write_json,
)
from leukolens.train.clip import TrainClipConfig


def cmd_train_clip(args: argparse.Namespace) -> int:
    from leukolens.train.clip import train_clip

    config = config_from_args(TrainClipConfig, args)
    print(f"best checkpoint: {train_clip(config, resume=args.resume)}")
    return 0


def cmd_eval_clip(args: argparse.Namespace) -> int:
    from leukolens.eval.clip import evaluate_clip, format_report
    from leukolens.predict.weights import default_clip_checkpoint

    report = evaluate_clip(
        args.checkpoint or default_clip_checkpoint(),
        args.data,
        split=args.split,
        among=tuple(args.among) if args.among else None,
        hold_out=tuple(args.hold_out or ()),
        cache_dir=default(TrainClipConfig, "cache_dir"),
    )
    return print_report(format_report(report), report, args.json)


def cmd_describe(args: argparse.Namespace) -> int:
    from leukolens.predict.describe import ImageTextPredictor
    from leukolens.predict.output import describe_json

    model = ImageTextPredictor.from_checkpoint(args.checkpoint, cells=args.cells, blast_examples=args.blast_examples)
    if model.cell_reader is not None:
        report_skipped_examples(model.cell_reader.blast_skipped)
    errors: list[tuple[str, str]] = []
    descriptions = model.describe_files(image_paths(args.images), errors=errors)
    report_skipped(errors)
    if args.json:
        print_or_write_json(args.json, describe_json(descriptions), "cells")
    if args.json != "-":
        for d in descriptions:
            scores = ", ".join(f"{n} {v} ({s:.2f})" for n, (v, s) in d.attributes.items())
            if d.blast_probability is not None:
                scores += ("; " if scores else "") + f"blast {d.blast_probability:.2f}"
            print(f"{d.source}: {d.sentence}\n  {d.label} ({d.label_score:.2f})" + (f"; {scores}" if scores else ""))
    return EXIT_PROBLEMS if errors else 0


def cmd_search(args: argparse.Namespace) -> int:
    from leukolens.predict.describe import ImageTextPredictor
    from leukolens.predict.output import search_json
    from leukolens.predict.search import gallery_images, open_index

    model = ImageTextPredictor.from_checkpoint(args.checkpoint)
    folder = Path(args.index) if args.index else Path(args.gallery) / ".leukolens-index"
    index = open_index(folder, model=model.identity, dim=model.checkpoint.config.embed_dim)
    if not args.no_update:
        errors: list[tuple[str, str]] = []
        images = [p for p in gallery_images(Path(args.gallery)) if folder not in p.parents]
        report = index.update(images, lambda paths: model.embed_files(progress("indexing")(paths), errors=errors))
        report_skipped(errors)
        index.save(folder)
        print(report.summary(), file=sys.stderr)
    start = time.perf_counter()
    hits = index.search(model.embed_queries([args.query])[0], k=args.top)
    seconds = time.perf_counter() - start
    if args.json:
        write_json(args.json, search_json(args.query, hits))
    for path, score in hits:
        print(f"{score:.3f}  {path}")
    print(f"{len(index):,} cells searched in {1000 * seconds:.0f} ms", file=sys.stderr)
    return 0


def add_commands(commands, *, train, evaluate) -> None:
    parser = train.add_parser(
        "clip", help="image-text model: cells and sentences composed from their attributes (CPU, minutes)"
    )

    option = config_options(parser, TrainClipConfig)

    parser.add_argument("--data", required=True, help="data set with train and val splits")
    option("--out", "out", help="folder for checkpoints (best.pt, last.pt)")
    option("--image-tower", "image_tower", choices=("cellnet", "imagenet"),
           help="frozen image features: the shipped cell model (default) or the plain ImageNet backbone")
    option("--text-tower", "text_tower", choices=("minilm", "transformer"))
    option("--sentences", "sentences", choices=("composed", "fixed", "diagnosis"),
           help="composed from each cell's attributes (default), or the baseline: one fixed sentence per class or "
           "per slide diagnosis")
    option("--classes", "classes", nargs="*", help="only these classes (default: all)")
    option("--epochs", "epochs", int)
    option("--batch-size", "batch_size", int)
    option("--lr", "lr", float)
    option("--hold-out", "hold_out", nargs="*", metavar="COMBINATION",
           help="keep cells with these combinations out of training, e.g. 'Monocyte|cytoplasm_vacuole=yes'")
    option("--max-minutes", "max_minutes", float, help="time budget (0: none)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    option("--seed", "seed", int)
    parser.set_defaults(run=cmd_train_clip)

    eval_clip = evaluate.add_parser(
        "clip", help="class by sentences, attributes read out from text, recall@k both ways, unseen combinations"
    )
    eval_clip.add_argument("--checkpoint", help="image-text model (default: the shipped one)")
    eval_clip.add_argument("--data", required=True)
    eval_clip.add_argument("--split", default="test", help="split to evaluate (default test; 'all' for all)")
    eval_clip.add_argument("--among", nargs="*", help="also score class accuracy among these classes only")
    eval_clip.add_argument("--hold-out", nargs="*", metavar="COMBINATION", help="combinations held out")
    json_argument(eval_clip)
    eval_clip.set_defaults(run=cmd_eval_clip)

    describe = commands.add_parser("describe", help="describe cells in words: class and attributes, with scores")
    describe.add_argument("images", nargs="+", help="single-cell images or folders of them")
    describe.add_argument("--checkpoint", help="image-text model (default: the shipped one)")
    describe.add_argument("--cells", help="its cell model calibrated to your microscope (leukolens calibrate)")
    blast_examples_argument(describe)
    json_argument(describe, "write descriptions as JSON ('-': print it)")
    describe.set_defaults(run=cmd_describe)

    search = commands.add_parser("search", help="find cells from a description in a gallery of cell images")
    search.add_argument("query", help='a description, e.g. "large cells with prominent nucleoli"')
    search.add_argument("--gallery", required=True, help="folder of single-cell images (searched recursively)")
    search.add_argument("--index", help="index folder (default GALLERY/.leukolens-index); updated incrementally")
    search.add_argument("--no-update", action="store_true", help="search the index as it is, without re-scanning")
    search.add_argument("--top", type=int, default=10, help="how many cells to show (default %(default)s)")
    search.add_argument("--checkpoint", help="image-text model (default: the shipped one)")
    json_argument(search, "also write the hits as JSON")
    search.set_defaults(run=cmd_search)
