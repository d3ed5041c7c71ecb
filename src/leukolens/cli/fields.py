"""The detector's commands and the main job on whole fields: ``train detector``, ``detect``, ``eval detector`` and
``analyze``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from leukolens.cli.cells import (
    BACKBONES,
    MATCH_STAIN_HELP,
    STAIN_METHODS,
    blast_examples_argument,
    preset_name,
    views_argument,
)
from leukolens.cli.common import (
    EXIT_PROBLEMS,
    ProgressCounter,
    config_from_args,
    config_options,
    default,
    json_argument,
    print_report,
    progress,
    write_json,
)
from leukolens.data.fields import FIELD_AUGMENT_PRESETS, FieldAugmentConfig
from leukolens.errors import LeukolensError
from leukolens.losses.pseudo import PseudoLabelConfig
from leukolens.predict.fields import SCALE_MODES
from leukolens.train.detector import TrainDetectorConfig


def cmd_train_detector(args: argparse.Namespace) -> int:
    from leukolens.train.detector import train_detector
    from leukolens.train.distributed import is_main_process

    config = config_from_args(
        TrainDetectorConfig,
        args,
        augment=dataclasses.replace(FIELD_AUGMENT_PRESETS[args.augment], window=args.window),
        pseudo=PseudoLabelConfig(
            threshold=args.pseudo_threshold,
            weight=args.pseudo_weight,
            momentum=args.ema_momentum,
            max_entropy=args.pseudo_max_entropy,
            min_prototype_similarity=args.pseudo_prototype_similarity,
        ),
    )
    best = train_detector(config, resume=args.resume)
    if is_main_process():  # under torchrun, rank 0 alone reports
        print(f"best checkpoint: {best}")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from leukolens.predict.fields import Detector, find_images, load_field
    from leukolens.predict.output import detect_json, detections_json

    detector = Detector.from_checkpoint(args.checkpoint)
    threshold = detector.score_threshold if args.threshold is None else args.threshold
    payload, errors = [], 0
    for path in find_images(args.images):
        try:
            image, _ = load_field(path)
        except LeukolensError as error:
            print(f"leukolens: skipped {error}", file=sys.stderr)
            errors += 1
            continue
        found = detector.detect(
            [image], threshold=threshold, scale=args.scale, microns_per_pixel=args.microns_per_pixel
        )[0]
        payload.append(detections_json(str(path), found))
        counts = {name: sum(found.class_name(i) == name for i in range(len(found))) for name in detector.classes}
        print(f"{path}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
    if args.json:
        write_json(args.json, detect_json(str(detector.path), threshold, payload))
    return EXIT_PROBLEMS if errors else 0


def cmd_eval_detector(args: argparse.Namespace) -> int:
    from leukolens.eval.detection import evaluate_detector, format_report
    from leukolens.predict.fields import Detector

    report = evaluate_detector(
        Detector.from_checkpoint(args.checkpoint), args.data, split=args.split, results_path=args.results,
        progress=progress("detecting"),
    )
    return print_report(format_report(report), report, args.json)


def cmd_analyze(args: argparse.Namespace) -> int:
    from leukolens.analyze import analyze, analyze_samples
    from leukolens.report.html import REPORT_NAME
    from leukolens.sample.differential import format_summary

    options = {
        "detector": args.detector,
        "cells": args.cells,
        "overlays": not args.no_overlays,
        "report": not args.no_report,
        "threshold": args.threshold,
        "match_stain": args.match_stain,
        "views": args.views,
        "size": not args.no_size,
        "microns_per_pixel": args.microns_per_pixel,
        "scale": args.scale,
        "adapt": args.adapt,
        "blast_examples": args.blast_examples,
        "resume": args.resume,
        "log": lambda message: print(message, file=sys.stderr),
    }
    if args.samples:
        if args.images:
            raise LeukolensError("give the images of one sample or --samples DIR (a folder of samples), not both")
        runs = analyze_samples(args.samples, out=args.out, workers=args.workers, scheduler=args.scheduler,
                               progress=lambda name: ProgressCounter(f"analysing {name}"), **options)
        print(format_samples(runs))
        return EXIT_PROBLEMS if any(r.error or r.summary["fields_skipped"] for r in runs) else 0
    if not args.images:
        raise LeukolensError("give the images of a sample (files or a folder), or --samples DIR")
    summary = analyze(args.images, out=args.out, workers=args.workers, scheduler=args.scheduler,
                      progress=ProgressCounter("analysing"), **options)
    print(format_summary(summary, args.out))
    report = Path(args.out) / REPORT_NAME
    if not args.no_report and report.is_file():
        print(f"report: {report}")
    return EXIT_PROBLEMS if summary["fields_skipped"] else 0


def format_samples(runs) -> str:
    """The table ``analyze --samples`` prints last: one line per sample (:class:`~leukolens.analyze.SampleRun`)."""
    name_width = max(6, *(len(r.name) for r in runs))
    lines = [f"{'sample':<{name_width}}  {'fields':>6}  {'resumed':>7}  {'skipped':>7}  {'WBC typed':>9}  "
             "suggestion or problem"]
    for r in runs:
        if r.summary is None:
            lines.append(f"{r.name:<{name_width}}  {'-':>6}  {'-':>7}  {'-':>7}  {'-':>9}  failed: {r.error}")
            continue
        s = r.summary
        suggestion = s.get("interpretation", {}).get("suggestion", {}).get("name", "")
        lines.append(f"{r.name:<{name_width}}  {s['fields_read']:>6}  {s.get('fields_resumed', 0):>7}  "
                     f"{len(s['fields_skipped']):>7}  {s['wbc_typed']:>9}  {suggestion}")
    failed = sum(r.summary is None for r in runs)
    out = runs[0].out.parent if runs else ""
    lines.append(f"{len(runs)} samples, {failed} failed; results in {out}/<sample>/")
    return "\n".join(lines)


def _train_detector_parser(train) -> None:
    parser = train.add_parser(
        "detector", help="WBC / RBC / platelet detector on whole fields (CenterNet, pretrained light backbone)"
    )

    option = config_options(parser, TrainDetectorConfig)

    parser.add_argument("--data", required=True, help="data set with train and val splits")
    option("--extra-data", "extra_data", nargs="*",
           help="more data sets whose train splits join training (sources of --data left out)")
    option("--extra-classes", "extra_classes", nargs="*",
           help="classes the extra data sets teach (default: all), e.g. WBC Platelets")
    parser.add_argument("--match-scale", action="store_true",
                        help="letterbox each extra data set (and source) so its white cells have --data's size: "
                             "the working scale detect brings fields to")
    option("--out", "out", help="folder for best.pt and last.pt")
    option("--backbone", "backbone", choices=BACKBONES)
    option("--input-size", "input_size", int, help="longer side of a field (px)")
    option("--stride", "stride", int, choices=(4, 8), help="output stride")
    option("--window", "window", int, config=FieldAugmentConfig, help="training window side (px)")
    option("--epochs", "epochs", int)
    option("--steps-per-epoch", "steps_per_epoch", int)
    option("--batch-size", "batch_size", int)
    option("--lr", "lr", float)
    option("--max-minutes", "max_minutes", float, help="time budget (0: none)")
    option("--threads", "threads", int, help="torch threads (0: one per core)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    option("--seed", "seed", int)
    option("--classes", "classes", nargs="*", help="train only these classes, e.g. WBC")
    option("--sources", "sources", nargs="*",
           help="keep only --data fields from these sources (e.g. BCDD PBC Raabin-WBC)")
    option("--exclude-sources", "exclude_sources", nargs="*",
           help="leave every field of these sources out of every data set (e.g. Chula-WBC: a held-out source)")
    option("--domain-key", "domain_key", choices=("source", "microscope", "camera", "magnification", "stain"),
           help="what --sources names (e.g. microscope: --sources high-cost for synthetic fields)")
    parser.add_argument(
        "--augment", choices=tuple(FIELD_AUGMENT_PRESETS),
        default=preset_name(FIELD_AUGMENT_PRESETS, default(TrainDetectorConfig, "augment")),
        help="plain: geometry only; default: + stain and colour jitter; robust: + stronger jitter, blur, noise, zoom",
    )
    option("--stain-norm", "stain_norm", choices=STAIN_METHODS,
           help="normalise every field's stain to the first training field (stored in the checkpoint)")
    option("--annotated-fraction", "annotated_fraction", float,
           help="simulate sparse labels: keep boxes only in a random rectangle of this share of each field (e.g. 0.1)")
    option("--sparse-mode", "sparse_mode", choices=("naive", "masked", "pseudo"),
           help="unlabelled area: naive = background, masked = ignored, pseudo = ignored + EMA-teacher pseudo-labels")
    option("--pseudo-threshold", "threshold", float, config=PseudoLabelConfig, help="teacher confidence")
    option("--pseudo-weight", "weight", float, config=PseudoLabelConfig, help="pseudo-label loss weight")
    option("--ema-momentum", "momentum", float, config=PseudoLabelConfig, help="teacher EMA momentum")
    option("--pseudo-max-entropy", "max_entropy", float, config=PseudoLabelConfig,
           help="drop pseudo-labels of higher class entropy (0: off)")
    option("--pseudo-prototype-similarity", "min_prototype_similarity", float, config=PseudoLabelConfig,
           help="drop pseudo-labels less similar to their class prototype (cosine; 0: off)")
    parser.set_defaults(run=cmd_train_detector)


def _scale_arguments(parser) -> None:
    parser.add_argument("--microns-per-pixel", type=float, metavar="UM",
                        help="the fields' scale in µm per pixel (skips the estimate from red cells)")
    parser.add_argument("--scale", choices=SCALE_MODES, default=SCALE_MODES[0],
                        help="auto: bring each field to the detector's learnt scale (estimated from its red cells), "
                             "tiling large fields; letterbox: longer side to the input size, as before")


def add_commands(commands, *, train, evaluate) -> None:
    _train_detector_parser(train)

    eval_detector = evaluate.add_parser(
        "detector", help="COCO mAP@[.5:.95], AP50 per class, counting error per field"
    )
    eval_detector.add_argument("--checkpoint", help="detector (default: the shipped one)")
    eval_detector.add_argument("--data", required=True)
    eval_detector.add_argument("--split", default="test", help="split to evaluate (default test; 'all' for all)")
    json_argument(eval_detector)
    eval_detector.add_argument("--results", metavar="PATH", help="write the predictions as a COCO results file")
    eval_detector.set_defaults(run=cmd_eval_detector)

    detect = commands.add_parser("detect", help="find WBCs, RBCs and platelets in whole fields")
    detect.add_argument("images", nargs="+", help="field images or folders of them")
    detect.add_argument("--checkpoint", help="detector (default: the shipped one)")
    detect.add_argument("--threshold", type=float, help="score threshold (default: the checkpoint's)")
    json_argument(detect, "write every box as JSON")
    _scale_arguments(detect)
    detect.set_defaults(run=cmd_detect)

    analyze = commands.add_parser(
        "analyze",
        help="the main job: detect, type and describe every WBC; JSON + overlay per field, differential per sample",
    )
    analyze.add_argument("images", nargs="*", help="field images or a folder of them (one sample)")
    analyze.add_argument("--samples", metavar="DIR",
                         help="a folder of samples instead: each subfolder is one sample, written to OUT/<subfolder>/")
    analyze.add_argument("--out", default="out/analyze", help="output folder (default %(default)s)")
    cluster = analyze.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=int, metavar="N",
                         help="analyse the fields on a local Dask cluster of N one-thread worker processes "
                              "(needs the distributed extra; docs/scaling.md)")
    cluster.add_argument("--scheduler", metavar="ADDRESS",
                         help="analyse the fields on the running Dask cluster at ADDRESS (tcp://host:8786)")
    analyze.add_argument("--resume", action="store_true",
                         help="keep the fields an earlier run into OUT completed, analyse the rest")
    analyze.add_argument("--detector", help="detector checkpoint (default: the shipped one)")
    analyze.add_argument("--cells", help="cell-model checkpoint (default: the shipped one)")
    analyze.add_argument("--threshold", type=float, help="detector score threshold (default: the checkpoint's)")
    analyze.add_argument("--no-overlays", action="store_true", help="skip the PNG overlays")
    analyze.add_argument("--no-report", action="store_true",
                         help="skip OUT/report.html (the sample's report, one self-contained file) and OUT/cells.csv")
    analyze.add_argument("--match-stain", action="store_true", help=MATCH_STAIN_HELP)
    analyze.add_argument("--adapt", action="store_true",
                         help="adapt the cell model's normalisation to this sample's own white cells first (helps a "
                              "mixed sample from a new microscope; harms one dominated by one cell type)")
    blast_examples_argument(analyze)
    views_argument(analyze)
    analyze.add_argument("--no-size", action="store_true",
                         help="type white cells from their image alone, without weighing in their size in µm "
                              "(which the cell model's size prior does where the field's scale is known)")
    _scale_arguments(analyze)
    analyze.set_defaults(run=cmd_analyze)
