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


def cmd_synth(args: argparse.Namespace) -> int:
    from leukolens.synth import SynthConfig, write_synthetic

    def names(text: str) -> tuple[str, ...]:
        return tuple(n.strip() for n in text.split(",") if n.strip())

    config = SynthConfig(
        patients=args.patients,
        fields_per_patient=args.fields_per_patient,
        size=args.size,
        seed=args.seed,
        annotated_fraction=args.annotated_fraction,
        diagnoses=names(args.diagnoses),
        domains=names(args.domains),
        stains=names(args.stains),
        label_noise=args.label_noise,
    )
    report = write_synthetic(
        config,
        args.out,
        sparse_format=args.format,
        images=args.images,
        workers=args.workers,
        progress=_progress("rendering"),
    )
    print(report.summary())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from leukolens.demo import run_demo

    run_demo(Path(args.out))
    return 0


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
    from leukolens.train.cells import TrainCellsConfig, train_cells

    method, features = _atypicality_choice(args.atypicality)

    config = TrainCellsConfig(
        data=args.data,
        out=args.out,
        backbone=args.backbone,
        input_size=args.input_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        max_minutes=args.max_minutes,
        exclude=tuple(args.exclude or ()),
        balanced=not args.no_balanced,
        stain=args.stain,
        seed=args.seed,
        atypicality_method=method,
        atypicality_features=features,
    )
    best = Path(args.out) / "best.pt"
    if not args.refit_atypicality:
        best = train_cells(config, resume=args.resume)
        print(f"best checkpoint: {best}")
    if not args.no_atypicality:
        from leukolens.train.cells import fit_atypicality

        fit_atypicality(best, config)
    return 0


def cmd_eval_cells(args: argparse.Namespace) -> int:
    from leukolens.eval.cells import evaluate_checkpoint, format_report

    report = evaluate_checkpoint(
        args.checkpoint, args.data, split=args.split, confusion_png=args.confusion, agreement=not args.no_agreement
    )
    print(format_report(report))
    if args.json:
        _write_json(args.json, report)
    return 0


def cmd_predict_cells(args: argparse.Namespace) -> int:
    from leukolens.predict.cells import CellReader
    from leukolens.predict.output import cells_json

    paths = _image_paths(args.images)
    predictor = CellReader.from_checkpoint(args.checkpoint, match_stain=args.match_stain)
    errors: list[tuple[str, str]] = []
    predictions = predictor.predict_files(paths, errors=errors)
    for _, message in errors:
        print(f"leukolens: skipped {message}", file=sys.stderr)
    if args.json:
        payload = cells_json(predictions)
        if args.json == "-":
            print(json.dumps(payload["cells"], indent=2))
        else:
            _write_json(args.json, payload)
    if args.json != "-":
        for p in predictions:
            attributes = ", ".join(f"{n} {a.value} ({a.probability:.2f})" for n, a in p.attributes.items())
            score = "" if p.atypicality is None else f"; atypicality {p.atypicality:.2f}: {p.verdict}"
            print(f"{p.source}: {p.label} ({p.probability:.2f}){score}" + (f"\n  {attributes}" if attributes else ""))
    return EXIT_PROBLEMS if errors else 0


def cmd_train_detector(args: argparse.Namespace) -> int:
    import dataclasses

    from leukolens.data.fields import FIELD_AUGMENT_PRESETS
    from leukolens.losses.pseudo import PseudoLabelConfig
    from leukolens.train.detector import TrainDetectorConfig, train_detector

    config = TrainDetectorConfig(
        data=args.data,
        extra_data=tuple(args.extra_data or ()),
        extra_classes=tuple(args.extra_classes or ()),
        out=args.out,
        backbone=args.backbone,
        input_size=args.input_size,
        stride=args.stride,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        lr=args.lr,
        max_minutes=args.max_minutes,
        seed=args.seed,
        threads=args.threads,
        augment=dataclasses.replace(FIELD_AUGMENT_PRESETS[args.augment], window=args.window),
        classes=tuple(args.classes or ()),
        sources=tuple(args.sources or ()),
        domain_key=args.domain_key,
        annotated_fraction=args.annotated_fraction,
        sparse_mode=args.sparse_mode,
        pseudo=PseudoLabelConfig(
            threshold=args.pseudo_threshold,
            weight=args.pseudo_weight,
            momentum=args.ema_momentum,
            max_entropy=args.pseudo_max_entropy,
            min_prototype_similarity=args.pseudo_prototype_similarity,
        ),
        stain_norm=args.stain_norm,
    )
    best = train_detector(config, resume=args.resume)
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
        found = detector.detect([image], threshold=threshold)[0]
        payload.append(detections_json(str(path), found))
        counts = {name: sum(found.class_name(i) == name for i in range(len(found))) for name in detector.classes}
        print(f"{path}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
    if args.json:
        _write_json(args.json, detect_json(str(detector.path), threshold, payload))
    return EXIT_PROBLEMS if errors else 0


def cmd_eval_detector(args: argparse.Namespace) -> int:
    from leukolens.eval.detection import evaluate_checkpoint, format_report

    report = evaluate_checkpoint(
        args.checkpoint, args.data, split=args.split, results_path=args.results, progress=_progress("detecting")
    )
    print(format_report(report))
    if args.json:
        _write_json(args.json, report)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from leukolens.analyze import analyze
    from leukolens.sample.differential import format_summary

    summary = analyze(
        args.images,
        out=args.out,
        detector=args.detector,
        cells=args.cells,
        overlays=not args.no_overlays,
        threshold=args.threshold,
        match_stain=args.match_stain,
        log=lambda message: print(message, file=sys.stderr),
        progress=partial(tqdm, desc="analysing", unit="batch", leave=False, disable=None, file=sys.stderr),
    )
    print(format_summary(summary, args.out))
    return EXIT_PROBLEMS if summary["fields_skipped"] else 0


def cmd_train_clip(args: argparse.Namespace) -> int:
    from leukolens.train.clip import TrainClipConfig, train_clip

    config = TrainClipConfig(
        data=args.data,
        out=args.out,
        image_tower=args.image_tower,
        text_tower=args.text_tower,
        sentences=args.sentences,
        classes=tuple(args.classes or ()),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        hold_out=tuple(args.hold_out or ()),
        max_minutes=args.max_minutes,
        seed=args.seed,
    )
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
        cache_dir=".cache/leukolens",
    )
    print(format_report(report))
    if args.json:
        _write_json(args.json, report)
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from leukolens.predict.describe import ImageTextPredictor
    from leukolens.predict.output import describe_json

    model = ImageTextPredictor.from_checkpoint(args.checkpoint)
    errors: list[tuple[str, str]] = []
    descriptions = model.describe_files(_image_paths(args.images), errors=errors)
    for _, message in errors:
        print(f"leukolens: skipped {message}", file=sys.stderr)
    if args.json:
        payload = describe_json(descriptions)
        if args.json == "-":
            print(json.dumps(payload["cells"], indent=2))
        else:
            _write_json(args.json, payload)
    if args.json != "-":
        for d in descriptions:
            scores = ", ".join(f"{n} {v} ({s:.2f})" for n, (v, s) in d.attributes.items())
            print(f"{d.source}: {d.sentence}\n  {d.label} ({d.label_score:.2f})" + (f"; {scores}" if scores else ""))
    return EXIT_PROBLEMS if errors else 0


def cmd_search(args: argparse.Namespace) -> int:
    import time

    from leukolens.predict.describe import ImageTextPredictor
    from leukolens.predict.output import search_json
    from leukolens.predict.search import gallery_images, open_index

    model = ImageTextPredictor.from_checkpoint(args.checkpoint)
    folder = Path(args.index) if args.index else Path(args.gallery) / ".leukolens-index"
    index = open_index(folder, model=model.identity, dim=model.checkpoint.config.embed_dim)
    if not args.no_update:
        errors: list[tuple[str, str]] = []
        images = [p for p in gallery_images(Path(args.gallery)) if folder not in p.parents]
        report = index.update(images, lambda paths: model.embed_files(_progress("indexing")(paths), errors=errors))
        for _, message in errors:
            print(f"leukolens: skipped {message}", file=sys.stderr)
        index.save(folder)
        print(report.summary(), file=sys.stderr)
    start = time.perf_counter()
    hits = index.search(model.embed_queries([args.query])[0], k=args.top)
    seconds = time.perf_counter() - start
    if args.json:
        _write_json(args.json, search_json(args.query, hits))
    for path, score in hits:
        print(f"{score:.3f}  {path}")
    print(f"{len(index):,} cells searched in {1000 * seconds:.0f} ms", file=sys.stderr)
    return 0


def cmd_train_gan(args: argparse.Namespace) -> int:
    from leukolens.train.gan import TrainGanConfig, train_gan

    config = TrainGanConfig(
        data=args.data,
        out=args.out,
        image_size=args.size,
        crop=args.crop,
        context=args.context,
        attributes=not args.no_attributes,
        batch_size=args.batch_size,
        steps=args.steps,
        max_minutes=args.max_minutes,
        g_channels=args.channels,
        d_channels=args.channels,
        class_power=args.class_power,
        aux_weight=args.aux_weight,
        mode_seeking=args.mode_seeking,
        lr_generator=args.lr_generator,
        lr_discriminator=args.lr_discriminator,
        rare=tuple(args.rare or ()),
        keep=args.keep,
        reduction_seed=args.reduction_seed,
        threads=args.threads,
        seed=args.seed,
    )
    path = train_gan(config, resume=args.resume)
    print(f"generator: {path}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from leukolens.predict.generate import ATTRIBUTES_CSV, generate_cells

    written = generate_cells(
        args.checkpoint or _default_gan(), args.out, classes=args.classes or (), n=args.n, seed=args.seed,
        truncation=args.truncation,
    )
    print(", ".join(f"{name} {count:,}" for name, count in written.items()) + f" cells written to {args.out}")
    if (Path(args.out) / ATTRIBUTES_CSV).is_file():
        print(f"attributes: {Path(args.out) / ATTRIBUTES_CSV} (WBCAtt columns)")
    return 0


def _default_gan() -> Path:
    from leukolens.predict.weights import resolve

    return resolve("gan", None)


def cmd_eval_gan(args: argparse.Namespace) -> int:
    from leukolens.eval.gan import evaluate_gan, format_report

    report = evaluate_gan(
        args.checkpoint or _default_gan(), data=args.data, cells_checkpoint=args.cells, split=args.split,
        per_class=args.per_class, out=args.out, seed=args.seed, progress=_progress("judging"),
    )
    print(format_report(report))
    if args.json:
        _write_json(args.json, report)
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    from leukolens.train.balance import BalanceConfig, format_balance, run_balance

    config = BalanceConfig(
        data=args.data,
        rare=tuple(args.rare),
        gan=args.gan,
        keep=args.keep,
        reduction_seed=args.reduction_seed,
        seeds=tuple(args.seeds),
        arms=tuple(args.arms),
        mode=args.mode,
        input_size=args.input_size,
        epochs=args.epochs,
        views=args.views,
        generated_per_class=args.generated_per_class,
        threads=args.threads,
    )
    report = run_balance(config)
    print(format_balance(report))
    if args.json:
        _write_json(args.json, report)
    return 0


def _image_paths(items: list[str]) -> list[Path]:
    """Image files from arguments that are files or folders; a clear error when none are images."""
    from leukolens.io.common import IMAGE_SUFFIXES

    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            paths.append(path)
        else:
            raise LeukolensError(f"{path}: no such file or folder")
    if not paths:
        raise LeukolensError("no images found in " + ", ".join(items))
    return paths


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

    train = commands.add_parser("train", help="train a model")
    train_commands = train.add_subparsers(dest="train_command", required=True, metavar="MODEL")
    train_cells_parser = train_commands.add_parser("cells", help="cell type and attribute heads on single cells")
    train_cells_parser.add_argument("--data", required=True, help="data set with train and val splits")
    train_cells_parser.add_argument("--out", default="out/cells", help="folder for checkpoints (best.pt, last.pt)")
    train_cells_parser.add_argument(
        "--backbone", default="efficientnet_lite0", choices=("efficientnet_lite0", "mobilenet_v2")
    )
    train_cells_parser.add_argument("--input-size", type=int, default=160)
    train_cells_parser.add_argument("--epochs", type=int, default=10)
    train_cells_parser.add_argument("--batch-size", type=int, default=32)
    train_cells_parser.add_argument("--lr", type=float, default=1e-3)
    train_cells_parser.add_argument("--patience", type=int, default=3, help="epochs without improvement before stop")
    train_cells_parser.add_argument("--max-minutes", type=float, default=0, help="time budget (0: none)")
    train_cells_parser.add_argument("--exclude", nargs="*", help="classes to hold out of training")
    train_cells_parser.add_argument("--no-balanced", action="store_true", help="plain instead of class-balanced")
    train_cells_parser.add_argument(
        "--stain", choices=("none", "reinhard", "macenko"), default="none", help="stain normalisation of every crop"
    )
    train_cells_parser.add_argument("--no-atypicality", action="store_true", help="skip fitting the atypicality score")
    train_cells_parser.add_argument(
        "--atypicality",
        default="knn:embedding",
        metavar="METHOD:FEATURES",
        help="scorer: knn or mahalanobis, on embedding, heads or both",
    )
    train_cells_parser.add_argument(
        "--refit-atypicality", action="store_true", help="only refit the atypicality scorer of OUT/best.pt"
    )
    train_cells_parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    train_cells_parser.add_argument("--seed", type=int, default=0)
    train_cells_parser.set_defaults(run=cmd_train_cells)

    train_detector_parser = train_commands.add_parser(
        "detector", help="WBC / RBC / platelet detector on whole fields (CenterNet, pretrained light backbone)"
    )
    train_detector_parser.add_argument("--data", required=True, help="data set with train and val splits")
    train_detector_parser.add_argument(
        "--extra-data", nargs="*", help="more data sets whose train splits join training (sources of --data left out)"
    )
    train_detector_parser.add_argument(
        "--extra-classes", nargs="*", help="classes the extra data sets teach (default: all), e.g. WBC Platelets"
    )
    train_detector_parser.add_argument("--out", default="out/detector", help="folder for best.pt and last.pt")
    train_detector_parser.add_argument(
        "--backbone", default="efficientnet_lite0", choices=("efficientnet_lite0", "mobilenet_v2")
    )
    train_detector_parser.add_argument("--input-size", type=int, default=512, help="longer side of a field (px)")
    train_detector_parser.add_argument("--stride", type=int, default=8, choices=(4, 8), help="output stride")
    train_detector_parser.add_argument("--window", type=int, default=320, help="training window side (px)")
    train_detector_parser.add_argument("--epochs", type=int, default=20)
    train_detector_parser.add_argument("--steps-per-epoch", type=int, default=60)
    train_detector_parser.add_argument("--batch-size", type=int, default=8)
    train_detector_parser.add_argument("--lr", type=float, default=2e-3)
    train_detector_parser.add_argument("--max-minutes", type=float, default=0, help="time budget (0: none)")
    train_detector_parser.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    train_detector_parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    train_detector_parser.add_argument("--seed", type=int, default=0)
    train_detector_parser.add_argument("--classes", nargs="*", help="train only these classes, e.g. WBC")
    train_detector_parser.add_argument(
        "--sources", nargs="*", help="keep only --data fields from these sources (e.g. BCDD PBC Raabin-WBC)"
    )
    train_detector_parser.add_argument(
        "--domain-key", default="source", choices=("source", "microscope", "camera", "magnification", "stain"),
        help="what --sources names (e.g. microscope: --sources high-cost for synthetic fields)",
    )
    train_detector_parser.add_argument(
        "--augment", default="default", choices=("plain", "default", "robust"),
        help="plain: geometry only; default: + stain and colour jitter; robust: + stronger jitter, blur, noise, zoom",
    )
    train_detector_parser.add_argument(
        "--stain-norm", default="none", choices=("none", "reinhard", "macenko"),
        help="normalise every field's stain to the first training field (stored in the checkpoint)",
    )
    train_detector_parser.add_argument(
        "--annotated-fraction", type=float, default=1.0,
        help="simulate sparse labels: keep boxes only in a random rectangle of this share of each field (e.g. 0.1)",
    )
    train_detector_parser.add_argument(
        "--sparse-mode", default="masked", choices=("naive", "masked", "pseudo"),
        help="unlabelled area: naive = background, masked = ignored, pseudo = ignored + EMA-teacher pseudo-labels",
    )
    train_detector_parser.add_argument("--pseudo-threshold", type=float, default=0.5, help="teacher confidence")
    train_detector_parser.add_argument("--pseudo-weight", type=float, default=0.5, help="pseudo-label loss weight")
    train_detector_parser.add_argument("--ema-momentum", type=float, default=0.999, help="teacher EMA momentum")
    train_detector_parser.add_argument(
        "--pseudo-max-entropy", type=float, default=0.0, help="drop pseudo-labels of higher class entropy (0: off)"
    )
    train_detector_parser.add_argument(
        "--pseudo-prototype-similarity", type=float, default=0.0,
        help="drop pseudo-labels less similar to their class prototype (cosine; 0: off)",
    )
    train_detector_parser.set_defaults(run=cmd_train_detector)

    train_gan_parser = train_commands.add_parser(
        "gan", help="conditional GAN for cell crops (class and attributes; CPU, about 30 minutes)"
    )
    train_gan_parser.add_argument("--data", required=True, help="data set with a train split")
    train_gan_parser.add_argument("--out", default="out/gan", help="folder for generator.pt, last.pt, preview.png")
    train_gan_parser.add_argument("--size", type=int, default=64, choices=(32, 64, 128), help="crop side (px)")
    train_gan_parser.add_argument(
        "--crop", choices=("auto", "image", "box"), default="auto",
        help="image: whole single-cell images; box: a window of --context times the box around each cell",
    )
    train_gan_parser.add_argument("--context", type=float, default=2.0, help="box window / box side (box crops)")
    train_gan_parser.add_argument("--channels", type=int, default=16, help="network width (last G / first D stage)")
    train_gan_parser.add_argument("--batch-size", type=int, default=32)
    train_gan_parser.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: budget only)")
    train_gan_parser.add_argument("--max-minutes", type=float, default=30, help="time budget (default 30)")
    train_gan_parser.add_argument("--no-attributes", action="store_true", help="condition on the class only")
    train_gan_parser.add_argument(
        "--class-power", type=float, default=0.75, help="0: cells drawn uniformly, 1: every class equally often"
    )
    train_gan_parser.add_argument(
        "--aux-weight", type=float, default=0.5,
        help="weight of the auxiliary class and attribute loss (AC-GAN); 0: projection discriminator alone",
    )
    train_gan_parser.add_argument(
        "--mode-seeking", type=float, default=1.0,
        help="weight of the mode-seeking term (MSGAN) against every cell of a condition looking alike; 0: off",
    )
    train_gan_parser.add_argument("--lr-generator", type=float, default=1e-4, help="generator learning rate")
    train_gan_parser.add_argument(
        "--lr-discriminator", type=float, default=4e-4,
        help="discriminator learning rate (a higher one than the generator's is the two time-scale rule)",
    )
    train_gan_parser.add_argument(
        "--rare", nargs="*", help="classes to reduce to --keep of their training cells (the `balance` protocol)"
    )
    train_gan_parser.add_argument("--keep", type=float, default=0.05, help="share of each rare class kept")
    train_gan_parser.add_argument("--reduction-seed", type=int, default=0, help="which rare cells are kept")
    train_gan_parser.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    train_gan_parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    train_gan_parser.add_argument("--seed", type=int, default=0)
    train_gan_parser.set_defaults(run=cmd_train_gan)

    train_clip_parser = train_commands.add_parser(
        "clip", help="image-text model: cells and sentences composed from their attributes (CPU, minutes)"
    )
    train_clip_parser.add_argument("--data", required=True, help="data set with train and val splits")
    train_clip_parser.add_argument("--out", default="out/clip", help="folder for checkpoints (best.pt, last.pt)")
    train_clip_parser.add_argument(
        "--image-tower", default="cellnet", choices=("cellnet", "imagenet"),
        help="frozen image features: the shipped cell model (default) or the plain ImageNet backbone",
    )
    train_clip_parser.add_argument("--text-tower", default="minilm", choices=("minilm", "transformer"))
    train_clip_parser.add_argument(
        "--sentences", default="composed", choices=("composed", "fixed", "diagnosis"),
        help="composed from each cell's attributes (default), or the baseline: one fixed sentence per class or "
        "per slide diagnosis",
    )
    train_clip_parser.add_argument("--classes", nargs="*", help="only these classes (default: all)")
    train_clip_parser.add_argument("--epochs", type=int, default=60)
    train_clip_parser.add_argument("--batch-size", type=int, default=256)
    train_clip_parser.add_argument("--lr", type=float, default=1e-3)
    train_clip_parser.add_argument(
        "--hold-out", nargs="*", metavar="COMBINATION",
        help="keep cells with these combinations out of training, e.g. 'Monocyte|cytoplasm_vacuole=yes'",
    )
    train_clip_parser.add_argument("--max-minutes", type=float, default=0, help="time budget (0: none)")
    train_clip_parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    train_clip_parser.add_argument("--seed", type=int, default=0)
    train_clip_parser.set_defaults(run=cmd_train_clip)

    evaluate = commands.add_parser("eval", help="evaluate a model")
    eval_commands = evaluate.add_subparsers(dest="eval_command", required=True, metavar="MODEL")
    eval_cells_parser = eval_commands.add_parser("cells", help="class, attribute and calibration metrics")
    eval_cells_parser.add_argument("--checkpoint", help="cell model (default: the shipped one)")
    eval_cells_parser.add_argument("--data", required=True)
    eval_cells_parser.add_argument("--split", default="test", help="split to evaluate (default test; 'all' for all)")
    eval_cells_parser.add_argument("--json", metavar="PATH", help="also write every number as JSON")
    eval_cells_parser.add_argument("--confusion", metavar="PNG", help="write the confusion matrix as an image")
    eval_cells_parser.add_argument("--no-agreement", action="store_true", help="skip the human-agreement ceiling")
    eval_cells_parser.set_defaults(run=cmd_eval_cells)

    eval_detector_parser = eval_commands.add_parser(
        "detector", help="COCO mAP@[.5:.95], AP50 per class, counting error per field"
    )
    eval_detector_parser.add_argument("--checkpoint", help="detector (default: the shipped one)")
    eval_detector_parser.add_argument("--data", required=True)
    eval_detector_parser.add_argument("--split", default="test", help="split to evaluate (default test; 'all' for all)")
    eval_detector_parser.add_argument("--json", metavar="PATH", help="also write every number as JSON")
    eval_detector_parser.add_argument("--results", metavar="PATH", help="write the predictions as a COCO results file")
    eval_detector_parser.set_defaults(run=cmd_eval_detector)

    eval_gan_parser = eval_commands.add_parser(
        "gan", help="FD and KID on our backbones, label and attribute fidelity, memorisation, a gallery per class"
    )
    eval_gan_parser.add_argument("--checkpoint", help="generator.pt (default: the shipped one)")
    eval_gan_parser.add_argument("--data", help="data set of real cells (default: the GAN's training data)")
    eval_gan_parser.add_argument("--cells", help="cell model that judges fidelity (default: the shipped one)")
    eval_gan_parser.add_argument("--split", default="test", help="real cells to compare with (default test)")
    eval_gan_parser.add_argument("--per-class", type=int, default=0, help="generated per class (0: as the split)")
    eval_gan_parser.add_argument("--out", help="folder for gan-eval.json and gallery-<class>.png")
    eval_gan_parser.add_argument("--json", metavar="PATH", help="also write every number as JSON")
    eval_gan_parser.add_argument("--seed", type=int, default=0)
    eval_gan_parser.set_defaults(run=cmd_eval_gan)

    eval_clip_parser = eval_commands.add_parser(
        "clip", help="class by sentences, attributes read out from text, recall@k both ways, unseen combinations"
    )
    eval_clip_parser.add_argument("--checkpoint", help="image-text model (default: the shipped one)")
    eval_clip_parser.add_argument("--data", required=True)
    eval_clip_parser.add_argument("--split", default="test", help="split to evaluate (default test; 'all' for all)")
    eval_clip_parser.add_argument("--among", nargs="*", help="also score class accuracy among these classes only")
    eval_clip_parser.add_argument("--hold-out", nargs="*", metavar="COMBINATION", help="combinations held out")
    eval_clip_parser.add_argument("--json", metavar="PATH", help="also write every number as JSON")
    eval_clip_parser.set_defaults(run=cmd_eval_clip)

    predict = commands.add_parser("predict", help="predict with a model")
    predict_commands = predict.add_subparsers(dest="predict_command", required=True, metavar="MODEL")
    predict_cells_parser = predict_commands.add_parser("cells", help="class, attributes and atypicality per cell")
    predict_cells_parser.add_argument("images", nargs="+", help="single-cell images or folders of them")
    predict_cells_parser.add_argument("--checkpoint", help="cell model (default: the shipped one)")
    predict_cells_parser.add_argument("--json", metavar="PATH", help="write predictions as JSON ('-': print it)")
    predict_cells_parser.add_argument(
        "--match-stain", action="store_true",
        help="bring each cell's colours to the training cells' first (images from another microscope or stain)",
    )
    predict_cells_parser.set_defaults(run=cmd_predict_cells)

    synth = commands.add_parser(
        "synth",
        help="render synthetic smear fields with exact labels: sparse LLD (or COCO) and full COCO exports",
        description="Patients cycle through the diagnoses (5 patients give all five); every field is rendered under "
        "every domain with the same cells. Writes OUT/full (COCO, every cell, the images), OUT/sparse (only the "
        "cells in each field's annotated region) and OUT/patients.csv.",
    )
    synth.add_argument("--out", required=True, help="output folder (new or empty)")
    synth.add_argument("--patients", type=int, default=5, help="number of patients, one slide each (default 5)")
    synth.add_argument("--fields-per-patient", type=int, default=4, help="fields per slide (default 4)")
    synth.add_argument("--seed", type=int, default=0, help="the same seed gives the same files (default 0)")
    synth.add_argument("--size", type=int, default=640, help="field width and height in pixels (default 640)")
    synth.add_argument(
        "--annotated-fraction", type=float, default=0.1, help="share of a 100x field inside its annotated region"
    )
    synth.add_argument("--diagnoses", default="normal,ALL,AML,CLL,CML", help="comma-separated, cycled over patients")
    synth.add_argument(
        "--domains",
        default="high-cost:high-end:100x",
        help="comma-separated MICROSCOPE:CAMERA:MAGNIFICATION[:STAIN] (microscopes high-cost, low-cost; cameras "
        "high-end, mid-level, phone; 100x, 40x, 10x), or 'lld' for LLD's twelve captures",
    )
    synth.add_argument("--stains", default="Wright,Giemsa,May-Grunwald-Giemsa", help="stains drawn per patient")
    synth.add_argument("--label-noise", type=float, default=0.0, help="chance an attribute label is misread")
    synth.add_argument("--format", choices=("lld", "coco"), default="lld", help="sparse export format (default lld)")
    synth.add_argument("--images", choices=("copy", "link"), default="copy", help="images in the sparse export")
    synth.add_argument("--workers", type=int, default=2, help="rendering processes (default 2)")
    synth.set_defaults(run=cmd_synth)

    demo = commands.add_parser("demo", help="run the main job on the bundled sample data")
    demo.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    demo.set_defaults(run=cmd_demo)

    detect = commands.add_parser("detect", help="find WBCs, RBCs and platelets in whole fields")
    detect.add_argument("images", nargs="+", help="field images or folders of them")
    detect.add_argument("--checkpoint", help="detector (default: the shipped one)")
    detect.add_argument("--threshold", type=float, help="score threshold (default: the checkpoint's)")
    detect.add_argument("--json", metavar="PATH", help="write every box as JSON")
    detect.set_defaults(run=cmd_detect)

    analyze = commands.add_parser(
        "analyze",
        help="the main job: detect, type and describe every WBC; JSON + overlay per field, differential per sample",
    )
    analyze.add_argument("images", nargs="+", help="field images or a folder of them (one sample)")
    analyze.add_argument("--out", default="out/analyze", help="output folder (default out/analyze)")
    analyze.add_argument("--detector", help="detector checkpoint (default: the shipped one)")
    analyze.add_argument("--cells", help="cell-model checkpoint (default: the shipped one)")
    analyze.add_argument("--threshold", type=float, help="detector score threshold (default: the checkpoint's)")
    analyze.add_argument("--no-overlays", action="store_true", help="skip the PNG overlays")
    analyze.add_argument(
        "--match-stain", action="store_true",
        help="bring each cell's colours to the training cells' first (images from another microscope or stain)",
    )
    analyze.set_defaults(run=cmd_analyze)

    generate = commands.add_parser("generate", help="write GAN-generated cells as a folder per class")
    generate.add_argument("--checkpoint", help="generator.pt (default: the shipped one)")
    generate.add_argument("--class", dest="classes", nargs="*", help="classes to generate (default: all)")
    generate.add_argument("--n", type=int, default=100, help="cells per class (default 100)")
    generate.add_argument("--out", required=True, help="output folder (OUT/<class>/*.png)")
    generate.add_argument("--truncation", type=float, default=0.0, help="redraw latents beyond this many sigmas")
    generate.add_argument("--seed", type=int, default=0)
    generate.set_defaults(run=cmd_generate)

    balance = commands.add_parser(
        "balance",
        help="rare-class protocol: keep a few cells of some classes, train with none / class-weighted / "
        "oversampling / gan / oversampling+gan, score on the test split over several seeds",
    )
    balance.add_argument("--data", required=True, help="data set with train and test splits")
    balance.add_argument("--rare", nargs="+", required=True, help="classes reduced to --keep of their training cells")
    balance.add_argument("--keep", type=float, default=0.05, help="share of each rare class kept (default 0.05)")
    balance.add_argument("--reduction-seed", type=int, default=0, help="which rare cells are kept (as for the GAN)")
    balance.add_argument("--gan", help="generator.pt trained with the same --rare/--keep (needed by the gan arms)")
    balance.add_argument("--arms", nargs="+", default=["none", "class-weighted", "oversampling", "gan",
                                                      "oversampling+gan"])
    balance.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    balance.add_argument("--mode", choices=("probe", "finetune"), default="probe",
                         help="probe: frozen ImageNet backbone + linear head (seconds); finetune: end to end (minutes)")
    balance.add_argument("--input-size", type=int, default=128, help="backbone input (crops up-sampled)")
    balance.add_argument("--epochs", type=int, default=0, help="0: 60 for probe, 4 for finetune")
    balance.add_argument("--views", type=int, default=4, help="probe: dihedral views cached per crop (1-8)")
    balance.add_argument(
        "--generated-per-class", type=int, default=0, help="generated cells per rare class (0: up to the median class)"
    )
    balance.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    balance.add_argument("--json", metavar="PATH", help="also write every run as JSON")
    balance.set_defaults(run=cmd_balance)

    describe = commands.add_parser("describe", help="describe cells in words: class and attributes, with scores")
    describe.add_argument("images", nargs="+", help="single-cell images or folders of them")
    describe.add_argument("--checkpoint", help="image-text model (default: the shipped one)")
    describe.add_argument("--json", metavar="PATH", help="write descriptions as JSON ('-': print it)")
    describe.set_defaults(run=cmd_describe)

    search = commands.add_parser("search", help="find cells from a description in a gallery of cell images")
    search.add_argument("query", help='a description, e.g. "large cells with prominent nucleoli"')
    search.add_argument("--gallery", required=True, help="folder of single-cell images (searched recursively)")
    search.add_argument("--index", help="index folder (default GALLERY/.leukolens-index); updated incrementally")
    search.add_argument("--no-update", action="store_true", help="search the index as it is, without re-scanning")
    search.add_argument("--top", type=int, default=10, help="how many cells to show (default 10)")
    search.add_argument("--checkpoint", help="image-text model (default: the shipped one)")
    search.add_argument("--json", metavar="PATH", help="also write the hits as JSON")
    search.set_defaults(run=cmd_search)
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
