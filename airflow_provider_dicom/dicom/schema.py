"""BigQuery schema of the DICOM table: fields, their canonical order, and the union of many instances.

A table's schema is the union of what its instances need. Column order is canonical (by tag, then
the fixed trailing columns) rather than first-seen, so the same set of instances yields the same
schema whatever order they are read in, and an append that brings new elements only adds columns.
Nothing here imports google-cloud-bigquery until `to_bigquery()` is called.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from dataclasses import field as dc_field
from typing import Any

from airflow_provider_dicom.utils.errors import DicomProviderError

STRING = "STRING"
INTEGER = "INTEGER"
FLOAT = "FLOAT"
DATE = "DATE"
TIME = "TIME"
TIMESTAMP = "TIMESTAMP"
RECORD = "RECORD"
JSON = "JSON"
NULLABLE = "NULLABLE"
REPEATED = "REPEATED"

# Sub-records whose members have a fixed order rather than a tag order.
_FIXED_ORDER = {
    name: index
    for index, name in enumerate(
        (
            "Alphabetic", "Ideographic", "Phonetic",
            "FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix",
            "Id", "Value",
            "Tag", "Data",
            "TagName", "TagReference",
        )
    )
}
# Columns that follow every data element, in this order.
TRAILING_COLUMNS = ("OtherElements", "DroppedTags", "Type", "LastUpdated", "StorageClass", "BlobStorageSize")
_TRAILING_RANK = {name: index for index, name in enumerate(TRAILING_COLUMNS)}


class SchemaConflictError(DicomProviderError, ValueError):
    """Two schemas give one column different types; the message names the column and both types."""


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: str
    mode: str = NULLABLE
    fields: tuple[Field, ...] = ()
    # Every instance's schema is looked up in a set of schemas already merged; a dataclass hash
    # would walk the whole nested tree each time, so it is computed once here.
    _hash: int = dc_field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.name, self.type, self.mode, self.fields)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self):
        # Rebuild through __init__ so the hash is computed by the receiving process: string
        # hashes differ between processes, and fields travel back from worker processes.
        return (Field, (self.name, self.type, self.mode, self.fields))

    def to_api_repr(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "mode": self.mode}
        if self.fields:
            out["fields"] = [child.to_api_repr() for child in self.fields]
        return out

    @classmethod
    def from_api_repr(cls, data: dict[str, Any]) -> Field:
        return cls(
            name=data["name"],
            type=_normalise_type(data.get("type", STRING)),
            mode=(data.get("mode") or NULLABLE).upper(),
            fields=tuple(cls.from_api_repr(child) for child in data.get("fields", ()) or ()),
        )

    def depth(self) -> int:
        """RECORD nesting depth: 1 for a RECORD of scalars, 0 for a scalar."""
        if self.type != RECORD:
            return 0
        return 1 + max((child.depth() for child in self.fields), default=0)

    def column_count(self) -> int:
        """Columns as BigQuery counts them against its 10,000 limit: this one and every nested one."""
        return 1 + sum(child.column_count() for child in self.fields)


def _normalise_type(value: str) -> str:
    value = value.upper()
    return {"STRUCT": RECORD, "FLOAT64": FLOAT, "INT64": INTEGER, "BOOL": "BOOLEAN"}.get(value, value)


def _tag_of_keyword(name: str) -> int | None:
    from pydicom.datadict import keyword_dict

    # Repeating-group keywords (OverlayRows, ...) are registered at group 0x6000 / 0x5000.
    return keyword_dict.get(name)


def column_rank(name: str) -> tuple[int, int, str]:
    """Sort key giving the canonical column order: standard elements by tag, then private
    sequences by tag, then the fixed trailing columns; sub-record members in their fixed order."""
    fixed = _FIXED_ORDER.get(name)
    if fixed is not None:
        return (0, fixed, name)
    trailing = _TRAILING_RANK.get(name)
    if trailing is not None:
        return (3, trailing, name)
    if name.startswith("Tag_") and len(name) == 12:
        try:
            return (2, int(name[4:], 16), name)
        except ValueError:
            pass
    tag = _tag_of_keyword(name)
    if tag is not None:
        return (1, tag, name)
    return (4, 0, name)


_rank_cache: dict[str, tuple[int, int, str]] = {}


def _rank(name: str) -> tuple[int, int, str]:
    rank = _rank_cache.get(name)
    if rank is None:
        rank = _rank_cache[name] = column_rank(name)
    return rank


def merge_field(existing: Field, incoming: Field, path: str = "", *, keep_order: bool = False) -> Field:
    """The union of two definitions of one column; raises SchemaConflictError when types differ."""
    where = f"{path}{existing.name}"
    if existing.type != incoming.type:
        raise SchemaConflictError(
            f"column {where!r} is {existing.type} in one schema and {incoming.type} in the other"
        )
    mode = existing.mode
    if existing.mode != incoming.mode:
        # A NULLABLE column can widen to REPEATED only by rewriting the table; BigQuery refuses it.
        raise SchemaConflictError(
            f"column {where!r} is {existing.mode} in one schema and {incoming.mode} in the other"
        )
    if existing.type != RECORD or existing.fields == incoming.fields:
        return existing
    return Field(
        existing.name, existing.type, mode,
        merge_fields(existing.fields, incoming.fields, where + ".", keep_order=keep_order),
    )


def merge_fields(
    existing: Iterable[Field], incoming: Iterable[Field], path: str = "", *, keep_order: bool = False
) -> tuple[Field, ...]:
    """Union of two field lists. New fields take their canonical place unless `keep_order`, which
    appends them after the existing ones (what an existing BigQuery table does on ALLOW_FIELD_ADDITION)."""
    by_name: dict[str, Field] = {f.name: f for f in existing}
    if not by_name:
        # The union with nothing is the incoming schema as it is: the converter already gives
        # its canonical order, and the JSON variant's fixed column order is not a tag order.
        return tuple(incoming)
    order = list(by_name)
    added = []
    for item in incoming:
        current = by_name.get(item.name)
        if current is None:
            by_name[item.name] = item
            added.append(item.name)
        elif current is not item and current != item:
            by_name[item.name] = merge_field(current, item, path, keep_order=keep_order)
    if keep_order:
        names = order + added
    else:
        names = sorted(by_name, key=_rank)
    return tuple(by_name[name] for name in names)


@dataclass
class TableSchema:
    """The growing union of the schemas of the instances in one export."""

    fields: tuple[Field, ...] = ()
    _seen: set[tuple[Field, ...]] = field(default_factory=set, repr=False)
    # The tuple added last: the converter gives the same tuple object for a schema it made
    # before (walker.ordered_fields), which an identity check recognises without hashing it.
    _last: tuple[Field, ...] | None = field(default=None, repr=False, compare=False)

    def add(self, fields: Iterable[Field]) -> None:
        fields = tuple(fields)
        if fields is self._last:
            return
        # Most instances of an export need a schema already seen: skip the merge for those.
        if fields not in self._seen:
            self.fields = merge_fields(self.fields, fields)
            self._seen.add(fields)
        self._last = fields

    def to_api_repr(self) -> list[dict[str, Any]]:
        return [f.to_api_repr() for f in self.fields]

    def to_bigquery(self) -> list:
        """The schema as google-cloud-bigquery SchemaField objects."""
        return to_bigquery_fields(self.fields)

    def column_count(self) -> int:
        return sum(f.column_count() for f in self.fields)

    @classmethod
    def from_api_repr(cls, data: Iterable[dict[str, Any]]) -> TableSchema:
        return cls(tuple(Field.from_api_repr(item) for item in data))


# Column types whose values are never floats (JSON's are any JSON; FLOAT's and unknown ones may be).
_FLOAT_FREE_TYPES = frozenset((STRING, INTEGER, DATE, TIME, TIMESTAMP, RECORD))
# Fields tuples judged by holds_no_float, by identity: id -> (the tuple, kept alive so its id
# stays its own, and the answer). The converter gives one tuple object per schema shape.
_float_free: dict[int, tuple[tuple[Field, ...], bool]] = {}


def holds_no_float(fields: tuple[Field, ...]) -> bool:
    """Whether no column of `fields`, at any depth, can hold a float (no FLOAT, no JSON column).

    Every value of a converted row lies in a column of its own type (merge_field refuses two
    types for one column), so a row of such a schema holds no float: its NDJSON line needs none of
    the checks for floats (sources.parallel.encode_row). Asked once per instance, answered by
    identity for a schema met before."""
    known = _float_free.get(id(fields))
    if known is not None and known[0] is fields:
        return known[1]
    answer = _no_float(fields)
    if len(_float_free) >= 4096:
        _float_free.clear()
    _float_free[id(fields)] = (fields, answer)
    return answer


def _no_float(fields: Iterable[Field]) -> bool:
    return all(f.type in _FLOAT_FREE_TYPES and _no_float(f.fields) for f in fields)


def to_bigquery_fields(fields: Iterable[Field]) -> list:
    from google.cloud.bigquery import SchemaField

    def convert(f: Field) -> SchemaField:
        return SchemaField(f.name, f.type, mode=f.mode, fields=[convert(child) for child in f.fields])

    return [convert(f) for f in fields]


def from_bigquery_fields(schema: Iterable[Any]) -> tuple[Field, ...]:
    """Our fields from google-cloud-bigquery SchemaField objects (e.g. an existing table's schema)."""
    return tuple(Field.from_api_repr(item.to_api_repr()) for item in schema)
