"""Label and attribute vocabularies: the class names of each data set, the attribute schemas, and the mappings
between schemas.

Two attribute schemas ship here: LLD's seven (:data:`LLD_SCHEMA`) and WBCAtt's eleven (:data:`WBCATT_SCHEMA`), with
an explicit mapping between the attributes they share (:data:`WBCATT_TO_LLD`, :data:`LLD_TO_WBCATT`). Import these
names from :mod:`leukolens.records`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NOT_APPLICABLE = "not applicable"
"""The attribute does not apply to this cell, or was not assessed (LLD code 2)."""
UNKNOWN = "unknown"
"""The attribute applies but its value is not known (e.g. lost in a conversion between schemas)."""
SPECIAL_VALUES = (NOT_APPLICABLE, UNKNOWN)


# ---------------------------------------------------------------------------------------------------- vocabularies
@dataclass(frozen=True)
class Vocabulary:
    """A named, ordered list of class names; a class id is its index."""

    name: str
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"vocabulary {self.name!r} repeats a class name: {self.names}")

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"class {name!r} is not in vocabulary {self.name!r} ({', '.join(self.names)})") from None

    def name_of(self, class_id: int) -> str:
        if not 0 <= class_id < len(self.names):
            raise KeyError(f"class id {class_id} is outside vocabulary {self.name!r} (0..{len(self.names) - 1})")
        return self.names[class_id]


LLD_CLASSES = Vocabulary(
    "lld",
    (
        "None",
        "Myeloblast",
        "Lymphoblast",
        "Neutrophil",
        "Atypical lymphocyte",
        "Promonocyte",
        "Monoblast",
        "Lymphocyte",
        "Myelocyte",
        "Abnormal promyelocyte",
        "Monocyte",
        "Metamyelocyte",
        "Eosinophil",
        "Basophil",
    ),
)
PBC_CLASSES = Vocabulary(
    "pbc",
    ("Basophil", "Eosinophil", "Erythroblast", "Immature granulocyte", "Lymphocyte", "Monocyte", "Neutrophil"),
)
WBCATT_CLASSES = Vocabulary("wbcatt", ("Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"))
BLOOD_CELLS = Vocabulary("blood-cells", ("WBC", "RBC", "Platelets"))
"""BCCD's and TXL-PBC's three detection classes."""
VOCABULARIES = {v.name: v for v in (BLOOD_CELLS, LLD_CLASSES, PBC_CLASSES, WBCATT_CLASSES)}


def known_vocabulary(names: tuple[str, ...], name: str) -> Vocabulary:
    """The shipped vocabulary with exactly these class names, else a new one called ``name``."""
    for vocabulary in VOCABULARIES.values():
        if vocabulary.names == tuple(names):
            return vocabulary
    return Vocabulary(name, tuple(names))


# ------------------------------------------------------------------------------------------------------ attributes
@dataclass(frozen=True)
class Attribute:
    """One morphological attribute and its possible values, in code order."""

    name: str
    values: tuple[str, ...]
    title: str = field(default="", compare=False)
    """How to print the name; not part of what the attribute is (a model head built without it is the same)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        clash = set(self.values) & set(SPECIAL_VALUES)
        if clash:
            raise ValueError(f"attribute {self.name!r} may not use the reserved values {sorted(clash)}")

    def accepts(self, value: str) -> bool:
        return value in self.values or value in SPECIAL_VALUES


AttributeSpec = Attribute
"""An attribute head's target (its name and values, in code order): the same record, under the name models use."""


@dataclass(frozen=True)
class AttributeSchema:
    """A named, ordered set of attributes (LLD's 7, WBCAtt's 11, or one of your own)."""

    name: str
    attributes: tuple[Attribute, ...]
    aliases: tuple[tuple[str, str], ...] = ()
    """Other spellings of attribute names met in real files, as (spelling, name) pairs."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", tuple(self.attributes))

    def __len__(self) -> int:
        return len(self.attributes)

    def __iter__(self):
        return iter(self.attributes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes)

    def __getitem__(self, name: str) -> Attribute:
        canonical = self.canonical_name(name)
        for attribute in self.attributes:
            if attribute.name == canonical:
                return attribute
        raise KeyError(f"schema {self.name!r} has no attribute {name!r} ({', '.join(self.names)})")

    def canonical_name(self, name: str) -> str:
        key = name.strip().lower().replace(" ", "_").replace("-", "_")
        for spelling, canonical in self.aliases:
            if key == spelling:
                return canonical
        return key

    def complete(self, attributes: dict[str, str]) -> dict[str, str]:
        """All of this schema's attributes, in order, with :data:`UNKNOWN` for those not given."""
        return {a.name: attributes.get(a.name, UNKNOWN) for a in self.attributes}


LLD_SCHEMA = AttributeSchema(
    "lld",
    (
        Attribute("cell_size", ("small", "medium", "large"), "cell size"),
        Attribute("nuclear_chromatin", ("open", "coarse"), "nuclear chromatin"),
        Attribute("nuclear_shape", ("regular", "irregular"), "nuclear shape"),
        Attribute("nucleolus", ("inconspicuous", "prominent"), "nucleolus"),
        Attribute("cytoplasm", ("scanty", "abundant"), "cytoplasm"),
        Attribute("cytoplasmic_basophilia", ("slight", "moderate"), "cytoplasmic basophilia"),
        Attribute("cytoplasmic_vacuoles", ("absent", "prominent"), "cytoplasmic vacuoles"),
    ),
    # The LLD annotation tool and its COCO variant spell some names differently.
    aliases=(
        ("nuclear_chromatio", "nuclear_chromatin"),
        ("chromation", "nuclear_chromatin"),
        ("chromatin", "nuclear_chromatin"),
        ("nucleus", "nucleolus"),
        ("nucleous", "nucleolus"),
        ("nucleoli", "nucleolus"),
        ("nucleus_shape", "nuclear_shape"),
        ("basophilia", "cytoplasmic_basophilia"),
        ("vacuoles", "cytoplasmic_vacuoles"),
        ("size", "cell_size"),
    ),
)
LLD_NOT_APPLICABLE_CODE = 2
"""In LLD files, code 2 of a2..a7 means not applicable / not assessed (a1, cell size, uses 2 for large)."""

WBCATT_SCHEMA = AttributeSchema(
    "wbcatt",
    (
        Attribute("cell_size", ("small", "big"), "cell size"),
        Attribute("cell_shape", ("round", "irregular"), "cell shape"),
        Attribute(
            "nucleus_shape",
            (
                "unsegmented-round",
                "unsegmented-indented",
                "unsegmented-band",
                "segmented-bilobed",
                "segmented-multilobed",
                "irregular",
            ),
            "nucleus shape",
        ),
        Attribute("nuclear_cytoplasmic_ratio", ("low", "high"), "nuclear-to-cytoplasmic ratio"),
        Attribute("chromatin_density", ("densely", "loosely"), "chromatin density"),
        Attribute("cytoplasm_vacuole", ("no", "yes"), "cytoplasmic vacuoles"),
        Attribute("cytoplasm_texture", ("clear", "frosted"), "cytoplasm texture"),
        Attribute("cytoplasm_colour", ("light blue", "blue", "purple blue"), "cytoplasm colour"),
        # "nil" is an observation (no granules seen), so it stays a value rather than "not applicable"; this keeps
        # accuracies comparable with the WBCAtt paper, which scores it as a class.
        Attribute("granule_type", ("small", "round", "coarse", "nil"), "granule type"),
        Attribute("granule_colour", ("pink", "red", "purple", "nil"), "granule colour"),
        Attribute("granularity", ("no", "yes"), "granularity"),
    ),
    aliases=(("cytoplasm_color", "cytoplasm_colour"), ("granule_color", "granule_colour")),
)

SCHEMAS = {s.name: s for s in (LLD_SCHEMA, WBCATT_SCHEMA)}


@dataclass(frozen=True)
class AttributeMapping:
    """How one attribute of a source schema maps onto one of a target schema.

    Values missing from ``values`` become :data:`UNKNOWN` (the target cannot tell); :data:`NOT_APPLICABLE` and
    :data:`UNKNOWN` pass through unchanged.
    """

    source: str
    target: str
    values: tuple[tuple[str, str], ...]
    note: str = ""

    def map_value(self, value: str) -> str:
        if value in SPECIAL_VALUES:
            return value
        return dict(self.values).get(value, UNKNOWN)


@dataclass(frozen=True)
class SchemaMapping:
    """A mapping between two schemas, with what does not map stated."""

    source: AttributeSchema
    target: AttributeSchema
    attributes: tuple[AttributeMapping, ...]
    unmapped_source: tuple[str, ...]
    unmapped_target: tuple[str, ...]

    def apply(self, attributes: dict[str, str]) -> dict[str, str]:
        """Map a cell's attributes; target attributes with no source are :data:`UNKNOWN`."""
        mapped = {m.target: m.map_value(attributes.get(m.source, UNKNOWN)) for m in self.attributes}
        return self.target.complete(mapped)


_LLD_IRREGULAR = "irregular"
WBCATT_TO_LLD = SchemaMapping(
    source=WBCATT_SCHEMA,
    target=LLD_SCHEMA,
    attributes=(
        AttributeMapping(
            "cell_size",
            "cell_size",
            (("small", "small"), ("big", "large")),
            "WBCAtt has two sizes; its 'big' is read as LLD 'large' (LLD 'medium' has no WBCAtt counterpart).",
        ),
        AttributeMapping(
            "nucleus_shape",
            "nuclear_shape",
            (
                ("unsegmented-round", "regular"),
                ("unsegmented-indented", _LLD_IRREGULAR),
                ("unsegmented-band", _LLD_IRREGULAR),
                ("segmented-bilobed", _LLD_IRREGULAR),
                ("segmented-multilobed", _LLD_IRREGULAR),
                ("irregular", _LLD_IRREGULAR),
            ),
            "Only a round, unsegmented nucleus is regular; indented, band, lobed and irregular nuclei are irregular.",
        ),
        AttributeMapping(
            "nuclear_cytoplasmic_ratio",
            "cytoplasm",
            (("high", "scanty"), ("low", "abundant")),
            "A high N:C ratio means scanty cytoplasm, a low one abundant cytoplasm.",
        ),
        AttributeMapping(
            "chromatin_density",
            "nuclear_chromatin",
            (("densely", "coarse"), ("loosely", "open")),
            "Densely packed chromatin is coarse (clumped); loosely packed chromatin is open (fine).",
        ),
        AttributeMapping("cytoplasm_vacuole", "cytoplasmic_vacuoles", (("yes", "prominent"), ("no", "absent"))),
    ),
    unmapped_source=(
        "cell_shape",
        "cytoplasm_texture",
        "cytoplasm_colour",
        "granule_type",
        "granule_colour",
        "granularity",
    ),
    unmapped_target=("nucleolus", "cytoplasmic_basophilia"),
)
"""WBCAtt to LLD. Not mapped: WBCAtt's cell shape, cytoplasm texture and colour and the three granule attributes
have no LLD attribute (cytoplasm colour only hints at basophilia, which is not a validated correspondence); LLD's
nucleolus and cytoplasmic basophilia have no WBCAtt attribute and come out :data:`UNKNOWN`."""

LLD_TO_WBCATT = SchemaMapping(
    source=LLD_SCHEMA,
    target=WBCATT_SCHEMA,
    attributes=(
        AttributeMapping(
            "cell_size",
            "cell_size",
            (("small", "small"), ("large", "big")),
            "LLD 'medium' has no WBCAtt counterpart and maps to unknown.",
        ),
        AttributeMapping(
            "nuclear_shape",
            "nucleus_shape",
            (("regular", "unsegmented-round"),),
            "LLD 'irregular' does not say which WBCAtt shape (indented, band, lobed, irregular): unknown.",
        ),
        AttributeMapping("cytoplasm", "nuclear_cytoplasmic_ratio", (("scanty", "high"), ("abundant", "low"))),
        AttributeMapping("nuclear_chromatin", "chromatin_density", (("coarse", "densely"), ("open", "loosely"))),
        AttributeMapping("cytoplasmic_vacuoles", "cytoplasm_vacuole", (("prominent", "yes"), ("absent", "no"))),
    ),
    unmapped_source=("nucleolus", "cytoplasmic_basophilia"),
    unmapped_target=(
        "cell_shape",
        "cytoplasm_texture",
        "cytoplasm_colour",
        "granule_type",
        "granule_colour",
        "granularity",
    ),
)
"""LLD to WBCAtt: the inverse of :data:`WBCATT_TO_LLD` where it is one-to-one; see the notes for what is lost."""

SCHEMA_MAPPINGS = {("wbcatt", "lld"): WBCATT_TO_LLD, ("lld", "wbcatt"): LLD_TO_WBCATT}


def schema_mapping(source: AttributeSchema, target: AttributeSchema) -> SchemaMapping:
    try:
        return SCHEMA_MAPPINGS[(source.name, target.name)]
    except KeyError:
        raise KeyError(f"no attribute mapping from schema {source.name!r} to {target.name!r}") from None
