"""Descriptions of cells in words, composed from their class and morphological attributes.

A sentence is made from a :data:`Content`: the statements it makes, each a (key, value) pair where the key is
``"class"`` or an attribute name of the schema (WBCAtt's 11 or LLD's 7). :func:`compose` turns a content into a
fluent, clinically worded sentence::

    >>> compose(content_of("Myeloblast", {"cell_size": "large", "nucleolus": "prominent", "cytoplasm": "scanty",
    ...     "nuclear_chromatin": "open", "cytoplasmic_basophilia": "moderate", "cytoplasmic_vacuoles": "absent"},
    ...     schema=LLD_SCHEMA, with_class=False), schema=LLD_SCHEMA)
    'A large cell with fine open chromatin and prominent nucleoli; the scanty cytoplasm is moderately basophilic,
    without vacuoles.'

Every attribute value has several phrasings and there are several sentence frames; a random generator picks
among them for training, none picks the canonical wording. "Not applicable" and "unknown" values are left out,
never invented. :func:`partial_contents` draws sentences that state only some of a cell's attributes: such a
sentence is true of every cell that agrees on what it states (:func:`consistent`), which is what makes a batch of
cells and sentences multi-positive.

The baseline of the seed work is kept as fixed sentences: one per leukemia type (:data:`SEED_SENTENCES`, verbatim)
and one per normal WBC type (:data:`CLASS_SENTENCES`).
"""

from __future__ import annotations

import random

from leukolens.records import SPECIAL_VALUES, AttributeSchema

CLASS_KEY = "class"
Content = tuple[tuple[str, str], ...]
"""What a sentence states: (key, value) pairs, the class first, then attributes in schema order."""

SEED_SENTENCES = {
    "AML": "Large immature blood cells with abnormal structure.",
    "CML": "High number of abnormal white blood cells in blood cells.",
    "ALL": "Fast-growing immature lymphocyte cells in the blood.",
    "CLL": "Small abnormal lymphocyte cells with slow progression.",
}
"""The seed work's one fixed sentence per leukemia type, verbatim."""

DIAGNOSIS_SENTENCES = {**SEED_SENTENCES, "normal": "Normal mature white blood cells in the blood."}
"""The seed's sentences plus one of ours, in the same style, for slides without leukemia."""

CLASS_SENTENCES = {
    "Basophil": "Granulocytes with dark purple granules that cover the nucleus.",
    "Eosinophil": "Granulocytes with a bilobed nucleus and orange-red granules.",
    "Lymphocyte": "Small round cells with a dense nucleus and a thin rim of blue cytoplasm.",
    "Monocyte": "Large cells with a folded nucleus and grey-blue cytoplasm.",
    "Neutrophil": "Granulocytes with a segmented nucleus and pale pink cytoplasm.",
    "Erythroblast": "Nucleated red blood cell precursors with a round dense nucleus.",
    "Immature granulocyte": "Immature granulocyte precursors released into the blood.",
}
"""One fixed sentence per PBC class, in the seed's style: the baseline where a class, not a cell, has a sentence."""

CLASS_NOUNS = {
    "Basophil": ("basophil", "basophilic granulocyte"),
    "Eosinophil": ("eosinophil", "eosinophilic granulocyte"),
    "Erythroblast": ("erythroblast", "nucleated red cell"),
    "Immature granulocyte": ("immature granulocyte", "granulocyte precursor"),
    "Lymphocyte": ("lymphocyte", "mature lymphocyte"),
    "Monocyte": ("monocyte", "mature monocyte"),
    "Neutrophil": ("neutrophil", "neutrophilic granulocyte"),
    "None": ("smudge cell", "crushed smudge cell"),
    "Myeloblast": ("myeloblast", "myeloid blast"),
    "Lymphoblast": ("lymphoblast", "lymphoid blast"),
    "Atypical lymphocyte": ("atypical lymphocyte", "reactive lymphocyte"),
    "Promonocyte": ("promonocyte",),
    "Monoblast": ("monoblast", "monocytic blast"),
    "Myelocyte": ("myelocyte",),
    "Abnormal promyelocyte": ("abnormal promyelocyte", "atypical promyelocyte"),
    "Metamyelocyte": ("metamyelocyte",),
}
CELL_NOUNS = ("cell", "white cell", "leukocyte")

# Where an attribute goes in a sentence.
ADJECTIVE, WITH, AMOUNT = "adjective", "with", "amount"
CYTOPLASM, VACUOLES, GRANULES = "cytoplasm", "vacuoles", "granules"
ROLES = {
    "cell_size": ADJECTIVE,
    "cell_shape": ADJECTIVE,
    "nucleus_shape": WITH,
    "nuclear_shape": WITH,
    "nuclear_cytoplasmic_ratio": WITH,
    "chromatin_density": WITH,
    "nuclear_chromatin": WITH,
    "nucleolus": WITH,
    "cytoplasm": AMOUNT,
    "cytoplasm_texture": CYTOPLASM,
    "cytoplasm_colour": CYTOPLASM,
    "cytoplasmic_basophilia": CYTOPLASM,
    "cytoplasm_vacuole": VACUOLES,
    "cytoplasmic_vacuoles": VACUOLES,
    "granule_type": GRANULES,
    "granule_colour": GRANULES,
    "granularity": GRANULES,
}

PHRASES: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "wbcatt": {
        "cell_size": {"small": ("small", "small-sized"), "big": ("large", "big")},
        "cell_shape": {"round": ("round", "rounded"), "irregular": ("irregularly shaped", "irregular")},
        "nucleus_shape": {
            "unsegmented-round": ("a round, unsegmented nucleus", "a round nucleus"),
            "unsegmented-indented": ("an indented, unsegmented nucleus", "a kidney-shaped, indented nucleus"),
            "unsegmented-band": ("a band-shaped nucleus", "an unsegmented band nucleus"),
            "segmented-bilobed": ("a bilobed nucleus", "a nucleus segmented into two lobes"),
            "segmented-multilobed": ("a multilobed, segmented nucleus", "a nucleus segmented into several lobes"),
            "irregular": ("an irregular nucleus", "an irregularly shaped nucleus"),
        },
        "nuclear_cytoplasmic_ratio": {
            "low": ("a low nuclear-to-cytoplasmic ratio", "a low N:C ratio"),
            "high": ("a high nuclear-to-cytoplasmic ratio", "a high N:C ratio"),
        },
        "chromatin_density": {
            "densely": ("dense clumped chromatin", "densely packed chromatin"),
            "loosely": ("loosely packed chromatin", "fine loose chromatin"),
        },
        "cytoplasm_texture": {"clear": ("clear", "smooth"), "frosted": ("frosted", "ground-glass")},
        "cytoplasm_colour": {
            "light blue": ("light blue", "pale blue"),
            "blue": ("blue", "deep blue"),
            "purple blue": ("purple-blue", "violet-blue"),
        },
        "cytoplasm_vacuole": {
            "no": ("without vacuoles", "with no vacuoles"),
            "yes": ("with vacuoles", "containing vacuoles"),
        },
        "granule_type": {"small": ("small", "fine"), "round": ("round", "rounded"), "coarse": ("coarse", "large")},
        "granule_colour": {
            "pink": ("pink", "pinkish"),
            "red": ("red", "orange-red"),
            "purple": ("purple", "dark purple"),
        },
    },
    "lld": {
        "cell_size": {"small": ("small",), "medium": ("medium-sized", "intermediate-sized"), "large": ("large", "big")},
        "nuclear_chromatin": {
            "open": ("fine open chromatin", "open chromatin"),
            "coarse": ("coarse condensed chromatin", "coarse chromatin"),
        },
        "nuclear_shape": {
            "regular": ("a regular nucleus", "a round, regular nucleus"),
            "irregular": ("an irregular nucleus", "an irregular, indented or folded nucleus"),
        },
        "nucleolus": {
            "inconspicuous": ("inconspicuous nucleoli", "no visible nucleoli"),
            "prominent": ("prominent nucleoli", "one or more prominent nucleoli"),
        },
        "cytoplasm": {"scanty": ("scanty", "sparse"), "abundant": ("abundant", "plentiful")},
        "cytoplasmic_basophilia": {
            "slight": ("slightly basophilic", "weakly basophilic"),
            "moderate": ("moderately basophilic", "moderately blue"),
        },
        "cytoplasmic_vacuoles": {
            "absent": ("without vacuoles", "with no vacuoles"),
            "prominent": ("with prominent vacuoles", "containing prominent vacuoles"),
        },
    },
}
"""Schema name -> attribute -> value -> phrasings (the first is canonical). Granule negatives (``nil``, ``no``)
are phrased together, in :func:`_granules`."""

VACUOLES_ALONE = {
    "no": ("the cytoplasm has no vacuoles", "no vacuoles are seen in the cytoplasm"),
    "yes": ("the cytoplasm contains vacuoles", "vacuoles are seen in the cytoplasm"),
    "absent": ("the cytoplasm has no vacuoles", "no vacuoles are seen in the cytoplasm"),
    "prominent": ("the cytoplasm contains prominent vacuoles", "prominent vacuoles are seen in the cytoplasm"),
}
NO_GRANULES = ("no granules", "no visible granules")
SOME_GRANULES = ("granules", "cytoplasmic granules")
NEGATIVE_GRANULE_VALUES = ("nil", "no")
FRAMES = ("{a} {head}", "this is {a} {head}", "the image shows {a} {head}")


# ------------------------------------------------------------------------------------------------------ contents
def content_of(
    label: str | None, attributes: dict[str, str], *, schema: AttributeSchema, with_class: bool = True
) -> Content:
    """Everything known about a cell as statements: its class, then each attribute with a real value.

    Values that are not applicable, unknown, or not in the schema are left out.
    """
    statements = [(CLASS_KEY, label)] if with_class and label is not None else []
    for attribute in schema:
        value = attributes.get(attribute.name)
        if value in attribute.values and value not in SPECIAL_VALUES:
            statements.append((attribute.name, value))
    return tuple(statements)


def consistent(sentence: Content, cell: Content) -> bool:
    """Whether a sentence stating ``sentence`` is true of a cell whose full content is ``cell``.

    A sentence that states an attribute the cell does not have (not applicable, unknown) is not true of it.
    """
    facts = dict(cell)
    return all(facts.get(key) == value for key, value in sentence)


def partial_contents(cell: Content, rng: random.Random, *, class_probability: float = 0.5) -> Content:
    """A random part of a cell's content: the class with ``class_probability``, and a random, non-empty subset of
    its attributes (or only the class). Order is kept."""
    attributes = [s for s in cell if s[0] != CLASS_KEY]
    label = [s for s in cell if s[0] == CLASS_KEY]
    keep_class = bool(label) and (rng.random() < class_probability or not attributes)
    chosen: set = set()
    if attributes:
        count = rng.randint(0 if keep_class else 1, len(attributes))
        chosen = set(rng.sample(range(len(attributes)), count))
    return tuple(label if keep_class else []) + tuple(s for i, s in enumerate(attributes) if i in chosen)


# ------------------------------------------------------------------------------------------------------ composing
def _pick(options: tuple[str, ...], rng: random.Random | None) -> str:
    return options[0] if rng is None else rng.choice(options)


def _article(phrase: str) -> str:
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _phrases(schema: AttributeSchema, name: str) -> dict[str, tuple[str, ...]]:
    try:
        return PHRASES[schema.name][name]
    except KeyError:
        raise KeyError(f"no phrases for attribute {name!r} of schema {schema.name!r}") from None


def _granules(facts: dict[str, str], schema: AttributeSchema, rng: random.Random | None) -> str | None:
    """One noun phrase for the three granule attributes: 'coarse purple granules', 'no granules'."""
    stated = {k: facts[k] for k in ("granule_type", "granule_colour", "granularity") if k in facts}
    if not stated:
        return None
    adjectives = [
        _pick(_phrases(schema, k)[v], rng)
        for k, v in stated.items()
        if k != "granularity" and v not in NEGATIVE_GRANULE_VALUES
    ]
    positive = bool(adjectives) or stated.get("granularity") == "yes"
    negative = any(v in NEGATIVE_GRANULE_VALUES for v in stated.values())
    if not positive:
        return _pick(NO_GRANULES, rng)
    phrase = " ".join(adjectives + [_pick(SOME_GRANULES, rng)]) if adjectives else _pick(SOME_GRANULES, rng)
    # Annotations sometimes disagree with themselves (a granule colour but "no" granularity): say both.
    return phrase + (", otherwise agranular" if negative else "")


def compose(content: Content, *, schema: AttributeSchema, rng: random.Random | None = None) -> str:
    """A sentence stating exactly ``content``; canonical wording when ``rng`` is None, a random variant otherwise.

    Raises:
        ValueError: the content is empty.
        KeyError: an attribute or value the schema's phrase bank does not know.
    """
    if not content:
        raise ValueError("nothing to say: the content is empty")
    facts = dict(content)
    label = facts.get(CLASS_KEY)
    noun = _pick(CLASS_NOUNS.get(label, (str(label).lower(),)), rng) if label is not None else _pick(CELL_NOUNS, rng)
    adjectives, with_parts, cytoplasm = [], [], []
    amount = vacuoles = vacuole_value = None
    for key, value in content:
        if key == CLASS_KEY:
            continue
        role = ROLES.get(key)
        if role == GRANULES:
            continue  # phrased together below
        if role is None:
            raise KeyError(f"no sentence role for attribute {key!r}")
        phrase = _pick(_phrases(schema, key)[value], rng)
        if role == ADJECTIVE:
            adjectives.append(phrase)
        elif role == WITH:
            with_parts.append(phrase)
        elif role == AMOUNT:
            amount = phrase
        elif role == CYTOPLASM:
            cytoplasm.append(phrase)
        else:
            vacuoles, vacuole_value = phrase, value
    granules = _granules(facts, schema, rng)
    if granules:
        with_parts.append(granules)
    head = ", ".join(adjectives) + " " + noun if adjectives else noun  # "large, round cell"
    frame = FRAMES[0] if rng is None else rng.choice(FRAMES)
    text = frame.format(a=_article(head), head=head)
    if with_parts:
        text += " with " + _join(with_parts)
    clause = None
    if cytoplasm:
        clause = f"the {amount + ' ' if amount else ''}cytoplasm is {_join(cytoplasm)}"
    elif amount:
        clause = f"the cytoplasm is {amount}"
    if clause and vacuoles:
        clause += f", {vacuoles}"
    elif vacuoles:
        clause = _pick(VACUOLES_ALONE[vacuole_value], rng)
    if clause:
        text += "; " + clause
    return text[0].upper() + text[1:] + "."


def variants(content: Content, *, schema: AttributeSchema, count: int = 8, seed: int = 0) -> list[str]:
    """Up to ``count`` different wordings of one content, the canonical first; the same on every call."""
    rng = random.Random(seed)
    found = [compose(content, schema=schema)]
    for _ in range(4 * count):
        if len(found) >= count:
            break
        sentence = compose(content, schema=schema, rng=rng)
        if sentence not in found:
            found.append(sentence)
    return found


def class_sentence(label: str) -> str:
    """The fixed baseline sentence of a class (PBC types) or a diagnosis (leukemia types, normal)."""
    sentence = CLASS_SENTENCES.get(label) or DIAGNOSIS_SENTENCES.get(label)
    if sentence is None:
        raise KeyError(f"no fixed sentence for {label!r}; known: {', '.join([*CLASS_SENTENCES, *DIAGNOSIS_SENTENCES])}")
    return sentence
