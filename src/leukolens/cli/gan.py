"""The GAN's commands: ``train gan``, ``eval gan``, ``generate`` and the rare-class protocol ``balance``."""

from __future__ import annotations

import argparse
from pathlib import Path

from leukolens.cli.common import config_from_args, config_options, json_argument, print_report, progress
from leukolens.models.gan_checkpoint import MAX_DRAWS_PER_CELL
from leukolens.train.balance import BalanceConfig
from leukolens.train.gan import TrainGanConfig


def cmd_train_gan(args: argparse.Namespace) -> int:
    from leukolens.train.gan import train_gan

    config = config_from_args(
        TrainGanConfig,
        args,
        image_size=args.size,
        attributes=not args.no_attributes,
        g_channels=args.channels,
        d_channels=args.channels,
    )
    path = train_gan(config, resume=args.resume)
    print(f"generator: {path}")
    return 0


def _default_gan() -> Path:
    from leukolens.predict.weights import resolve

    return resolve("gan", None)


def cmd_generate(args: argparse.Namespace) -> int:
    from leukolens.predict.generate import ATTRIBUTES_CSV, generate_cells

    gan = args.checkpoint or _default_gan()
    if args.judge and args.min_confidence <= 0:
        print("--judge is used only with --min-confidence above 0: every cell drawn is written")
    written = generate_cells(
        gan, args.out, classes=args.classes or (), n=args.n, seed=args.seed, truncation=args.truncation,
        judge=args.judge, min_confidence=args.min_confidence, max_draws_per_cell=args.max_draws_per_cell,
    )
    print(", ".join(r.summary() for r in written.values()) + f" cells written to {args.out}")
    for r in written.values():
        if r.short:
            print(f"{r.name}: only {r.written:,} of {r.wanted:,} cells passed the judge (probability >= "
                  f"{args.min_confidence:g}) in {r.drawn:,} draws; lower --min-confidence or raise "
                  "--max-draws-per-cell for more")
    if (Path(args.out) / ATTRIBUTES_CSV).is_file():
        print(f"attributes: {Path(args.out) / ATTRIBUTES_CSV} (WBCAtt columns)")
    return 0


def cmd_eval_gan(args: argparse.Namespace) -> int:
    from leukolens.eval.gan import evaluate_gan, format_report

    report = evaluate_gan(
        args.checkpoint or _default_gan(), data=args.data, cells_checkpoint=args.cells, split=args.split,
        per_class=args.per_class, out=args.out, seed=args.seed, min_confidence=args.min_confidence,
        progress=progress("judging"),
    )
    return print_report(format_report(report), report, args.json)


def cmd_balance(args: argparse.Namespace) -> int:
    from leukolens.train.balance import format_balance, run_balance

    config = config_from_args(BalanceConfig, args)
    report = run_balance(config)
    return print_report(format_balance(report), report, args.json)


def _train_gan_parser(train) -> None:
    parser = train.add_parser(
        "gan", help="conditional GAN for cell crops (class and attributes; CPU, about 30 minutes)"
    )

    option = config_options(parser, TrainGanConfig)

    parser.add_argument("--data", required=True, help="data set with a train split")
    option("--out", "out", help="folder for generator.pt, last.pt, preview.png")
    option("--size", "image_size", int, choices=(32, 64, 128), help="crop side (px)")
    option("--crop", "crop", choices=("auto", "image", "box"),
           help="image: whole single-cell images; box: a window of --context times the box around each cell")
    option("--context", "context", float, help="box window / box side (box crops)")
    option("--channels", "g_channels", int, help="network width (last G / first D stage)")
    option("--discriminator", "discriminator", choices=("resnet", "projected", "vision-aided"),
           help="resnet: trained from scratch; projected: small heads on a frozen ImageNet EfficientNet-Lite0; "
           "vision-aided: both, each with its own loss")
    option("--feature-size", "feature_size", int, help="projected: side crops are resized to for the frozen network")
    option("--batch-size", "batch_size", int)
    option("--steps", "steps", int, help="stop after this many steps (0: budget only)")
    option("--max-minutes", "max_minutes", float, help="time budget (default %(default)s)")
    parser.add_argument("--no-attributes", action="store_true", help="condition on the class only")
    option("--class-power", "class_power", float, help="0: cells drawn uniformly, 1: every class equally often")
    option("--aux-weight", "aux_weight", float,
           help="weight of the auxiliary class and attribute loss (AC-GAN); 0: projection discriminator alone")
    option("--mode-seeking", "mode_seeking", float,
           help="weight of the mode-seeking term (MSGAN) against every cell of a condition looking alike; 0: off")
    option("--lr-generator", "lr_generator", float, help="generator learning rate")
    option("--lr-discriminator", "lr_discriminator", float,
           help="discriminator learning rate (a higher one than the generator's is the two time-scale rule)")
    option("--rare", "rare", nargs="*",
           help="classes to reduce to --keep of their training cells (the `balance` protocol)")
    # The share kept is the rare-class protocol's, so that the GAN and `balance` see the same reduced set.
    option("--keep", "keep", float, config=BalanceConfig, help="share of each rare class kept")
    option("--reduction-seed", "reduction_seed", int, help="which rare cells are kept")
    option("--threads", "threads", int, help="torch threads (0: one per core)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    option("--seed", "seed", int)
    parser.set_defaults(run=cmd_train_gan)


def _balance_parser(commands) -> None:
    parser = commands.add_parser(
        "balance",
        help="rare-class protocol: keep a few cells of some classes, train with none / class-weighted / "
        "oversampling / gan / oversampling+gan, score on the test split over several seeds",
    )

    option = config_options(parser, BalanceConfig)

    parser.add_argument("--data", required=True, help="data set with train and test splits")
    parser.add_argument("--rare", nargs="+", required=True, help="classes reduced to --keep of their training cells")
    option("--keep", "keep", float, help="share of each rare class kept (default %(default)s)")
    option("--reduction-seed", "reduction_seed", int, help="which rare cells are kept (as for the GAN)")
    option("--gan", "gan", help="generator.pt trained with the same --rare/--keep (needed by the gan arms)")
    option("--arms", "arms", nargs="+")
    option("--seeds", "seeds", int, nargs="+")
    option("--mode", "mode", choices=("probe", "finetune"),
           help="probe: frozen ImageNet backbone + linear head (seconds); finetune: end to end (minutes)")
    option("--input-size", "input_size", int, help="backbone input (crops up-sampled)")
    option("--epochs", "epochs", int, help="0: 60 for probe, 4 for finetune")
    option("--views", "views", int, help="probe: dihedral views cached per crop (1-8)")
    option("--judge-confidence", "judge_confidence", float,
           help="judged arms: keep generated cells the protocol's probe reads as their class with this probability")
    option("--generated-per-class", "generated_per_class", int,
           help="generated cells per rare class (0: up to the median class)")
    option("--threads", "threads", int, help="torch threads (0: one per core)")
    json_argument(parser, "also write every run as JSON")
    parser.set_defaults(run=cmd_balance)


def add_commands(commands, *, train, evaluate) -> None:
    _train_gan_parser(train)

    eval_gan = evaluate.add_parser(
        "gan", help="FD and KID on our backbones, label and attribute fidelity, memorisation, a gallery per class"
    )
    eval_gan.add_argument("--checkpoint", help="generator.pt (default: the shipped one)")
    eval_gan.add_argument("--data", help="data set of real cells (default: the GAN's training data)")
    eval_gan.add_argument("--cells", help="cell model that judges fidelity (default: the shipped one)")
    eval_gan.add_argument("--split", default="test", help="real cells to compare with (default test)")
    eval_gan.add_argument("--per-class", type=int, default=0, help="generated per class (0: as the split)")
    eval_gan.add_argument("--out", help="folder for gan-eval.json and gallery-<class>.png")
    eval_gan.add_argument("--min-confidence", type=float, default=0.0, metavar="P",
                          help="measure only generated cells the --cells model reads as their class with "
                          "probability >= P, and report the acceptance rate (default 0: every cell)")
    json_argument(eval_gan)
    eval_gan.add_argument("--seed", type=int, default=0)
    eval_gan.set_defaults(run=cmd_eval_gan)

    generate = commands.add_parser("generate", help="write GAN-generated cells as a folder per class")
    generate.add_argument("--checkpoint", help="generator.pt (default: the shipped one)")
    generate.add_argument("--class", dest="classes", nargs="*", help="classes to generate (default: all)")
    generate.add_argument("--n", type=int, default=100, help="cells per class (default %(default)s)")
    generate.add_argument("--out", required=True, help="output folder (OUT/<class>/*.png)")
    generate.add_argument("--truncation", type=float, default=0.0, help="redraw latents beyond this many sigmas")
    generate.add_argument("--min-confidence", type=float, default=0.0, metavar="P",
                          help="write only cells the judge reads as their class with probability >= P "
                          "(default 0: no rejection)")
    generate.add_argument("--judge", metavar="CHECKPOINT", help="cell model that judges (default: the shipped one)")
    generate.add_argument("--max-draws-per-cell", type=int, default=MAX_DRAWS_PER_CELL,
                          help="with --min-confidence, stop a class after N x this many draws (default %(default)s)")
    generate.add_argument("--seed", type=int, default=0)
    generate.set_defaults(run=cmd_generate)

    _balance_parser(commands)
