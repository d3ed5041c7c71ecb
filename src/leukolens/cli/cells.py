"""The cell model's commands: ``train cells``, ``train blast``, ``eval cells``, ``predict cells`` and ``calibrate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from leukolens.cli.common import (
    EXIT_PROBLEMS,
    config_from_args,
    config_options,
    default,
    image_paths,
    json_argument,
    print_or_write_json,
    print_report,
    report_skipped,
)
from leukolens.data.augment import AUGMENT_PRESETS
from leukolens.errors import LeukolensError
from leukolens.models.cellnet import INPUT_NORMS
from leukolens.train.blast import TrainBlastConfig
from leukolens.train.calibrate import CalibrateConfig
from leukolens.train.cells import TrainCellsConfig
from leukolens.train.size import TrainSizeConfig

BACKBONES = ("efficientnet_lite0", "mobilenet_v2")
STAIN_METHODS = ("none", "reinhard", "macenko")
MATCH_STAIN_HELP = "bring each cell's colours to the training cells' first (images from another microscope or stain)"
BLAST_EXAMPLES_HELP = (
    "folders of your lab's own blast images (single cells): added to the blast scorer's examples for this run"
)


def blast_examples_argument(parser: argparse.ArgumentParser) -> None:
    """``--blast-examples DIR [DIR ...]`` (``predict cells`` and ``analyze``)."""
    parser.add_argument("--blast-examples", nargs="+", default=[], metavar="DIR", help=BLAST_EXAMPLES_HELP)


def views_argument(parser: argparse.ArgumentParser) -> None:
    """``--views N`` (``predict cells`` and ``analyze``): the default lives in :data:`leukolens.data.augment.VIEWS`."""
    from leukolens.data.augment import VIEWS

    parser.add_argument("--views", type=int, default=VIEWS, metavar="N",
                        help="read each cell in N of its flips and quarter turns and average them (1-8, default "
                             "%(default)s; 1 is fastest)")


def report_skipped_examples(skipped: list[tuple[str, str]]) -> None:
    for _, message in skipped:
        print(f"leukolens: skipped blast example {message}", file=sys.stderr)


def preset_name(presets: dict, config) -> str:
    """The name of the preset equal to ``config`` (a config's default augmentation, as a preset name)."""
    return next(name for name, preset in presets.items() if preset == config)


def _atypicality_choice(text: str) -> tuple[str, str]:
    from leukolens.models.atypicality import FEATURES, METHODS

    method, _, features = text.partition(":")
    if method not in METHODS or features not in FEATURES:
        raise LeukolensError(
            f"--atypicality takes METHOD:FEATURES with METHOD in {', '.join(METHODS)} and "
            f"FEATURES in {', '.join(FEATURES)}, got {text!r}"
        )
    return method, features


def cmd_train_cells(args: argparse.Namespace) -> int:
    from leukolens.train.cells import fit_atypicality, train_cells
    from leukolens.train.distributed import is_main_process

    method, features = _atypicality_choice(args.atypicality)
    config = config_from_args(
        TrainCellsConfig,
        args,
        balanced=not args.no_balanced,
        augment=AUGMENT_PRESETS[args.augment],
        atypicality_method=method,
        atypicality_features=features,
    )
    best = Path(args.out) / "best.pt"
    if not args.refit_atypicality:
        best = train_cells(config, resume=args.resume)
        if not is_main_process():  # under torchrun, rank 0 alone finishes the run
            return 0
        print(f"best checkpoint: {best}")
    if not args.no_atypicality:
        fit_atypicality(best, config)
    return 0


def cmd_train_blast(args: argparse.Namespace) -> int:
    from leukolens.models.weights import resolve
    from leukolens.train.blast import TrainBlastConfig, fit_blast

    checkpoint = resolve("cells", args.checkpoint)
    config = TrainBlastConfig(
        checkpoint=str(checkpoint),
        examples=tuple(args.examples),
        data=args.data,
        normal_examples=tuple(args.normal_examples),
        out=args.out,
        seed=args.seed,
    )
    report = fit_blast(config)
    report_skipped_examples(report.skipped)
    print(report.summary())
    print(f"cell model with its blast scorer: {report.path}")
    return 0


def cmd_train_size(args: argparse.Namespace) -> int:
    from leukolens.models.weights import resolve
    from leukolens.predict.fields import Detector
    from leukolens.train.size import TrainSizeConfig, fit_size

    checkpoint = resolve("cells", args.checkpoint)
    config = TrainSizeConfig(
        checkpoint=str(checkpoint),
        data=tuple(args.data),
        detector=args.detector,
        cells_per_class=args.cells_per_class,
        out=args.out,
        seed=args.seed,
    )
    report = fit_size(config, Detector.from_checkpoint(config.detector).red_cell_scale)
    print(report.summary())
    print(f"cell model with its size prior: {report.path}")
    return 0


def cmd_eval_cells(args: argparse.Namespace) -> int:
    from leukolens.eval.cells import evaluate_checkpoint, format_report

    report = evaluate_checkpoint(
        args.checkpoint, args.data, split=args.split, confusion_png=args.confusion, agreement=not args.no_agreement,
        views=args.views,
    )
    return print_report(format_report(report), report, args.json)


def cmd_predict_cells(args: argparse.Namespace) -> int:
    from leukolens.predict.cells import CellReader
    from leukolens.predict.output import cells_json

    paths = image_paths(args.images)
    predictor = CellReader.from_checkpoint(
        args.checkpoint, match_stain=args.match_stain, blast_examples=args.blast_examples, views=args.views
    )
    report_skipped_examples(predictor.blast_skipped)
    errors: list[tuple[str, str]] = []
    predictions = predictor.predict_files(paths, errors=errors)
    report_skipped(errors)
    if args.json:
        print_or_write_json(args.json, cells_json(predictions), "cells")
    if args.json != "-":
        for p in predictions:
            attributes = ", ".join(f"{n} {a.value} ({a.probability:.2f})" for n, a in p.attributes.items())
            score = "" if p.atypicality is None else f"; atypicality {p.atypicality:.2f}: {p.verdict}"
            if p.blast_probability is not None:
                score += f"; blast {p.blast_probability:.2f}" + (": blast (suspected)" if p.blast_suspected else "")
            print(f"{p.source}: {p.label} ({p.probability:.2f}){score}" + (f"\n  {attributes}" if attributes else ""))
    return EXIT_PROBLEMS if errors else 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from leukolens.models.checkpoint import load_checkpoint, save_checkpoint
    from leukolens.predict.weights import default_checkpoint
    from leukolens.train.calibrate import calibrate, lab_cells

    base = load_checkpoint(args.checkpoint or default_checkpoint())
    samples, names = lab_cells(args.cells, base.config.classes)
    config = CalibrateConfig(min_cells_per_class=args.min_cells, adapt_norm=False if args.no_adapt_norm else None,
                             finetune_epochs=args.finetune_epochs)
    calibrated, report = calibrate(base, samples, names, config)
    path = save_checkpoint(calibrated, args.out)
    print(report.summary())
    print(f"calibrated cell model: {path} (use it with --checkpoint, or --cells for analyze)")
    return 0


def add_commands(commands, *, train, evaluate, predict) -> None:
    cells = train.add_parser("cells", help="cell type and attribute heads on single cells")
    option = config_options(cells, TrainCellsConfig)
    cells.add_argument("--data", required=True, help="data set with train and val splits")
    cells.add_argument(
        "--extra-data", nargs="*", default=default(TrainCellsConfig, "extra_data"), metavar="PATH",
        help="more data sets (other microscopes): their typed white cells join in one vocabulary",
    )
    option("--unlabelled-data", "unlabelled_data", nargs="*", metavar="PATH",
           help="data sets whose boxed white cells teach without their types (self-training with a mean teacher)")
    option("--unlabelled-sources", "unlabelled_sources", nargs="*", metavar="SOURCE",
           help="only these sources of the unlabelled data sets (e.g. Raabin-WBC BCDD of TXL-PBC)")
    option("--pseudo-threshold", "pseudo_threshold", float,
           help="the teacher's confidence an unlabelled cell's type needs to become a target")
    option("--out", "out", help="folder for checkpoints (best.pt, last.pt)")
    option("--backbone", "backbone", choices=BACKBONES)
    option("--input-size", "input_size", int)
    option("--epochs", "epochs", int)
    option("--batch-size", "batch_size", int)
    option("--lr", "lr", float)
    option("--patience", "patience", int, help="epochs without improvement before stop")
    option("--max-minutes", "max_minutes", float, help="time budget (0: none)")
    option("--exclude", "exclude", nargs="*", help="classes to hold out of training")
    cells.add_argument("--no-balanced", action="store_true", help="plain instead of class-balanced")
    option("--stain", "stain", choices=STAIN_METHODS, help="stain normalisation of every crop")
    cells.add_argument(
        "--augment", choices=tuple(AUGMENT_PRESETS),
        default=preset_name(AUGMENT_PRESETS, default(TrainCellsConfig, "augment")),
        help="default: flips, turns, gentle colour jitter; robust: + stronger stain and colour jitter, hue, grey, "
        "blur, noise, vignetting, JPEG (for microscopes never trained on)",
    )
    cells.add_argument(
        "--freeze-norm", action="store_true",
        help="keep every batch-norm layer's ImageNet statistics (no one microscope's statistics)",
    )
    option("--input-norm", "input_norm", choices=INPUT_NORMS,
           help="per-cell: standardise each crop's colours by its own statistics (for microscopes never trained on)")
    option("--mix-style", "mix_style", float, metavar="P",
           help="mix feature styles across each training batch with probability P (MixStyle; 0: off)")
    option("--average-weights", "average_weights", float, metavar="SHARE",
           help="keep the average of the weights over this last share of the planned steps (e.g. 0.5; 0: off)")
    cells.add_argument("--no-atypicality", action="store_true", help="skip fitting the atypicality score")
    cells.add_argument(
        "--atypicality",
        default=":".join(default(TrainCellsConfig, f"atypicality_{part}") for part in ("method", "features")),
        metavar="METHOD:FEATURES",
        help="scorer: knn or mahalanobis, on embedding, heads or both",
    )
    cells.add_argument(
        "--refit-atypicality", action="store_true", help="only refit the atypicality scorer of OUT/best.pt"
    )
    cells.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    option("--seed", "seed", int)
    cells.set_defaults(run=cmd_train_cells)

    blast = train.add_parser(
        "blast",
        help="fit a cell model's blast score from folders of real blasts (the network is not trained; about a minute)",
        description="Reads the example blasts, normal training cells (DATA's train split) and normal validation "
        "cells (its val split) with the cell model, fits the blast score (morphology from the attribute heads, "
        "prototypes of the examples, atypicality, combined by a regularised logistic regression) and its threshold "
        "(at most 5% of validation cells called blast), and stores it, with the examples' embeddings, in the "
        "checkpoint (docs/blasts.md).",
    )
    blast.add_argument("--checkpoint", help="cell model (default: the shipped one)")
    blast.add_argument("--examples", nargs="+", required=True, metavar="DIR", help="folders of real blast images")
    blast.add_argument(
        "--normal-examples", nargs="*", default=[], metavar="DIR",
        help="folders of non-blast cells from other microscopes, which the score learns to keep low",
    )
    option = config_options(blast, TrainBlastConfig)
    option("--data", "data", help="normal cells with train and val splits (default %(default)s)")
    option("--out", "out", help="where to write the checkpoint (default: over --checkpoint)")
    option("--seed", "seed", int)
    blast.set_defaults(run=cmd_train_blast)

    size = train.add_parser(
        "size",
        help="fit a cell model's size prior: each type's size in µm on several microscopes (the network is not "
        "trained; about ten minutes for three data sets)",
        description="Measures typed training cells (box times the image's scale, which the detector finds from the "
        "image's own red cells, as analyze does), fits a log-normal size per type and stores it in the checkpoint: "
        "analyze then weighs each white cell's size into its type wherever the field's scale is known "
        "(docs/domains.md).",
    )
    size.add_argument("--checkpoint", help="cell model (default: the shipped one)")
    size.add_argument("--data", nargs="+", required=True, metavar="PATH",
                      help="data sets of typed, boxed white cells, one per microscope (their train split)")
    option = config_options(size, TrainSizeConfig)
    option("--detector", "detector", help="detector whose red cells give the scale (default: the shipped one)")
    option("--cells-per-class", "cells_per_class", int, help="cells per type and data set (default %(default)s)")
    option("--out", "out", help="where to write the checkpoint (default: over --checkpoint)")
    option("--seed", "seed", int)
    size.set_defaults(run=cmd_train_size)

    eval_cells = evaluate.add_parser("cells", help="class, attribute and calibration metrics")
    eval_cells.add_argument("--checkpoint", help="cell model (default: the shipped one)")
    eval_cells.add_argument("--data", required=True)
    eval_cells.add_argument("--split", default="test", help="split to evaluate (default test; 'all' for all)")
    json_argument(eval_cells)
    eval_cells.add_argument("--confusion", metavar="PNG", help="write the confusion matrix as an image")
    eval_cells.add_argument("--no-agreement", action="store_true", help="skip the human-agreement ceiling")
    views_argument(eval_cells)
    eval_cells.set_defaults(run=cmd_eval_cells)

    predict_cells = predict.add_parser("cells", help="class, attributes and atypicality per cell")
    predict_cells.add_argument("images", nargs="+", help="single-cell images or folders of them")
    predict_cells.add_argument("--checkpoint", help="cell model (default: the shipped one)")
    json_argument(predict_cells, "write predictions as JSON ('-': print it)")
    predict_cells.add_argument("--match-stain", action="store_true", help=MATCH_STAIN_HELP)
    blast_examples_argument(predict_cells)
    views_argument(predict_cells)
    predict_cells.set_defaults(run=cmd_predict_cells)

    calibrate = commands.add_parser(
        "calibrate",
        help="adapt a cell model to a lab's microscope from about 100 labelled cells (a folder per class)",
        description="Re-estimates the batch-norm statistics on the lab's cells, refits the class head (a class the "
        "base model does not know is learnt and reported), and takes the lab's cells as the colour and "
        "atypicality reference. Writes a cell-model checkpoint for predict cells, eval cells, describe and "
        "analyze --cells.",
    )
    calibrate.add_argument(
        "--cells", required=True, metavar="DIR",
        help="labelled cells: a folder per class, or any data set leukolens reads",
    )
    calibrate.add_argument("--out", required=True, help="the calibrated checkpoint (e.g. my-model.pt)")
    calibrate.add_argument("--checkpoint", help="base cell model (default: the shipped one)")
    calibrate.add_argument(
        "--no-adapt-norm", action="store_true",
        help="keep the base model's batch-norm statistics (always so for a model trained with --freeze-norm)",
    )
    calibrate.add_argument(
        "--min-cells", type=int, default=default(CalibrateConfig, "min_cells_per_class"), metavar="N",
        help="refuse a class with fewer cells than this (default %(default)s)",
    )
    calibrate.add_argument(
        "--finetune-epochs", type=int, default=default(CalibrateConfig, "finetune_epochs"), metavar="N",
        help="also fine-tune the backbone's last stages for N epochs on the lab's cells (15: a few points more "
        "accuracy, about a minute; the blast score is then dropped until refit with `train blast`; 0: the head only, "
        "default %(default)s)",
    )
    calibrate.set_defaults(run=cmd_calibrate)
