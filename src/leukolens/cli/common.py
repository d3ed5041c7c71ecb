"""What the command groups share: exit codes, progress bars, reading a data set, JSON out, image arguments, and
option defaults read from the config dataclasses (one place per default)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from leukolens.errors import LeukolensError, atomic_write_text
from leukolens.io import READ_FORMATS, ProblemLog, read_dataset, sniff_format
from leukolens.records import Dataset

EXIT_PROBLEMS = 1
EXIT_USAGE = 2
ConfigT = TypeVar("ConfigT")


def default(config: type, name: str):
    """The default of field ``name`` of the dataclass ``config``: an option's default is read from its config,
    never written a second time (a tuple default becomes a list, as argparse gives for ``nargs``)."""
    for f in dataclasses.fields(config):
        if f.name == name:
            value = f.default_factory() if f.default is dataclasses.MISSING else f.default
            return list(value) if isinstance(value, tuple) else value
    raise AttributeError(f"{config.__name__} has no field {name!r}")


def config_from_args(config: type[ConfigT], args: argparse.Namespace, **values) -> ConfigT:
    """The dataclass ``config`` built from the parsed options: each field from the option of the same name (a list
    becomes a tuple), ``values`` for the others (options named or read otherwise); a field without either keeps its
    default."""
    given = vars(args)
    for f in dataclasses.fields(config):
        if f.name not in values and f.name in given:
            value = given[f.name]
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return config(**values)


def config_options(parser: argparse.ArgumentParser, config: type):
    """``option(flag, field, type, **argparse options)``: adds ``flag`` to ``parser`` with the default of ``config``'s
    ``field`` (``config=`` names another dataclass for one option)."""

    def option(flag: str, name: str, kind: type | None = None, *, config: type = config, **kwargs) -> None:
        parser.add_argument(flag, **({"type": kind} if kind else {}), default=default(config, name), **kwargs)

    return option


def progress(description: str, unit: str = "img"):
    """A tqdm wrapper for long loops; quiet when stderr is not a terminal."""
    return partial(tqdm, desc=description, unit=unit, leave=False, disable=None, file=sys.stderr)


class ProgressCounter:
    """A ``(done, total)`` callback for jobs that report how far they got: a tqdm bar when stderr is a terminal,
    else a plain line (``description: done/total unit``) at most every ``every`` seconds and at the end, for logs."""

    def __init__(self, description: str, unit: str = "field", *, every: float = 10.0):
        self.description, self.unit, self.every = description, unit, every
        self._bar = None
        self._last = None

    def __call__(self, done: int, total: int) -> None:
        if sys.stderr.isatty():
            if self._bar is None:
                self._bar = tqdm(total=total, desc=self.description, unit=self.unit, leave=False, file=sys.stderr)
            self._bar.update(done - self._bar.n)
            if done >= total:
                self._bar.close()
            return
        now = time.monotonic()
        if done >= total or self._last is None or now - self._last >= self.every:
            self._last = now
            print(f"{self.description}: {done}/{total} {self.unit}s", file=sys.stderr, flush=True)


def load(args: argparse.Namespace, log: ProblemLog) -> tuple[Dataset, str]:
    names = tuple(n.strip() for n in args.names.split(",")) if getattr(args, "names", None) else None
    format = args.format or sniff_format(Path(args.data))
    dataset = read_dataset(args.data, format=format, log=log, names=names, progress=progress("reading"))
    return dataset, format


def write_json(path: str, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def print_report(text: str, report: dict, json_path: str | None) -> int:
    """Print a report and, with ``--json PATH``, write every number of it; exit status 0."""
    print(text)
    if json_path:
        write_json(json_path, report)
    return 0


def print_or_write_json(path: str | None, payload: dict, key: str) -> None:
    """``--json PATH`` writes ``payload``; ``--json -`` prints its ``key`` part."""
    if not path:
        return
    if path == "-":
        print(json.dumps(payload[key], indent=2))
    else:
        write_json(path, payload)


def report_skipped(errors: list[tuple[str, str]]) -> None:
    for _, message in errors:
        print(f"leukolens: skipped {message}", file=sys.stderr)


def image_paths(items: list[str]) -> list[Path]:
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


def data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="data set folder, COCO .json or WBCAtt .csv")
    parser.add_argument("--format", choices=READ_FORMATS, help="input format (default: recognised from the files)")
    parser.add_argument("--names", help="class names, comma-separated, for YOLO folders without data.yaml/classes.txt")
    parser.add_argument("--strict", action="store_true", help="stop at the first problem")


def json_argument(parser: argparse.ArgumentParser, help: str = "also write every number as JSON") -> None:
    parser.add_argument("--json", metavar="PATH", help=help)
