"""Attribute values as files spell them, checked against a schema: names with aliases, values, LLD codes."""

from __future__ import annotations

import math
from collections.abc import Iterable

from leukolens.records import LLD_NOT_APPLICABLE_CODE, LLD_SCHEMA, NOT_APPLICABLE, WBCATT_SCHEMA, AttributeSchema

_LLD_SIZE = "cell_size"  # the one LLD attribute whose code 2 is a value ("large"), not "not applicable"


class AttributeProblem(ValueError):
    """An attribute name or value that the schema does not know."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def guess_schema(attribute_names: Iterable[str]) -> AttributeSchema | None:
    """The shipped schema that knows every one of these attribute names (LLD first), or None.

    Args:
        attribute_names: attribute names as spelled in a file (aliases allowed).
    """
    names = set(attribute_names)
    if not names:
        return None
    for schema in (LLD_SCHEMA, WBCATT_SCHEMA):
        if all(schema.canonical_name(n) in schema.names for n in names):
            return schema
    return None


def named_attribute(schema: AttributeSchema | None, name: str, value: object) -> tuple[str, str]:
    """An attribute as (canonical name, value name), checked against ``schema``.

    Without a schema the pair is kept as written (there is nothing to check it against). LLD integer codes are
    decoded when the schema is LLD's.

    Raises:
        AttributeProblem: the schema has no such attribute ("attribute-name") or value ("attribute-value").
    """
    if schema is None:
        return str(name), str(value)
    canonical = schema.canonical_name(str(name))
    if canonical not in schema.names:
        raise AttributeProblem(
            "attribute-name", f"attribute {name!r} is not in schema {schema.name!r} ({', '.join(schema.names)})"
        )
    attribute = schema[canonical]
    if schema is LLD_SCHEMA and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return canonical, decode_lld_code(canonical, value)
        except AttributeProblem as problem:
            raise AttributeProblem(problem.kind, f"{canonical} {problem}") from None
    text = str(value).strip()
    for candidate in (text, text.lower()):
        if attribute.accepts(candidate):
            return canonical, candidate
    raise AttributeProblem(
        "attribute-value",
        f"{canonical} value {value!r} is not one of {', '.join(attribute.values)} (or {NOT_APPLICABLE!r})",
    )


def decode_lld_code(name: str, code: float) -> str:
    """The value name of an LLD attribute code (code 2 is "not applicable" except for cell size).

    Raises:
        AttributeProblem: the code is not one LLD uses for this attribute.
    """
    values = LLD_SCHEMA[name].values
    if math.isfinite(code) and code == int(code):
        code = int(code)
        if 0 <= code < len(values):
            return values[code]
        if name != _LLD_SIZE and code == LLD_NOT_APPLICABLE_CODE:
            return NOT_APPLICABLE
    top = len(values) - 1 if name == _LLD_SIZE else LLD_NOT_APPLICABLE_CODE
    raise AttributeProblem("attribute-code", f"code {code:g} is out of range 0..{top}")
