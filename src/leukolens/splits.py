"""Train/val/test splits: by patient or sample where known, else stratified by class; always from a fixed seed."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

from leukolens.io.common import LeukolensError
from leukolens.records import SPLITS, Dataset, Field

DEFAULT_RATIOS = (0.7, 0.15, 0.15)


def _allocate(n: int, ratios: tuple[float, ...]) -> list[int]:
    """Whole counts per split that add up to ``n`` (largest remainders), for one stratum or group list."""
    raw = [n * r for r in ratios]
    counts = [int(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _stratum(field: Field, frequency: Counter) -> str:
    """A field's stratum: its rarest class, so that rare classes reach every split."""
    labels = {c.label for c in field.cells}
    return min(labels, key=lambda label: (frequency[label], label)) if labels else ""


def assign_splits(
    dataset: Dataset, *, ratios: tuple[float, ...] = DEFAULT_RATIOS, seed: int = 0, by: str = "auto"
) -> dict[str, str]:
    """Choose a split for every field; returns image file name -> split.

    Args:
        ratios: shares of train, val, test; they must add up to 1.
        seed: the same seed gives the same split.
        by: ``sample`` keeps each patient/sample on one side (needs ``domain.sample_id`` on every field),
            ``class`` stratifies fields by their rarest class, ``auto`` uses samples when every field has one.
    """
    if len(ratios) != len(SPLITS) or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise LeukolensError(f"ratios must be three non-negative shares adding up to 1, got {ratios}")
    if by not in ("auto", "sample", "class"):
        raise LeukolensError(f"unknown split strategy {by!r}: use auto, sample or class")
    has_samples = all(f.domain.sample_id for f in dataset.fields)
    if by == "sample" and not has_samples:
        raise LeukolensError("splitting by sample needs a sample id on every field (domain.sample_id)")
    rng = random.Random(seed)
    groups: dict[str, list[Field]] = defaultdict(list)
    if by == "sample" or (by == "auto" and has_samples):
        for f in dataset.fields:
            groups[f.domain.sample_id].append(f)
        strata = {"": sorted(groups)}
    else:
        frequency = dataset.class_counts()
        for f in dataset.fields:
            groups[f.image.name].append(f)
        strata = defaultdict(list)
        for key, fields in groups.items():
            strata[_stratum(fields[0], frequency)].append(key)
    assignment: dict[str, str] = {}
    for stratum in sorted(strata):
        keys = sorted(strata[stratum])
        rng.shuffle(keys)
        start = 0
        for split, count in zip(SPLITS, _allocate(len(keys), ratios)):
            for key in keys[start : start + count]:
                for f in groups[key]:
                    assignment[f.image.name] = split
            start += count
    return assignment


def apply_splits(dataset: Dataset, assignment: dict[str, str]) -> None:
    """Set each field's split from :func:`assign_splits`' answer."""
    for f in dataset.fields:
        f.split = assignment[f.image.name]
