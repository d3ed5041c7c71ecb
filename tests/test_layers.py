"""The import direction of the layers: a module imports only its own layer and the layers below it.

Every module under ``src/leukolens`` is parsed with :mod:`ast` (nothing is imported), and every ``import`` in it,
including those inside functions, is checked against this table. A module belongs to the layer of its first name
under ``leukolens`` (``leukolens.io.coco`` is in ``io``).

====== ================================================ ==================================================
level  parts                                            what they hold
====== ================================================ ==================================================
0      records, errors                                  typed records, vocabularies; the error, atomic writes
1      io, text                                         readers and writers; sentences about cells
2      synth                                            the synthetic smear generator (writes through io)
3      data, splits                                     Datasets, transforms, samplers, data set counts; splits
4      models                                           networks, their checkpoints
5      losses                                           losses, outside the models
6      eval                                             metrics and benchmark protocols
7      train                                            configs and training loops (validate with eval)
8      predict, detect, describe, generate, search      inference (the top-level files move into predict/)
9      sample                                           from cells to a sample: differential, flags
10     report, store                                    HTML report, overlays, plots; the archive
11     analyze, cluster, analyze_slide                  the whole pipeline on an image: predict, sample, report;
                                                        its fields on Dask workers; a whole slide
12     cli, web, demo, __main__, leukolens (the package) thin faces that only call the library
====== ================================================ ==================================================

``eval`` sits below ``train``: a training loop validates with eval's metrics every epoch, and eval never trains
(nothing in ``eval/`` imports ``train/``).
``text`` sits beside ``io`` because it needs only the records (attribute schemas) and ``data`` builds captions from
it; ``synth`` sits between ``io`` and ``data`` because it writes data sets through ``io`` and nothing below ``data``
needs it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "leukolens"

LAYERS: dict[str, int] = {
    "records": 0,
    "errors": 0,
    "io": 1,
    "text": 1,
    "synth": 2,
    "data": 3,
    "splits": 3,
    "models": 4,
    "losses": 5,
    "eval": 6,
    "train": 7,
    "predict": 8,
    "detect": 8,
    "describe": 8,
    "generate": 8,
    "search": 8,
    "sample": 9,
    "report": 10,
    "store": 10,
    "analyze": 11,
    "cluster": 11,
    "analyze_slide": 11,
    "cli": 12,
    "web": 12,
    "demo": 12,
    "__main__": 12,
    "leukolens": 12,  # the package's own __init__
}

# Imports that run back up a layer today, in files others are restructuring (inference into predict/). Each entry is
# (importing module, imported module); it also covers the imported module's submodules. Delete an entry once the
# import is gone: test_known_violations_still_exist says which.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """Every leukolens module ``path`` imports, at any depth of the code, with the line of the import."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from ..io import y
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "leukolens" or not node.module:  # from leukolens import io, from . import coco: modules
                found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((module, node.lineno))
    return [(module, line) for module, line in found if module.split(".")[0] == "leukolens"]


def layer_part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def covered(entry: tuple[str, str], module: str, target: str) -> bool:
    """Whether a KNOWN_VIOLATIONS entry covers ``module`` importing ``target``."""
    known_module, known_target = entry
    return module == known_module and (target == known_target or target.startswith(known_target + "."))


def upward_imports() -> list[tuple[str, str, str]]:
    """(importing module, imported module, where) for every import that runs up a layer."""
    out = []
    for path in sorted(SRC.rglob("*.py")):
        module = module_name(path)
        for target, line in imported_modules(path):
            part = layer_part(target)
            if part in LAYERS and LAYERS[part] > LAYERS[layer_part(module)]:
                out.append((module, target, f"{path.relative_to(SRC.parent)}:{line}"))
    return out


def test_every_part_of_the_package_has_a_layer():
    parts = {layer_part(module_name(p)) for p in SRC.rglob("*.py")}
    missing = sorted(parts - set(LAYERS))
    assert not missing, f"add these to LAYERS in {Path(__file__).name} (and to the table above it): {missing}"


def test_imports_do_not_run_up_a_layer():
    wrong = [
        f"{where}: {module} (layer {LAYERS[layer_part(module)]}) imports {target} (layer {LAYERS[layer_part(target)]})"
        for module, target, where in upward_imports()
        if not any(covered(entry, module, target) for entry in KNOWN_VIOLATIONS)
    ]
    assert not wrong, "imports that run back up a layer:\n" + "\n".join(wrong)


def test_known_violations_still_exist():
    present = [(module, target) for module, target, _ in upward_imports()]
    gone = sorted(entry for entry in KNOWN_VIOLATIONS if not any(covered(entry, m, t) for m, t in present))
    assert not gone, f"these imports are fixed; remove them from KNOWN_VIOLATIONS: {gone}"


def test_data_does_not_import_models():
    """The cycle this test was written against: data/ imported AttributeSpec from models/, and models/ imports data/."""
    offenders = [(m, t) for m, t, _ in upward_imports() if layer_part(m) == "data" and layer_part(t) == "models"]
    assert offenders == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import leukolens.train.cells\n", ["leukolens.train.cells"]),
        ("from leukolens import train\n", ["leukolens.train"]),
        ("def f():\n    from ..train import cells\n", ["leukolens.train"]),
        ("from . import coco\n", ["leukolens.io.coco"]),
        ("import numpy\nfrom collections import Counter\n", []),
    ],
)
def test_imports_are_found_wherever_they_are(tmp_path, monkeypatch, source, expected):
    package = tmp_path / "leukolens" / "io"
    package.mkdir(parents=True)
    path = package / "__init__.py"
    path.write_text(source)
    monkeypatch.setattr(f"{__name__}.SRC", tmp_path / "leukolens")
    assert [module for module, _ in imported_modules(path)] == expected


def test_an_import_up_a_layer_is_caught(tmp_path, monkeypatch):
    data = tmp_path / "leukolens" / "data"
    data.mkdir(parents=True)
    (data / "cells.py").write_text("import numpy\n\n\ndef heads():\n    from leukolens.models.cellnet import CellNet\n")
    (data / "fields.py").write_text("from leukolens.io import read_dataset\nfrom . import cells\n")
    monkeypatch.setattr(f"{__name__}.SRC", tmp_path / "leukolens")
    assert upward_imports() == [("leukolens.data.cells", "leukolens.models.cellnet", "leukolens/data/cells.py:5")]
