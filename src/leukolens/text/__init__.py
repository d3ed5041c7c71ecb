"""Words about cells: sentences composed from a cell's class and morphological attributes (pure Python)."""

from leukolens.text.sentences import (
    CLASS_SENTENCES,
    DIAGNOSIS_SENTENCES,
    SEED_SENTENCES,
    Content,
    class_sentence,
    compose,
    consistent,
    content_of,
    partial_contents,
    variants,
)

__all__ = [
    "CLASS_SENTENCES",
    "DIAGNOSIS_SENTENCES",
    "SEED_SENTENCES",
    "Content",
    "class_sentence",
    "compose",
    "consistent",
    "content_of",
    "partial_contents",
    "variants",
]
