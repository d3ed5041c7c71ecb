"""The ``leukolens`` command: a thin layer over the library, one module per command group.

==========  ==========================================================================
module      commands
==========  ==========================================================================
data        ``data info | validate | convert | split | view``
synth       ``synth``, ``demo`` (the demo itself: :mod:`leukolens.cli.demo`)
cells       ``train cells``, ``eval cells``, ``predict cells``, ``calibrate``
fields      ``train detector``, ``detect``, ``eval detector``, ``analyze``
clip        ``train clip``, ``eval clip``, ``describe``, ``search``
gan         ``train gan``, ``eval gan``, ``generate``, ``balance``
export      ``export onnx``
==========  ==========================================================================

Each option's default is read from its config dataclass (:func:`leukolens.cli.common.default`). A user's mistake
(bad input, bad option) prints one clear message and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from leukolens import __version__
from leukolens.cli import cells, clip, data, export, fields, gan, serve, synth
from leukolens.cli.common import EXIT_PROBLEMS, EXIT_USAGE
from leukolens.errors import LeukolensError

__all__ = ["EXIT_PROBLEMS", "EXIT_USAGE", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leukolens", description="Read peripheral blood smear images the way a hematologist does."
    )
    parser.add_argument("--version", action="version", version=f"leukolens {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data.add_commands(commands)
    train = commands.add_parser("train", help="train a model").add_subparsers(
        dest="train_command", required=True, metavar="MODEL"
    )
    evaluate = commands.add_parser("eval", help="evaluate a model").add_subparsers(
        dest="eval_command", required=True, metavar="MODEL"
    )
    predict = commands.add_parser("predict", help="predict with a model").add_subparsers(
        dest="predict_command", required=True, metavar="MODEL"
    )
    cells.add_commands(commands, train=train, evaluate=evaluate, predict=predict)
    fields.add_commands(commands, train=train, evaluate=evaluate)
    gan.add_commands(commands, train=train, evaluate=evaluate)
    clip.add_commands(commands, train=train, evaluate=evaluate)
    synth.add_commands(commands)
    serve.add_commands(commands)
    export.add_commands(commands)
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
