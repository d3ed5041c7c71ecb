"""The image-text model, measured: class by sentences, attributes read out from text, retrieval both ways and
unseen combinations, on PBC/WBCAtt (test split) and on synthetic LLD-attribute cells (test patients), beside the
plain label classifier and the seed's fixed sentences; search latency over 10,000 cells; training time.

Trains every variant itself (minutes each: frozen towers, cached features) under out/clip-bench/.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from leukolens.data.captions import cached_features, captioned_cells, parse_combination
from leukolens.data.cells import cell_samples, load_crops
from leukolens.eval.cells import cell_metrics, run_model
from leukolens.eval.clip import score_embeddings
from leukolens.io import ProblemLog, read_dataset, write_dataset
from leukolens.models.checkpoint import load_checkpoint
from leukolens.models.clip import (
    ImageTower,
    SentenceEncoder,
    embed_images,
    embed_texts,
    load_clip,
    resolve_cell_model,
)
from leukolens.predict.weights import default_checkpoint
from leukolens.records import LLD_SCHEMA, WBCATT_CLASSES, WBCATT_SCHEMA
from leukolens.train.clip import TrainClipConfig, train_clip

REPO = Path(__file__).resolve().parents[1]
# Relative to the working directory, as `make weights-clip` passes it, so the crop and feature caches are shared.
SHARED = Path(os.path.relpath(REPO.parent / "shared" / "data"))
OUT = REPO / "out" / "clip-bench"
CACHE = REPO / ".cache" / "leukolens"
SYNTH = REPO / "out" / "clip-synth-cells"
PBC_HOLD_OUT = (
    "Eosinophil|cell_size=big|nucleus_shape=segmented-multilobed",
    "Neutrophil|cell_shape=irregular|nucleus_shape=unsegmented-band",
    "Monocyte|cell_shape=irregular|cytoplasm_colour=purple blue",
)
SYNTH_HOLD_OUT = (
    "Myeloblast|cell_size=large|nucleolus=prominent",
    "Monocyte|nuclear_chromatin=open|cytoplasmic_vacuoles=prominent",
    "Lymphoblast|cell_size=small|cytoplasm=scanty",
)
SEED_ACCURACY = "about 70% (seed work: fixed sentence per class, four leukemia types)"
WBCATT_PAPER = "WBCAtt paper: ResNet-50 94.09% mean attribute accuracy; AttriGen (Swin-S) 94.62%"
EPOCHS = 60
PATIENTS, CELLS_PER_PATIENT = 100, 12


def _log(text: str) -> None:
    print(text, flush=True)


def _same_run(previous: dict, config: TrainClipConfig) -> bool:
    """Whether a stored training config is this one (paths aside: `make weights-clip` uses relative ones)."""
    paths = ("data", "out", "cache_dir")
    mine = {k: v for k, v in asdict(config).items() if k not in paths}
    theirs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in previous.items() if k not in paths}
    return mine == theirs and Path(previous.get("data", "")).resolve() == Path(config.data).resolve()


def _train(name: str, data: Path, *, out: Path | None = None, **options) -> tuple[Path, dict]:
    """Train one variant (reused when a finished run with the same config and image tower is on disk)."""
    out = out or OUT / name
    config = TrainClipConfig(data=str(data), out=str(out), cache_dir=str(CACHE), epochs=EPOCHS, **options)
    best = out / "best.pt"
    if best.is_file() and (out / "last.pt").is_file():
        previous = load_clip(out / "last.pt")
        tower = ImageTower.for_kind(config.image_tower).config
        if (
            _same_run(previous.train.get("config", {}), config)
            and previous.config.image_tower == tower
            and len(previous.train.get("history", [])) >= EPOCHS
        ):
            _log(f"{name}: reusing {best}")
            return best, previous.train
    for stale in (out / "last.pt", best):
        stale.unlink(missing_ok=True)
    _log(f"{name}: training")
    train_clip(config, log=lambda line: _log(f"  {line}"))
    return best, load_clip(out / "last.pt").train


def _evaluate(path: Path, data, *, split: str, among=None, hold_out=()) -> dict:
    checkpoint = load_clip(path)
    model = checkpoint.build()
    schema = {"wbcatt": WBCATT_SCHEMA, "lld": LLD_SCHEMA}.get(checkpoint.config.schema)
    by_diagnosis = checkpoint.prototypes.get("key") == "diagnosis"
    known = set(checkpoint.prototypes["classes"]["names"])
    classes = tuple(c for c in data.classes.names if by_diagnosis or c in known)
    cells = captioned_cells(data, classes=classes, schema=schema, split=split, whole_image=True)
    tower = ImageTower(checkpoint.config.image_tower)
    features = cached_features(tower, cells, cache_dir=CACHE)
    images = embed_images(model, features)
    encoder = SentenceEncoder(CACHE) if checkpoint.config.text_tower == "minilm" else None
    report = score_embeddings(
        images,
        cells,
        checkpoint.prototypes,
        scale=float(model.logit_scale.detach().exp()),
        schema=schema,
        query_embed=lambda sentences: embed_texts(model, sentences, encoder),
        among=among,
        hold_out=[parse_combination(t) for t in hold_out],
    )
    report["images"] = images
    report["cells_record"] = cells
    report["scale"] = float(model.logit_scale.detach().exp())
    report["prototypes"] = checkpoint.prototypes
    return report


def _cell_model(pbc) -> dict:
    """Row (a): the cell model's own class head and attribute heads on the PBC test split."""
    checkpoint = load_checkpoint(default_checkpoint())
    model = checkpoint.build()
    classes = checkpoint.config.classes
    samples = cell_samples(
        pbc, classes=classes, attributes=checkpoint.config.attributes, split="test", whole_image=True
    )
    crops = load_crops(samples, size=checkpoint.crop.input_size, context=checkpoint.crop.context, cache_dir=CACHE)
    output = run_model(
        model, crops, input_size=checkpoint.crop.input_size, mean=checkpoint.mean, std=checkpoint.std, margin=1.0
    )
    metrics = cell_metrics(output, samples, classes=classes, attributes=checkpoint.config.attributes)
    labels = np.array([s.label for s in samples])
    five = [classes.index(c) for c in WBCATT_CLASSES.names]
    keep = np.isin(labels, five)
    guess = np.array(five)[output.class_logits[keep][:, five].argmax(1)]
    metrics["five_class_accuracy"] = float(np.mean(guess == labels[keep]))
    return metrics


def _recalls(r: dict, direction: str) -> str:
    return " / ".join(f"{r[direction][k]:.3f}" for k in (1, 5, 10))


def _row(name: str, tower: str, report: dict | None, *, five=None, seven=None, attributes=None) -> str:
    if report is None:
        return f"| {name} | {tower} | {five:.2%} | {seven:.2%} | {attributes:.2%} (heads) | n/a | n/a |"
    full = report["retrieval"]["full"]
    five = report["class_accuracy_among"]["accuracy"]
    return (
        f"| {name} | {tower} | {five:.2%} | {report['class_accuracy']:.2%} | {report['attributes']['mean']:.2%} | "
        f"{_recalls(full, 'image_to_text')} | {_recalls(full, 'text_to_image')} |"
    )


def _train_minutes(train: dict) -> str:
    history = train.get("history", [])
    timing = train.get("timing", {})
    return (
        f"{history[-1]['minutes'] if history else float('nan'):.2f} min for {len(history)} epochs of the projections "
        f"(+ {timing.get('features_minutes', float('nan')):.2f} min reading cached features, "
        f"{timing.get('sentences_minutes', float('nan')):.2f} min encoding {train.get('sentences', '?')} sentences "
        "with MiniLM when not cached)"
    )


def _tower_speed(data, count: int = 256) -> float:
    """Cells per second of the frozen cell-model tower on cached crops (what a cold feature cache costs)."""
    tower = ImageTower.for_kind("cellnet")
    cells = captioned_cells(data, classes=tuple(data.classes.names), schema=None, split="test", whole_image=True)
    cells = cells.subset(np.arange(len(cells)) < count)
    crops = load_crops(cells.samples, size=tower.config.input_size, context=tower.config.context, cache_dir=CACHE)
    tower.features(crops[:16])
    start = time.perf_counter()
    tower.features(crops)
    return len(crops) / (time.perf_counter() - start)


def search_latency(path: Path, pbc_images: np.ndarray, size: int = 10_000) -> dict:
    """Query time (MiniLM on the query text, projection, cosine top-10) over ``size`` indexed cells."""
    from leukolens.predict.describe import ImageTextPredictor
    from leukolens.predict.search import GalleryIndex

    rng = np.random.default_rng(0)
    rows = pbc_images[rng.integers(len(pbc_images), size=size)]
    rows = rows + rng.normal(0, 0.01, rows.shape).astype(np.float32)  # distinct rows, as real cells would be
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    index = GalleryIndex("bench", [f"cell-{i}" for i in range(size)], [(0.0, 0)] * size, rows)
    predictor = ImageTextPredictor(load_clip(path), path=path)
    queries = [
        "large cells with prominent nucleoli",
        "a small lymphocyte with dense chromatin",
        "cells with coarse purple granules",
        "a monocyte with vacuoles",
        "an eosinophil with a bilobed nucleus",
        "a band-shaped nucleus",
        "irregularly shaped cells with blue cytoplasm",
        "a neutrophil with a multilobed nucleus and pink granules",
        "frosted cytoplasm",
        "a round cell with a high N:C ratio",
    ] * 3
    predictor.embed_queries(["warm up"])
    times, search_only = [], []
    for i, query in enumerate(queries):
        predictor.encoder.cache.clear()  # every query goes through the sentence encoder
        start = time.perf_counter()
        vector = predictor.embed_queries([f"{query}{'.' * (i // 10)}"])[0]
        middle = time.perf_counter()
        index.search(vector, 10)
        end = time.perf_counter()
        times.append(end - start)
        search_only.append(end - middle)
    return {
        "cells": size,
        "median_ms": 1000 * float(np.median(times)),
        "p95_ms": 1000 * float(np.percentile(times, 95)),
        "topk_median_ms": 1000 * float(np.median(search_only)),
        "queries": len(queries),
    }


def index_speed(path: Path, count: int = 128) -> float:
    """Cells per second when indexing single-cell JPEG files (decode, crop, frozen tower, projection)."""
    from leukolens.predict.describe import ImageTextPredictor

    files = sorted((SHARED / "pbc" / "test" / "images").glob("*.jpg"))[:count]
    if not files:
        return float("nan")
    predictor = ImageTextPredictor(load_clip(path), path=path)
    predictor.embed_files(files[:8])
    start = time.perf_counter()
    predictor.embed_files(files)
    return len(files) / (time.perf_counter() - start)


# ------------------------------------------------------------------------------------------------------ synthetic
def synthetic_data():
    json_path = SYNTH / "cells.json"
    if not json_path.is_file():
        from leukolens.synth.cellset import synthetic_cell_set

        _log("rendering the synthetic cell set")
        dataset = synthetic_cell_set(SYNTH, patients=PATIENTS, cells_per_patient=CELLS_PER_PATIENT, seed=0, size=192)
        write_dataset(dataset, json_path, format="coco", images="none")
    return json_path, read_dataset(json_path, log=ProblemLog())


def linear_probe(train_x, train_y, test_x, *, classes: int, epochs: int = 300, seed: int = 0) -> np.ndarray:
    """Row (a) on synthetic cells: a multinomial logistic regression on the frozen features (no text)."""
    torch.manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = torch.from_numpy((train_x - mean) / std)
    y = torch.from_numpy(train_y)
    layer = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-2, weight_decay=1e-2)
    for _ in range(epochs):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(layer(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        return layer(torch.from_numpy((test_x - mean) / std)).argmax(1).numpy()


def _mix_diagnosis(train_cells, train_pred, test_cells, test_pred, names) -> dict:
    """Diagnosis of each test patient: the nearest training-patient centroid of predicted class mixes."""

    def mixes(cells, predicted):
        patients: dict = {}
        for sample, diagnosis, p in zip(cells.sample_ids, cells.diagnoses, predicted):
            patients.setdefault(sample, [diagnosis, np.zeros(len(names))])[1][p] += 1
        return {s: (d, m / m.sum()) for s, (d, m) in patients.items()}

    train, test = mixes(train_cells, train_pred), mixes(test_cells, test_pred)
    diagnoses = sorted({d for d, _ in train.values()})
    centroids = {d: np.mean([m for dd, m in train.values() if dd == d], axis=0) for d in diagnoses}
    guess = {s: min(diagnoses, key=lambda d: np.abs(m - centroids[d]).sum()) for s, (_, m) in test.items()}
    return {
        "accuracy": float(np.mean([guess[s] == d for s, (d, _) in test.items()])),
        "per_diagnosis": {
            d: f"{sum(guess[s] == dd == d for s, (dd, _) in test.items())}/{sum(dd == d for dd, _ in test.values())}"
            for d in diagnoses
        },
        "patients": len(test),
    }


def synthetic_section() -> list[str]:
    json_path, data = synthetic_data()
    composed, composed_train = _train("synth-composed", json_path, sentences="composed")
    diagnosis, _ = _train("synth-diagnosis", json_path, sentences="diagnosis")
    held, _ = _train("synth-holdout", json_path, sentences="composed", hold_out=SYNTH_HOLD_OUT)
    c = _evaluate(composed, data, split="test")
    b = _evaluate(diagnosis, data, split="test")
    h = _evaluate(held, data, split="test", hold_out=SYNTH_HOLD_OUT)

    # (a) linear probes on the same frozen features: class and each attribute
    tower = ImageTower.for_kind("cellnet")
    classes = tuple(data.classes.names)
    train_cells = captioned_cells(data, classes=classes, schema=LLD_SCHEMA, split="train", whole_image=True)
    test_cells = c["cells_record"]
    train_x = cached_features(tower, train_cells, cache_dir=CACHE)
    test_x = cached_features(tower, test_cells, cache_dir=CACHE)
    train_y = np.array([classes.index(dict(x)["class"]) for x in train_cells.contents])
    test_y = np.array([classes.index(dict(x)["class"]) for x in test_cells.contents])
    probe = linear_probe(train_x, train_y, test_x, classes=len(classes))
    probe_train = linear_probe(train_x, train_y, train_x, classes=len(classes))
    probe_attributes = {}
    for attribute in LLD_SCHEMA:
        tr, te = (
            np.array([attribute.values.index(dict(x)[attribute.name]) if attribute.name in dict(x) else -1
                      for x in cells.contents])
            for cells in (train_cells, test_cells)
        )
        guess = linear_probe(train_x[tr >= 0], tr[tr >= 0], test_x[te >= 0], classes=len(attribute.values))
        probe_attributes[attribute.name] = float(np.mean(guess == te[te >= 0]))
    probe_mean = float(np.mean(list(probe_attributes.values())))

    # diagnosis per patient from class mixes: (a) probe, (c) class by sentences
    from leukolens.eval.clip import classify

    composed_model = load_clip(composed)
    train_images = embed_images(composed_model.build(), train_x)
    sentence_train = classify(train_images, c["prototypes"])
    sentence_test = classify(c["images"], c["prototypes"])
    names = c["prototypes"]["classes"]["names"]
    to_class = {n: classes.index(n) for n in names}
    mix_a = _mix_diagnosis(train_cells, probe_train, test_cells, probe, classes)
    mix_c = _mix_diagnosis(
        train_cells,
        [to_class[names[i]] for i in sentence_train],
        test_cells,
        [to_class[names[i]] for i in sentence_test],
        classes,
    )
    cell_dx = b["per_class"]
    leukemia = ("ALL", "AML", "CLL", "CML", "normal")
    full_c = c["retrieval"]["full"]
    attr_c = c["retrieval"]["attributes"]
    lines = [
        "### Synthetic cells with LLD's seven attributes (14 classes incl. blasts, five diagnoses)",
        f"`leukolens.synth.cellset`: {PATIENTS} patients (a fifth per diagnosis: normal, ALL, AML, CLL, CML) x "
        f"{CELLS_PER_PATIENT} cells, one "
        f"192 px image per cell drawn from its attributes, split by patient (60/20/20): {len(train_cells):,} train "
        f"cells, {len(test_cells):,} test cells from {mix_a['patients']} test patients. Image tower: the frozen "
        "PBC cell model (it never saw LLD attributes or blasts), so here the projections learn the attributes "
        "from features alone.",
        "",
        "| model | 14-class accuracy | attribute accuracy (7, mean) | diagnosis per patient | "
        "i2t R@1/5/10 (full) | t2i R@1/5/10 (full) |",
        "|---|---|---|---|---|---|",
        f"| (a) linear probes on the same frozen features (no text) | {np.mean(probe == test_y):.2%} | "
        f"{probe_mean:.2%} | {mix_a['accuracy']:.0%} (class mix, nearest training centroid) | n/a | n/a |",
        f"| (b) seed's fixed sentences, one per diagnosis | n/a | {b['attributes']['mean']:.2%} (zero-shot) | "
        f"{b['patients']['accuracy']:.0%} (mean of cell scores) | "
        f"{_recalls(b['retrieval']['full'], 'image_to_text')} | {_recalls(b['retrieval']['full'], 'text_to_image')} |",
        f"| (c) attribute-composed sentences | {c['class_accuracy']:.2%} | {c['attributes']['mean']:.2%} | "
        f"{mix_c['accuracy']:.0%} (class mix by sentences, nearest training centroid) | "
        f"{_recalls(full_c, 'image_to_text')} | {_recalls(full_c, 'text_to_image')} |",
        f"| random ranking | | | 20% | {_recalls({'r': full_c['random_image_to_text']}, 'r')} | "
        f"{_recalls({'r': full_c['random_text_to_image']}, 'r')} |",
        "",
        f"Full descriptions: {full_c['queries']} distinct test descriptions (class + all applicable attributes) over "
        f"{full_c['images']} cells. Attribute-only descriptions ({attr_c['queries']} queries): i2t "
        f"{_recalls(attr_c, 'image_to_text')} (random {_recalls({'r': attr_c['random_image_to_text']}, 'r')}), t2i "
        f"{_recalls(attr_c, 'text_to_image')} (random {_recalls({'r': attr_c['random_text_to_image']}, 'r')}).",
        "",
        "The four leukemia types (and normal), per test patient: "
        + "; ".join(
            f"{d}: (a) {mix_a['per_diagnosis'].get(d, '-')}, (b) {b['patients']['per_diagnosis'].get(d, '-')}, "
            f"(c) {mix_c['per_diagnosis'].get(d, '-')}"
            for d in leukemia
        )
        + ". Per cell, the fixed sentences (b) name the slide's diagnosis with accuracy "
        + ", ".join(f"{d} {cell_dx.get(d, float('nan')):.0%}" for d in leukemia)
        + f" (all {b['class_accuracy']:.2%}): most cells of a leukemic slide are ordinary cells, which is why a "
        "sentence per diagnosis cannot describe a cell.",
        "",
        "Attribute read-out from text (c) against linear probes (a): "
        + ", ".join(
            f"{n} {c['attributes']['per_attribute'].get(n, float('nan')):.1%} / {probe_attributes[n]:.1%}"
            for n in probe_attributes
        )
        + ".",
        "",
        _unseen_lines(h, "synthetic"),
        "",
        f"Training (c): {_train_minutes(composed_train)}.",
    ]
    return lines


def _unseen_lines(report: dict, where: str) -> str:
    h = report["hold_out"]
    held, seen = h["described_held_out"], h["described_seen"]
    fh, fs = h["found_held_out"], h["found_seen"]

    def r10(found, key):
        return found.get(key, {}).get(10, float("nan"))

    return (
        f"Unseen combinations ({where}; a model trained without any cell having {'; '.join(h['combinations'])}): "
        f"on the {held['cells']} held-out test cells the combination's attributes are read out with "
        f"{held['combination_attribute_accuracy']:.1%} accuracy (the same attributes on the {seen['cells']} other "
        f"cells: {seen['combination_attribute_accuracy']:.1%}), all attributes {held['mean_attribute_accuracy']:.1%} "
        f"(others {seen['mean_attribute_accuracy']:.1%}), image-to-text R@10 on full descriptions "
        f"{held['image_to_text_full'].get(10, float('nan')):.3f} (others "
        f"{seen['image_to_text_full'].get(10, float('nan')):.3f}). Found: the {fh['queries']} held-out combinations as "
        f"queries reach text-to-image R@10 {r10(fh, 'text_to_image'):.3f} (random {r10(fh, 'random'):.3f}); "
        f"{fs['queries']} seen combinations of the same shape {r10(fs, 'text_to_image'):.3f} (random "
        f"{r10(fs, 'random'):.3f})."
    )


# ------------------------------------------------------------------------------------------------------ PBC
def run() -> str:
    pbc_path = SHARED / "pbc"
    pbc = read_dataset(pbc_path, log=ProblemLog())
    five = WBCATT_CLASSES.names
    shipped = ImageTower.for_kind("cellnet").config
    cell = _cell_model(pbc)
    # The shipped model's run (`make weights-clip` writes out/clip-pbc): reused when it matches, else trained.
    composed, composed_train = _train("pbc-composed", pbc_path, out=REPO / "out" / "clip-pbc", sentences="composed")
    fixed, _ = _train("pbc-fixed", pbc_path, sentences="fixed")
    imagenet, _ = _train("pbc-composed-imagenet", pbc_path, sentences="composed", image_tower="imagenet")
    small, _ = _train("pbc-composed-transformer", pbc_path, sentences="composed", text_tower="transformer")
    held, _ = _train("pbc-holdout", pbc_path, sentences="composed", hold_out=PBC_HOLD_OUT)
    c = _evaluate(composed, pbc, split="test", among=five)
    b = _evaluate(fixed, pbc, split="test", among=five)
    ci = _evaluate(imagenet, pbc, split="test", among=five)
    cs = _evaluate(small, pbc, split="test", among=five)
    h = _evaluate(held, pbc, split="test", among=five, hold_out=PBC_HOLD_OUT)
    latency = search_latency(composed, np.concatenate([c["images"]]))
    indexing = index_speed(composed)
    tower_speed = _tower_speed(pbc)
    size_mb = composed.stat().st_size / 1e6
    fitted = sum(1 for f in pbc.fields if f.split in ("train", "val") for _ in f.cells)
    cold_minutes = fitted / tower_speed / 60
    timing = composed_train.get("timing", {})
    total_minutes = composed_train["history"][-1]["minutes"] + cold_minutes + timing.get("sentences_minutes", 0)
    full = c["retrieval"]["full"]
    attributes = c["retrieval"]["attributes"]
    heads = cell["attributes"]
    gap = 100 * (cell["mean_attribute_accuracy"] - c["attributes"]["mean"])
    lines = [
        "## Image-text model: cells and sentences composed from their morphology",
        "Frozen image tower (the shipped cell model's pooled embedding and its 11 attribute heads' pooled features, "
        f"{c['images'].shape[1]}-d after projection; cell model `{Path(resolve_cell_model(shipped.cell_model)).name}` "
        f"network SHA-256 {(shipped.cell_network_sha256 or shipped.cell_model_sha256)[:12]}), "
        "frozen text tower (all-MiniLM-L6-v2 from its wheel), trained "
        "projections and temperature, multi-positive symmetric InfoNCE; trained with `leukolens train clip --data "
        f"../shared/data/pbc --epochs {EPOCHS}` (variants: `--sentences fixed`, `--image-tower imagenet`, "
        "`--text-tower transformer`, `--hold-out ...`). Note: the cell model's backbone was trained on these training "
        "images with their WBCAtt attribute labels, so rows with the cell-model tower measure how well text aligns "
        "with features that already separate the attributes; the ImageNet-tower row never saw an attribute label. "
        "Definitions in docs/clip.md.",
        "",
        "### PBC/WBCAtt test split",
        "| model | image tower | class accuracy, 5 WBCAtt classes | 7 PBC classes | attribute accuracy (11, mean) "
        "| i2t R@1/5/10 (full) | t2i R@1/5/10 (full) |",
        "|---|---|---|---|---|---|---|",
        _row("(a) label classifier (class and attribute heads)", "cell model", None,
             five=cell["five_class_accuracy"], seven=cell["class"]["accuracy"],
             attributes=cell["mean_attribute_accuracy"]),
        _row("(b) fixed sentence per class", "cell model (frozen)", b),
        _row("(c) attribute-composed sentences", "cell model (frozen)", c),
        _row("(c) attribute-composed sentences", "ImageNet EfficientNet-Lite0 (frozen)", ci),
        _row("(c) composed, small text transformer instead of MiniLM", "cell model (frozen)", cs),
        f"| random ranking | | 20% | 14% | | {_recalls({'r': full['random_image_to_text']}, 'r')} | "
        f"{_recalls({'r': full['random_text_to_image']}, 'r')} |",
        "",
        f"Recall is multi-positive over {full['queries']} distinct test descriptions (class + all 11 attributes, "
        f"canonical wording) and {full['images']} test cells: image to text is a hit when any of the top k "
        "descriptions is true of the cell, text to image when any of the top k cells is one the description is true "
        "of; the random baseline is the expected recall of a random ranking with the same positives. "
        f"Attribute-only descriptions ({attributes['queries']} queries): (c) i2t "
        f"{_recalls(attributes, 'image_to_text')}, t2i {_recalls(attributes, 'text_to_image')} (random "
        f"{_recalls({'r': attributes['random_text_to_image']}, 'r')})."
        f" The seed work reports {SEED_ACCURACY}; {WBCATT_PAPER}.",
        "",
        "Attribute read-out from text (c) / cell model's heads (a): "
        + ", ".join(
            f"{n} {c['attributes']['per_attribute'][n]:.1%} / {heads[n]['accuracy']:.1%}" for n in heads
        )
        + f". Gap of the mean: {gap:+.2f} points (heads minus text).",
        "",
        _unseen_lines(h, "PBC"),
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| class by composed sentences, 5 WBCAtt classes, at least 98.5% | "
        f"{c['class_accuracy_among']['accuracy']:.2%} | "
        f"{'yes' if c['class_accuracy_among']['accuracy'] >= 0.985 else 'no'} |",
        f"| attribute read-out within 3 points of the heads | {gap:+.2f} points | {'yes' if gap <= 3 else 'no'} |",
        f"| t2i R@10 for composed queries at least 0.9 (random {full['random_text_to_image'][10]:.3f}) | "
        f"{full['text_to_image'][10]:.3f} | {'yes' if full['text_to_image'][10] >= 0.9 else 'no'} |",
        f"| training within 30 minutes | {_train_minutes(composed_train)}; a cold feature cache adds the frozen tower "
        f"over {fitted:,} train+val cells at {tower_speed:.0f} cells/s ({cold_minutes:.1f} min): about "
        f"{total_minutes:.1f} min in all | {'yes' if total_minutes < 30 else 'no'} |",
        f"| search over {latency['cells']:,} indexed cells under 100 ms | median {latency['median_ms']:.1f} ms, p95 "
        f"{latency['p95_ms']:.1f} ms ({latency['queries']} uncached queries: MiniLM + projection + top-10; the top-10 "
        f"alone {latency['topk_median_ms']:.2f} ms) | {'yes' if latency['p95_ms'] < 100 else 'no'} |",
        f"| shipped weights under 20 MB beyond the backbone | {size_mb:.1f} MB | {'yes' if size_mb < 20 else 'no'} |",
        "",
        f"Indexing a gallery from JPEG files: {indexing:.0f} cells/s (decode, crop, frozen tower, projection).",
        "",
    ]
    _log("\n".join(lines))  # the PBC part, in the log before the synthetic part starts
    return "\n".join(lines + synthetic_section())
