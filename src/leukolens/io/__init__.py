"""Readers and writers for the label formats of this field, behind :func:`read_dataset` and :func:`write_dataset`.

Formats: ``lld`` (LeukemiaAttri / LLD, 12 and 16 columns), ``yolo`` (plain), ``coco`` (with per-box attributes,
annotated regions and domain metadata), ``voc`` (Pascal VOC, as BCCD), ``wbcatt`` (WBCAtt CSV joined to images by
file name) and ``folders`` (one folder per class of single-cell crops). :func:`sniff_format` tells them apart, and
a few public data sets are recognised so that they read with their class names and sources (see :func:`read_dataset`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from leukolens.errors import LeukolensError
from leukolens.io.common import (
    IMAGE_SUFFIXES,
    InputError,
    Problem,
    ProblemLog,
    WriteReport,
    check_image,
)
from leukolens.records import PBC_CLASSES, Dataset, Domain

READ_FORMATS = ("lld", "yolo", "coco", "voc", "wbcatt", "folders")
WRITE_FORMATS = ("coco", "lld", "yolo", "voc", "wbcatt", "folders")

# TXL-PBC merges four sources; the image size tells them apart (a few PBC crops are 366x369).
TXL_PBC_SOURCES = {
    (640, 480): "BCCD",
    (416, 416): "BCDD",
    (360, 363): "PBC",
    (366, 369): "PBC",
    (575, 575): "Raabin-WBC",
}
PBC_DOMAIN = Domain(source="PBC", microscope="CellaVision DM96", stain="May-Grunwald-Giemsa")


def txl_pbc_domain(image: Path, size: tuple[int, int]) -> Domain:
    return Domain(source=TXL_PBC_SOURCES.get(tuple(size), "TXL-PBC"))


def _is_txl_pbc(root: Path) -> bool:
    readme = root / "README.md"
    return readme.is_file() and "TXL-PBC" in readme.read_text(encoding="utf-8", errors="replace")[:2000]


def _wbcatt_csvs(root: Path) -> list[Path]:
    """WBCAtt's main CSVs beside a PBC image set (not the re-annotation, which is a second opinion)."""
    folder = root / "wbcatt"
    return sorted(folder.glob("pbc_attr_v1_*.csv")) if folder.is_dir() else []


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file())


def sniff_format(path: Path) -> str:
    """The format of a data set at ``path``, from its files.

    Raises:
        LeukolensError: nothing recognisable there.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(Problem(str(path), None, "not-found", "no such file or folder"))
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        if path.suffix.lower() == ".csv":
            return "wbcatt"
        raise LeukolensError(f"{path}: cannot tell the format of this file; pass --format")
    if (path / "Annotations").is_dir() or any((p / "Annotations").is_dir() for p in path.iterdir() if p.is_dir()):
        return "voc"
    if any(path.glob("*.json")) and not (path / "labels").is_dir():  # images/ beside a COCO file is common
        return "coco"
    if any(path.glob("pbc_attr_v1_*.csv")) or (path / "wbcatt.csv").is_file():
        return "wbcatt"
    from leukolens.io.yolo import find_split_folders, sniff_columns

    try:
        find_split_folders(path)
    except InputError:
        subfolders = [p for p in path.iterdir() if p.is_dir()]
        if subfolders and any(_has_images(p) or any(q.is_dir() for q in p.iterdir()) for p in subfolders):
            return "folders"
        raise LeukolensError(
            f"{path}: no data set format recognised; pass --format ({', '.join(READ_FORMATS)})"
        ) from None
    columns = sniff_columns(path)
    return "lld" if columns in (12, 16) else "yolo"


def read_dataset(
    path: str | Path,
    *,
    format: str | None = None,
    log: ProblemLog | None = None,
    names: tuple[str, ...] | None = None,
    progress: Callable | None = None,
) -> Dataset:
    """Read any supported data set into records.

    Public data sets are recognised: TXL-PBC (its four sources from the image size), PBC as re-annotated in YOLO
    (its seven class names, and the WBCAtt attributes from a ``wbcatt/`` folder beside it, joined by file name).

    Args:
        path: a data set folder, or a COCO JSON / WBCAtt CSV file.
        format: one of :data:`READ_FORMATS`; sniffed when None.
        log: collects problems (strict or not); a fresh lenient log when None.
        names: class names for YOLO folders that do not name them.
        progress: wraps long iterables (e.g. ``tqdm``).
    """
    path = Path(path)
    log = log if log is not None else ProblemLog()
    format = format or sniff_format(path)
    if format not in READ_FORMATS:
        raise LeukolensError(f"unknown format {format!r}: use one of {', '.join(READ_FORMATS)}")
    if format in ("yolo", "lld"):
        from leukolens.io.yolo import read_yolo

        rule = None
        wbcatt = _wbcatt_csvs(path)
        if _is_txl_pbc(path):
            rule = txl_pbc_domain
        elif wbcatt:
            rule = lambda image, size: PBC_DOMAIN  # noqa: E731
            names = names or PBC_CLASSES.names
        dataset = read_yolo(path, log=log, names=names, lld=format == "lld", domain_rule=rule, progress=progress)
        if wbcatt:
            from leukolens.io.wbcatt import attach_wbcatt

            dataset.extras["wbcatt"] = attach_wbcatt(dataset, wbcatt, log=log)
        return dataset
    if format == "coco":
        from leukolens.io.coco import read_coco

        if path.is_dir():
            candidates = sorted(path.glob("*.json"))
            if len(candidates) != 1:
                raise LeukolensError(f"{path}: expected one COCO .json file, found {len(candidates)}; name the file")
            path = candidates[0]
        return read_coco(path, log=log)
    if format == "voc":
        from leukolens.io.voc import read_voc

        return read_voc(path, log=log)
    if format == "wbcatt":
        from leukolens.io.wbcatt import read_wbcatt

        return read_wbcatt(path, log=log)
    from leukolens.io.folders import read_folders

    return read_folders(path, log=log)


def write_dataset(dataset: Dataset, out: str | Path, *, format: str, images: str = "link") -> WriteReport:
    """Write records in ``format``; the report says what the format could not hold.

    Args:
        images: ``link`` (symlink the images into the output), ``copy`` or ``none`` (leave them where they are; for
            COCO, ``file_name`` then points at the originals).
    """
    out = Path(out)
    if format == "coco":
        from leukolens.io.coco import write_coco

        return write_coco(dataset, out, images=images if images != "link" else "none")
    if format == "lld":
        from leukolens.io.yolo import write_lld

        return write_lld(dataset, out, images=images)
    if format == "yolo":
        from leukolens.io.yolo import write_yolo

        return write_yolo(dataset, out, images=images)
    if format == "voc":
        from leukolens.io.voc import write_voc

        return write_voc(dataset, out, images=images)
    if format == "wbcatt":
        from leukolens.io.wbcatt import write_wbcatt

        return write_wbcatt(dataset, out)
    if format == "folders":
        from leukolens.io.folders import write_folders

        return write_folders(dataset, out, images=images)
    raise LeukolensError(f"unknown output format {format!r}: use one of {', '.join(WRITE_FORMATS)}")


def check_images(dataset: Dataset, *, log: ProblemLog, progress: Callable | None = None) -> int:
    """Decode every image of a data set; unreadable or truncated ones are logged. Returns how many are sound."""
    sound = 0
    for f in progress(dataset.fields) if progress else dataset.fields:
        wrong = check_image(f.image)
        if wrong:
            log.add(f.image, None, "bad-image", wrong)
        else:
            sound += 1
    return sound


__all__ = [
    "READ_FORMATS",
    "WRITE_FORMATS",
    "InputError",
    "LeukolensError",
    "ProblemLog",
    "WriteReport",
    "check_images",
    "read_dataset",
    "sniff_format",
    "write_dataset",
]
