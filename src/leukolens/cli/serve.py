"""``leukolens serve``: the web service and its page over an archive folder (docs/web.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from leukolens.cli.common import default
from leukolens.errors import LeukolensError
from leukolens.predict.engine import ENGINES
from leukolens.web import ServeConfig

WEB_EXTRA = 'pip install -e ".[web]"  (FastAPI, uvicorn, python-multipart)'
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from leukolens.web.app import create_app
    except ImportError as error:
        raise LeukolensError(f"the web service needs the web extra ({error.name} is missing): {WEB_EXTRA}") from None
    token = args.token or os.environ.get("LEUKOLENS_TOKEN") or None
    config = ServeConfig(data_dir=Path(args.data_dir), token=token, max_upload_mb=args.max_upload_mb,
                         max_files=args.max_files, queue_size=args.queue_size, workers=args.workers,
                         detector=args.detector, cells=args.cells, engine=args.engine)
    if args.host not in LOCAL_HOSTS:
        print(f"leukolens: warning: listening on {args.host}, reachable from other machines"
              + ("" if token else "; without --token anyone there can read and change the archive"), file=sys.stderr)
    app = create_app(config)
    print(f"leukolens: serving {config.data_dir} at http://{args.host}:{args.port}/ (Ctrl-C stops)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", server_header=False)
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve", help="the web service and its page: upload, review, sign, search (needs the web extra)",
        description="Serve the archive in --data-dir with the analysis queue, a JSON API under /api and a page at /. "
                    "Binds to localhost unless --host says otherwise.",
    )
    serve.add_argument("--data-dir", default=str(default(ServeConfig, "data_dir")),
                       help="the archive's folder (created when missing)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: localhost only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--token", default=None,
                       help="require 'Authorization: Bearer TOKEN' on every API call (or set LEUKOLENS_TOKEN)")
    serve.add_argument("--max-upload-mb", type=float, default=default(ServeConfig, "max_upload_mb"),
                       help="largest upload, in MiB (larger: 413)")
    serve.add_argument("--max-files", type=int, default=default(ServeConfig, "max_files"),
                       help="most fields in one upload")
    serve.add_argument("--queue-size", type=int, default=default(ServeConfig, "queue_size"),
                       help="most samples waiting for analysis (more: 503)")
    serve.add_argument("--workers", type=int, default=default(ServeConfig, "workers"),
                       help="analysis threads, each with its own models")
    serve.add_argument("--detector", type=Path, default=None, help="detector checkpoint (default: the shipped one)")
    serve.add_argument("--cells", type=Path, default=None, help="cell-model checkpoint (default: the shipped one)")
    serve.add_argument("--engine", default=default(ServeConfig, "engine"), choices=ENGINES)
    serve.set_defaults(run=cmd_serve)
