"""Using and scoring the image-text model: class by sentences, attributes read out from text, retrieval both ways.

Definitions (also in docs/clip.md):

- **Class by sentences**: each class has a text prototype, the mean embedding of its class-only sentences ("A
  neutrophil.", "This is a neutrophilic granulocyte.", ...; the one fixed sentence in the fixed mode); a cell gets
  the class whose prototype is most similar.
- **Attribute read-out**: each value of each attribute has a prototype, the mean embedding of sentences stating
  only that value ("A cell with prominent nucleoli."); per attribute, the most similar value wins, and a softmax of
  the similarities times the learned scale gives its score.
- **Recall@k, multi-positive**: queries are the distinct canonical descriptions of the evaluated cells. Image to
  text: for each cell, rank all those descriptions; a hit when any of the top k is true of the cell (states nothing
  the cell's labels contradict). Text to image: for each description, rank all cells; a hit when any of the top k
  cells is one it is true of. The random baseline is the expected recall@k of a random ranking with the same
  number of positives per query: ``1 - C(n - m, k) / C(n, k)``, averaged over queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from math import lgamma

import numpy as np
import torch

from leukolens.data.captions import DIAGNOSIS_KEY, ContentCodes, positive_matrix, sentence_of
from leukolens.eval.metrics import recall_at_k
from leukolens.models.clip import ClipModel, SentenceEncoder, embed_texts
from leukolens.records import AttributeSchema
from leukolens.text.sentences import CLASS_KEY, Content, class_sentence, compose, variants

KS = (1, 5, 10)


# ------------------------------------------------------------------------------------------------------ prototypes
def prototype_sentences(
    *, schema: AttributeSchema | None, classes: Sequence[str], mode: str, per_value: int = 6
) -> dict:
    """The sentences behind each prototype: {"classes": {name: [...]}, "attributes": {name: {value: [...]}}}."""
    if mode == "fixed":
        class_texts = {c: [class_sentence(c)] for c in classes}
    elif mode == "diagnosis":
        class_texts = {c: [sentence_of(((DIAGNOSIS_KEY, c),), schema=schema)] for c in classes}
    else:
        class_texts = {c: variants(((CLASS_KEY, c),), schema=schema, count=per_value) for c in classes}
    attributes = {}
    for attribute in schema or ():
        attributes[attribute.name] = {
            v: variants(((attribute.name, v),), schema=schema, count=per_value) for v in attribute.values
        }
    return {"classes": class_texts, "attributes": attributes}


def build_prototypes(
    model: ClipModel, encoder: SentenceEncoder | None, *, schema: AttributeSchema | None, classes: Sequence[str],
    mode: str,
) -> dict:
    """Projected, unit-length prototype embeddings, as stored in a checkpoint."""
    texts = prototype_sentences(schema=schema, classes=classes, mode=mode)

    def mean_embedding(sentences: list[str]) -> np.ndarray:
        vector = embed_texts(model, sentences, encoder).mean(0)
        return vector / max(np.linalg.norm(vector), 1e-12)

    prototypes = {
        "key": DIAGNOSIS_KEY if mode == "diagnosis" else CLASS_KEY,
        "mode": mode,
        "classes": {
            "names": list(classes),
            "embeddings": torch.from_numpy(np.stack([mean_embedding(texts["classes"][c]) for c in classes])),
        },
        "attributes": {},
    }
    for name, values in texts["attributes"].items():
        prototypes["attributes"][name] = {
            "values": list(values),
            "embeddings": torch.from_numpy(np.stack([mean_embedding(s) for s in values.values()])),
        }
    return prototypes


def _matrix(entry: dict) -> np.ndarray:
    return np.asarray(entry["embeddings"], dtype=np.float32)


def classify(images: np.ndarray, prototypes: dict, *, among: Sequence[str] | None = None) -> np.ndarray:
    """Index into ``among`` (default: all prototype classes) of the best-matching class of each image."""
    names = prototypes["classes"]["names"]
    among = list(among) if among is not None else list(names)
    matrix = _matrix(prototypes["classes"])[[names.index(c) for c in among]]
    return (images @ matrix.T).argmax(1)


def class_probabilities(images: np.ndarray, prototypes: dict, scale: float) -> np.ndarray:
    """Class probabilities ``[images, classes]``: a softmax of the similarities to the class prototypes times
    ``scale``."""
    logits = scale * images @ _matrix(prototypes["classes"]).T
    logits -= logits.max(1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def read_attributes(images: np.ndarray, prototypes: dict, scale: float) -> dict[str, np.ndarray]:
    """Per attribute, value probabilities ``[images, values]`` from the similarity to each value's prototype."""
    out = {}
    for name, entry in prototypes["attributes"].items():
        logits = scale * images @ _matrix(entry).T
        logits -= logits.max(1, keepdims=True)
        weights = np.exp(logits)
        out[name] = weights / weights.sum(1, keepdims=True)
    return out


def attribute_accuracy(contents: list[Content], probabilities: dict[str, np.ndarray], prototypes: dict) -> dict:
    """Accuracy per attribute over the cells where it is labelled, and their mean."""
    result = {}
    for name, probs in probabilities.items():
        values = prototypes["attributes"][name]["values"]
        truth = [dict(c).get(name) for c in contents]
        known = np.array([t in values for t in truth])
        if not known.any():
            continue
        target = np.array([values.index(t) for t, k in zip(truth, known) if k])
        result[name] = float(np.mean(probs[known].argmax(1) == target))
    mean = float(np.mean(list(result.values()))) if result else float("nan")
    return {"per_attribute": result, "mean": mean}


# ------------------------------------------------------------------------------------------------------ retrieval
def random_recall(relevant: np.ndarray, ks: Sequence[int] = KS) -> dict[int, float]:
    """Expected recall@k of a uniformly random ranking, over queries with at least one relevant item."""
    relevant = np.asarray(relevant, dtype=bool)
    n = relevant.shape[1]
    m = relevant.sum(1)
    m = m[m > 0]
    if len(m) == 0:
        return {k: float("nan") for k in ks}
    out = {}
    for k in ks:
        k_ = min(k, n)

        def log_choose(a, b):
            return lgamma(a + 1) - lgamma(b + 1) - lgamma(a - b + 1)

        miss = [np.exp(log_choose(n - mi, k_) - log_choose(n, k_)) if n - mi >= k_ else 0.0 for mi in m]
        out[k] = float(np.mean(1 - np.array(miss)))
    return out


@dataclass
class Retrieval:
    queries: int
    images: int
    image_to_text: dict[int, float]
    text_to_image: dict[int, float]
    random_image_to_text: dict[int, float]
    random_text_to_image: dict[int, float]
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "queries": self.queries,
            "images": self.images,
            "image_to_text": self.image_to_text,
            "text_to_image": self.text_to_image,
            "random_image_to_text": self.random_image_to_text,
            "random_text_to_image": self.random_text_to_image,
        }


def retrieval(
    images: np.ndarray, cell_contents: list[Content], query_contents: list[Content], queries: np.ndarray
) -> Retrieval:
    """Multi-positive recall@1/5/10 both ways between cells and the query sentences (see the module docstring)."""
    codes = ContentCodes(cell_contents + query_contents)
    relevant = positive_matrix(codes.encode(cell_contents), codes.encode(query_contents))  # [cells, queries]
    similarity = images @ queries.T
    return Retrieval(
        queries=len(query_contents),
        images=len(cell_contents),
        image_to_text=recall_at_k(similarity, relevant, KS),
        text_to_image=recall_at_k(similarity.T, relevant.T, KS),
        random_image_to_text=random_recall(relevant, KS),
        random_text_to_image=random_recall(relevant.T, KS),
    )


def query_set(contents: list[Content], *, with_class: bool = True) -> list[Content]:
    """The distinct descriptions of these cells (all attributes; with or without the class), in first-seen order."""
    seen: dict[Content, None] = {}
    for content in contents:
        kept = tuple(s for s in content if with_class or s[0] != CLASS_KEY)
        if kept:
            seen.setdefault(kept, None)
    return list(seen)


def canonical_sentences(contents: list[Content], schema: AttributeSchema) -> list[str]:
    return [compose(c, schema=schema) for c in contents]


# ------------------------------------------------------------------------------------------------------ protocol
def score_embeddings(
    images: np.ndarray,
    cells,
    prototypes: dict,
    *,
    scale: float,
    schema: AttributeSchema | None,
    query_embed,
    among: Sequence[str] | None = None,
    hold_out: Sequence[Content] = (),
) -> dict:
    """Every number of the protocol for one model on one split.

    Args:
        images: unit-length image embeddings of ``cells`` (a :class:`~leukolens.data.captions.CaptionedCells`).
        query_embed: sentences -> unit-length text embeddings (for the retrieval queries).
        among: also score class accuracy restricted to these classes, on the cells of these classes.
        hold_out: combinations kept out of training: scored apart from the rest.
    """
    from leukolens.data.captions import matches_any

    names = prototypes["classes"]["names"]
    by_diagnosis = prototypes.get("key") == DIAGNOSIS_KEY
    truth = list(cells.diagnoses) if by_diagnosis else [dict(c)[CLASS_KEY] for c in cells.contents]
    predicted = [names[i] for i in classify(images, prototypes)]
    report: dict = {
        "cells": len(truth),
        "class_accuracy": float(np.mean([p == t for p, t in zip(predicted, truth)])),
        "per_class": {c: float(np.mean([p == c for p, t in zip(predicted, truth) if t == c]))
                      for c in names if c in truth},
    }
    if by_diagnosis and any(cells.sample_ids):
        report["patients"] = patient_diagnosis(images, cells, prototypes, scale=scale)
    if among:
        keep = np.array([t in among for t in truth])
        if keep.any():
            guess = classify(images[keep], prototypes, among=among)
            report["class_accuracy_among"] = {
                "classes": list(among),
                "cells": int(keep.sum()),
                "accuracy": float(np.mean([list(among)[g] == t for g, t in zip(guess, np.array(truth)[keep])])),
            }
    if schema is None or not prototypes.get("attributes"):
        return report
    probabilities = read_attributes(images, prototypes, scale)
    report["attributes"] = attribute_accuracy(cells.contents, probabilities, prototypes)
    described = np.array([len(c) > 1 for c in cells.contents])  # cells with attribute labels
    if not described.any():
        return report
    subset = [c for c, d in zip(cells.contents, described) if d]
    image_subset = images[described]
    report["retrieval"] = {}
    for name, with_class in (("full", True), ("attributes", False)):
        queries = query_set(subset, with_class=with_class)
        result = retrieval(image_subset, subset, queries, query_embed(canonical_sentences(queries, schema)))
        report["retrieval"][name] = result.as_dict()
    if hold_out:
        report["hold_out"] = unseen_combinations(
            image_subset, subset, probabilities={k: v[described] for k, v in probabilities.items()},
            prototypes=prototypes, schema=schema, combinations=list(hold_out), query_embed=query_embed,
            matches=matches_any,
        )
    return report


def unseen_combinations(
    images, contents, *, probabilities, prototypes, schema, combinations, query_embed, matches
) -> dict:
    """Held-out combinations against seen ones of the same shape: described (read-out of the combination's
    attributes, image-to-text recall on full descriptions) and found (text-to-image recall@10 of the combination
    stated as a query)."""
    held = matches(contents, combinations)
    full_queries = query_set(contents, with_class=True)
    full = query_embed(canonical_sentences(full_queries, schema))
    codes = ContentCodes(contents + full_queries)
    relevant = positive_matrix(codes.encode(contents), codes.encode(full_queries))
    similarity = images @ full.T

    def described(mask: np.ndarray) -> dict:
        keys = sorted({k for c in combinations for k, _ in c if k != CLASS_KEY})
        hits = []
        for name in keys:
            values = prototypes["attributes"][name]["values"]
            truth = [dict(c).get(name) for c in np.array(contents, dtype=object)[mask]]
            guess = probabilities[name][mask].argmax(1)
            hits += [values[g] == t for g, t in zip(guess, truth) if t in values]
        all_attributes = attribute_accuracy([c for c, m in zip(contents, mask) if m],
                                            {k: v[mask] for k, v in probabilities.items()}, prototypes)
        i2t = recall_at_k(similarity[mask], relevant[mask], KS) if mask.any() else {}
        return {
            "cells": int(mask.sum()),
            "combination_attribute_accuracy": float(np.mean(hits)) if hits else float("nan"),
            "mean_attribute_accuracy": all_attributes["mean"],
            "image_to_text_full": i2t,
        }

    def found(queries: list[Content]) -> dict:
        if not queries:
            return {"queries": 0}
        embedded = query_embed(canonical_sentences(queries, schema))
        query_codes = ContentCodes(contents + queries)
        rel = positive_matrix(query_codes.encode(contents), query_codes.encode(queries)).T  # [queries, cells]
        return {
            "queries": len(queries),
            "text_to_image": recall_at_k(embedded @ images.T, rel, KS),
            "random": random_recall(rel, KS),
        }

    shapes = {tuple(k for k, _ in c) for c in combinations}
    seen_queries = []
    for content in contents:
        facts = dict(content)
        for shape in shapes:
            if all(k in facts for k in shape):
                candidate = tuple((k, facts[k]) for k in shape)
                if candidate not in combinations and candidate not in seen_queries:
                    seen_queries.append(candidate)
    return {
        "combinations": [" | ".join(f"{k}={v}" for k, v in c) for c in combinations],
        "described_held_out": described(held),
        "described_seen": described(~held),
        "found_held_out": found([c for c in combinations if matches(contents, [c]).any()]),
        "found_seen": found(seen_queries),
    }


def patient_diagnosis(images: np.ndarray, cells, prototypes: dict, *, scale: float) -> dict:
    """Diagnosis of each patient: the class of the mean of its cells' probabilities."""
    names = prototypes["classes"]["names"]
    probabilities = class_probabilities(images, prototypes, scale)
    patients: dict[str, list[int]] = {}
    for i, sample in enumerate(cells.sample_ids):
        patients.setdefault(sample, []).append(i)
    truth, guess = {}, {}
    for sample, rows in patients.items():
        truth[sample] = cells.diagnoses[rows[0]]
        guess[sample] = names[int(probabilities[rows].mean(0).argmax())]
    return {
        "patients": len(patients),
        "accuracy": float(np.mean([truth[s] == guess[s] for s in patients])),
        "per_diagnosis": {
            d: f"{sum(truth[s] == guess[s] == d for s in patients)}/{sum(truth[s] == d for s in patients)}"
            for d in sorted(set(truth.values()))
        },
    }


def evaluate_clip(
    checkpoint_path,
    data,
    *,
    split: str = "test",
    among: Sequence[str] | None = None,
    hold_out: Sequence[str] = (),
    cache_dir=None,
) -> dict:
    """The protocol on one checkpoint and one data set split (``all`` for every split)."""
    from pathlib import Path

    from leukolens.data.captions import cached_features, captioned_cells, parse_combination
    from leukolens.data.cells import single_cell_images
    from leukolens.io import ProblemLog, read_dataset
    from leukolens.models.clip import ImageTower, embed_images, load_clip
    from leukolens.records import SCHEMAS

    checkpoint = load_clip(checkpoint_path)
    model = checkpoint.build()
    dataset = read_dataset(data, log=ProblemLog())
    schema = SCHEMAS.get(checkpoint.config.schema) if checkpoint.config.schema else None
    known = set(checkpoint.prototypes["classes"]["names"])
    by_diagnosis = checkpoint.prototypes.get("key") == DIAGNOSIS_KEY
    classes = tuple(c for c in dataset.classes.names if by_diagnosis or c in known)
    cells = captioned_cells(
        dataset, classes=classes, schema=schema, split=None if split == "all" else split,
        whole_image=single_cell_images(dataset),
    )
    tower = ImageTower(checkpoint.config.image_tower)
    features = cached_features(tower, cells, cache_dir=Path(cache_dir) if cache_dir else None)
    images = embed_images(model, features)
    encoder = None
    if checkpoint.config.text_tower == "minilm":
        encoder = SentenceEncoder(Path(cache_dir) if cache_dir else None)
    report = score_embeddings(
        images, cells, checkpoint.prototypes, scale=float(model.logit_scale.detach().exp()), schema=schema,
        query_embed=lambda sentences: embed_texts(model, sentences, encoder), among=among,
        hold_out=[parse_combination(t) for t in hold_out],
    )
    report["checkpoint"] = str(checkpoint_path)
    report["split"] = split
    return report


def format_report(report: dict) -> str:
    """The numbers of :func:`evaluate_clip` as readable lines."""
    lines = [f"{report.get('checkpoint', '')} [{report.get('split', '')}]: {report['cells']:,} cells"]
    lines.append(f"class accuracy by sentences: {report['class_accuracy']:.4f}")
    among = report.get("class_accuracy_among")
    if among:
        lines.append(f"  among {', '.join(among['classes'])}: {among['accuracy']:.4f} ({among['cells']} cells)")
    if "patients" in report:
        p = report["patients"]
        lines.append(f"diagnosis per patient: {p['accuracy']:.4f} of {p['patients']} ({p['per_diagnosis']})")
    if "attributes" in report:
        lines.append(f"attribute read-out from text: mean {report['attributes']['mean']:.4f}")
        for name, value in report["attributes"]["per_attribute"].items():
            lines.append(f"  {name:<28}{value:.4f}")
    for name, r in report.get("retrieval", {}).items():
        lines.append(f"retrieval, {name} descriptions ({r['queries']} queries, {r['images']} cells):")
        for direction in ("image_to_text", "text_to_image"):
            ours = " ".join(f"R@{k} {v:.3f}" for k, v in r[direction].items())
            chance = " ".join(f"R@{k} {v:.3f}" for k, v in r[f"random_{direction}"].items())
            lines.append(f"  {direction.replace('_', ' ')}: {ours}   (random: {chance})")
    if "hold_out" in report:
        h = report["hold_out"]
        lines.append(f"unseen combinations: {'; '.join(h['combinations'])}")
        for which in ("held_out", "seen"):
            d = h[f"described_{which}"]
            f = h[f"found_{which}"]
            recall = f.get("text_to_image", {}).get(10, float("nan"))
            chance = f.get("random", {}).get(10, float("nan"))
            lines.append(
                f"  {which}: {d['cells']} cells, their combination's attributes read out "
                f"{d['combination_attribute_accuracy']:.4f}, "
                f"all attributes {d['mean_attribute_accuracy']:.4f}; {f['queries']} queries found at R@10 {recall:.3f} "
                f"(random {chance:.3f})"
            )
    return "\n".join(lines)
