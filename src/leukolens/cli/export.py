"""``leukolens export onnx``: a cell model or detector as one ONNX file, its preprocessing inside (docs/scaling.md)."""

from __future__ import annotations

import argparse

from leukolens.errors import LeukolensError
from leukolens.models.checkpoint import KINDS
from leukolens.predict.export import EXPORTABLE


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from leukolens.predict.export import export_onnx_file

    if args.checkpoint is None and args.model is None:
        raise LeukolensError("say what to export: --checkpoint C, or --model cells|detector for a shipped model")
    exported = export_onnx_file(args.out, checkpoint=args.checkpoint, kind=args.model)
    what = KINDS[exported.kind][1]
    print(f"wrote {exported.path} ({what}, {exported.size_bytes / 1e6:.1f} MB) from {exported.checkpoint}")
    print(f"input:   {exported.input.describe()}: {exported.input.meaning}")
    for i, output in enumerate(exported.outputs):
        print(f"{'outputs:' if i == 0 else '':<9}{output.describe()}: {output.meaning}")
    print(f"metadata (JSON values): {', '.join(exported.metadata)}; ONNX Runtime reads them with "
          "session.get_modelmeta().custom_metadata_map")
    print(f"check: torch and ONNX Runtime differ by at most {exported.max_abs_diff:.2g} on a fixed random input")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="export a model for other runtimes").add_subparsers(
        dest="export_command", required=True, metavar="FORMAT"
    )
    onnx = export.add_parser(
        "onnx", help="a cell model or detector as an ONNX file, its preprocessing in the file's metadata",
        description="Export a checkpoint's network to ONNX (opset 17, batch size free; the detector also takes any "
                    "field size). The file's metadata carries the input size, normalisation, class and attribute "
                    "names, stain reference and decoding (JSON values). Which model a checkpoint holds is read from "
                    "it; without --checkpoint, --model picks a shipped one.",
    )
    onnx.add_argument("--checkpoint", help="a cell-model or detector checkpoint (default: the shipped --model)")
    onnx.add_argument("--model", choices=EXPORTABLE,
                      help="which shipped model to export; with --checkpoint, what the checkpoint must hold")
    onnx.add_argument("--out", required=True, help="the .onnx file to write")
    onnx.set_defaults(run=cmd_export_onnx)
