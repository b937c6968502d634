"""The one element classifier and the one sequence walker: a dataset's elements -> a flattened row.

Every route to a flattened row (a folder's or gs:// object's scanned header bytes, a pydicom
Dataset, a DICOMweb server's DICOM JSON) ends in `walk`, through an adapter that says how its
elements are held (`ElementSource`). The rules (DESIGN.md section 3, and Google's "Understanding
the BigQuery DICOM schema") are therefore written once, here:

- a standard element becomes a column named by its keyword, typed from its VR, REPEATED unless
  the dictionary VM is "1"; sequences become REPEATED RECORDs converted by the same rules;
- person names become {Alphabetic, Ideographic, Phonetic} x {FamilyName ... NameSuffix} records;
- 50xx/60xx repeating-group elements become {Id, Value} records under their keyword;
- binary elements (OB, OW, UN, ...) get no column and are listed in DroppedTags;
- private elements, private creators and tags without a keyword go to OtherElements {Tag, Data};
  a private sequence becomes its own `Tag_GGGGEEEE` column;
- a value that does not fit its column (a malformed date, two values in a VM 1 element, NaN)
  is kept as text in OtherElements instead of being lost;
- group-length elements (gggg,0000) are structural, not metadata, and are not exported.

The element interface is deliberately small, because the walker runs per element of every
instance: a dataset is whatever the adapter's `entries` iterates as `(tag, element)` pairs, and
an element is a tuple whose first two members are the VR (None: implicit, not settled) and the
value, raw bytes in the source's byte order when the adapter has them (only then the fast path
below applies; empty bytes are an element without values, as `values` would say); the rest of
the tuple is the adapter's own. Everything else goes through the adapter's methods. What only
pydicom can judge (an implicit VR the dictionary does not settle, UN, text with code extensions)
an adapter either works out (the Dataset adapter asks pydicom) or declines with NeedsPydicom,
and the caller converts that instance from a pydicom Dataset.

Per (tag, VR) every decision that does not depend on the value is made once and kept as a Plan.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypedDict, Unpack

from airflow_provider_dicom.dicom import vr as vrs
from airflow_provider_dicom.dicom.schema import (
    DATE,
    INTEGER,
    NULLABLE,
    RECORD,
    REPEATED,
    STRING,
    TIME,
    TIMESTAMP,
    Field,
    _rank,
    holds_no_float,
    merge_fields,
)
from airflow_provider_dicom.dicom.tags import TagInfo, tag_info, tag_name, tag_reference
from airflow_provider_dicom.dicom.vocabulary import (
    ASCII_STRING_VRS,
    BINARY_NUMBER_VRS,
    BINARY_VRS,
    SHORT_TEXT_VRS,
    SINGLE_VALUED,
    TEXT_VRS,
)
from airflow_provider_dicom.utils.errors import DicomProviderError

# BigQuery allows 15 levels of nested RECORDs; deeper content is dropped (and listed).
MAX_NESTING = 15

# An element as the walker reads it: (VR or None, value, adapter's own members...). See above.
Element = tuple
Row = dict[str, Any]


class NeedsPydicom(DicomProviderError):
    """A value only pydicom can decode (text in a character set with code extensions, a VR it
    must work out): the instance is converted from a pydicom Dataset instead."""


class Undecodable(DicomProviderError):
    """pydicom itself cannot decode this element's value; `text` is its raw text (kept in
    OtherElements), or None when it has none (the element is listed as dropped)."""

    def __init__(self, text: list[str] | None) -> None:
        super().__init__("a value pydicom cannot decode")
        self.text = text


class ElementSource(Protocol):
    """How one kind of input holds its elements (an adapter; see the module docstring)."""

    little: bool  # byte order of the raw values this source gives in an element's value slot

    def entries(self, elements: Any) -> Iterable[tuple[int, Element]]:
        """The (tag, element) pairs of one dataset (the top level, or an item), in file order."""

    def values(self, element: Element, vr: str, codec: str | None) -> list | None:
        """The element's values as str (string VRs) or numbers; None for binary content.
        `vr` is the VR the element is converted by; `codec` the dataset's text codec (`codec_of`)."""

    def items(self, element: Element) -> Sequence[Any]:
        """The items of a sequence element, each a dataset `entries` takes."""

    def encodings(self, elements: Any, inherited: list[str]) -> list[str]:
        """The character sets of a dataset (its own Specific Character Set, or `inherited`)."""

    def resolve(self, tag: int, element: Element) -> Element:
        """The element with the VR pydicom gives it (implicit VR, UN); raises NeedsPydicom when
        this source cannot ask pydicom, Undecodable when pydicom cannot decode it either."""


class StoredFacts(TypedDict, total=False):
    """What a source knows of the stored object beside its DICOM content: the row's trailing
    columns BlobStorageSize (the object's bytes), LastUpdated and StorageClass ("STANDARD" when
    not given). Every route passes them on as it got them."""

    blob_storage_size: int | None
    last_updated: datetime | None
    storage_class: str


@dataclass(slots=True)
class ConvertedInstance:
    row: dict[str, Any]
    fields: tuple[Field, ...]
    study_uid: str | None
    series_uid: str | None
    sop_uid: str | None
    # The walker's rows: no column of `fields` can hold a float (schema.holds_no_float), so the
    # row's line needs no float checks (sources.parallel.encode_row). False: not known.
    float_free: bool = False


# -- schema fields, shared and cached ---------------------------------------------------------------

_SCALAR_FIELDS: dict[tuple[str, str, str], Field] = {}


def _scalar(name: str, type_: str, mode: str) -> Field:
    key = (name, type_, mode)
    found = _SCALAR_FIELDS.get(key)
    if found is None:
        found = _SCALAR_FIELDS[key] = Field(name, type_, mode)
    return found


_PN_GROUP_FIELDS = tuple(
    Field(group, RECORD, NULLABLE, tuple(Field(c, STRING, NULLABLE) for c in vrs.PN_COMPONENTS))
    for group in vrs.PN_GROUPS
)
OTHER_ELEMENTS_FIELD = Field(
    "OtherElements", RECORD, REPEATED, (Field("Tag", STRING, NULLABLE), Field("Data", STRING, REPEATED))
)
DROPPED_TAGS_FIELD = Field(
    "DroppedTags", RECORD, REPEATED, (Field("TagName", STRING, NULLABLE), Field("TagReference", STRING, NULLABLE))
)
TRAILING_FIELDS = (
    Field("Type", STRING, NULLABLE),
    Field("LastUpdated", TIMESTAMP, NULLABLE),
    Field("StorageClass", STRING, NULLABLE),
    Field("BlobStorageSize", INTEGER, NULLABLE),
)
_pn_fields: dict[tuple[str, str], Field] = {}


def _pn_field(name: str, mode: str) -> Field:
    found = _pn_fields.get((name, mode))
    if found is None:
        found = _pn_fields[(name, mode)] = Field(name, RECORD, mode, _PN_GROUP_FIELDS)
    return found


_group_fields: dict[tuple[str, str, bool], Field] = {}


def _repeating_group_field(name: str, type_: str, repeated_value: bool) -> Field:
    key = (name, type_, repeated_value)
    found = _group_fields.get(key)
    if found is None:
        value_field = Field("Value", RECORD, REPEATED if repeated_value else NULLABLE, _PN_GROUP_FIELDS) if (
            type_ == RECORD
        ) else Field("Value", type_, REPEATED if repeated_value else NULLABLE)
        found = _group_fields[key] = Field(name, RECORD, REPEATED, (Field("Id", STRING, NULLABLE), value_field))
    return found


# Per-instance schema work, cached: most instances of an export repeat a few shapes. Each cache
# is emptied when it outgrows its bound, so memory stays flat however many instances pass.
_CACHE_LIMIT = 4096
# names in dict order -> (names in column order, the fields tuple given last for them)
_order_cache: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[Field, ...]]] = {}
_record_cache: dict[tuple[str, tuple[Field, ...]], Field] = {}
_merge_cache: dict[tuple[tuple[Field, ...], tuple[Field, ...]], tuple[Field, ...]] = {}


def ordered_fields(fields: dict[str, Field]) -> tuple[Field, ...]:
    """The fields of one dataset in canonical column order.

    The same names holding the same Field objects give the very tuple given last time, so that
    a schema met again is recognised by identity (TableSchema.add) rather than by hashing it."""
    names = tuple(fields)
    known = _order_cache.get(names)
    if known is None:
        if len(_order_cache) >= _CACHE_LIMIT:
            _order_cache.clear()
        order = tuple(sorted(names, key=_rank))
        ordered = tuple(map(fields.__getitem__, order))
        _order_cache[names] = (order, ordered)
        return ordered
    order, last = known
    ordered = tuple(map(fields.__getitem__, order))
    if ordered == last:  # compares element by element, identity first: no Field hash or __eq__ when identical
        return last
    _order_cache[names] = (order, ordered)
    return ordered


def sequence_field(name: str, item_fields: tuple[Field, ...]) -> Field:
    """The REPEATED RECORD column of a sequence; one shared object per shape, which also makes
    comparing instance schemas (TableSchema.add) an identity check."""
    key = (name, item_fields)
    found = _record_cache.get(key)
    if found is None:
        if len(_record_cache) >= _CACHE_LIMIT:
            _record_cache.clear()
        found = _record_cache[key] = Field(name, RECORD, REPEATED, item_fields)
    return found


def merge_item_fields(merged: tuple[Field, ...], incoming: tuple[Field, ...]) -> tuple[Field, ...]:
    """The union of the fields of a sequence's items (both in canonical order)."""
    if not merged:
        return incoming
    if merged == incoming:
        return merged
    key = (merged, incoming)
    found = _merge_cache.get(key)
    if found is None:
        if len(_merge_cache) >= _CACHE_LIMIT:
            _merge_cache.clear()
        found = _merge_cache[key] = merge_fields(merged, incoming)
    return found


# -- text codecs and raw values ---------------------------------------------------------------------

# Encodings that are ASCII-compatible single-byte or UTF-8: a backslash byte is always a
# separator, so values can be decoded whole. Anything else goes through pydicom.
_FAST_CODECS = {"iso8859": "latin_1", "latin_1": "latin_1", "UTF8": "utf_8", "utf_8": "utf_8"}
DEFAULT_ENCODINGS = ["iso8859"]


def codec_of(encodings: list[str]) -> str | None:
    """The Python codec for text in `encodings` when decoding whole values is safe, else None."""
    return _FAST_CODECS.get(encodings[0]) if len(encodings) == 1 else None


_NUMERIC_VRS = frozenset(vr for vr, type_ in vrs.BQ_TYPE.items() if type_ in (INTEGER, "FLOAT"))


def decode_raw(value: bytes, vr: str, little: bool, codec: str | None) -> list | None:
    """Non-empty raw value bytes -> str values (string VRs) or numbers; None for binary VRs.

    Raises NeedsPydicom for text VRs when `codec` is None (see `codec_of`)."""
    if vr in _NUMERIC_VRS:
        try:
            return vrs.decode_numbers(value, vr, little)
        except vrs.ValueConversionError:
            return [value.hex()]
    if vr in BINARY_VRS:
        return None
    if vr in TEXT_VRS:
        if codec is None:
            raise NeedsPydicom(vr)
        text = value.decode(codec, errors="replace")
    else:
        text = value.decode("latin_1")
    if vr == "PN":
        return [part.rstrip(" \x00") for part in text.split("\\")]
    return vrs.split_text(text, vr)


# -- the classifier ---------------------------------------------------------------------------------

# Fast-path kinds: standard columns, then (from PRIVATE_ASCII up) OtherElements entries.
(
    ASCII, TEXT, LONG_TEXT, NUMBERS, DATES, TIMES, DATETIMES, PERSON_NAMES,
    PRIVATE_ASCII, PRIVATE_TEXT, PRIVATE_NUMBERS,
) = range(11)
NO_FAST_PATH = -1
# What the walker does with an element the fast path passed by.
SKIP, PYDICOM, SEQUENCE, DROP, OTHER, STANDARD = range(6)
_NUMBER_TYPES = {"US": INTEGER, "UL": INTEGER, "SS": INTEGER, "SL": INTEGER, "FL": "FLOAT", "FD": "FLOAT"}
assert frozenset(_NUMBER_TYPES) == BINARY_NUMBER_VRS
# Date and time VRs whose column is of their own type: the fast path converts them in place.
_TEMPORAL_KINDS = {("DA", DATE): DATES, ("TM", TIME): TIMES, ("DT", TIMESTAMP): DATETIMES}


@dataclass(frozen=True, slots=True)
class FastPlan:
    """The fast path for one (tag, VR): raw bytes of a common element decoded in place."""

    kind: int  # ASCII ... PRIVATE_NUMBERS
    name: str  # the column, or the OtherElements Tag for private kinds
    field: Field  # the column's field (private kinds: OtherElements', unused)
    repeated: bool
    vr: str


@dataclass(frozen=True, slots=True)
class Plan:
    """How the walker handles elements of one (tag, VR as found): decided once, kept.

    The fast path's facts are repeated flat (`fast_kind` ... `fast_vr`) so that the walker's
    per-element loop reads them off the plan without a second object; `found` is the VR the
    plan was made for, which lets the walker keep one plan per tag and check it with a compare."""

    fast: FastPlan | None  # None: no fast path
    kind: int  # what the general path does (SKIP ... STANDARD)
    vr: str  # the VR the element is converted by (the dictionary's for implicit VR; "" unsettled)
    info: TagInfo | None
    dropped_name: str  # TagName in DroppedTags
    reference: str  # TagReference (without the path of enclosing sequences)
    found: str | None = None  # the VR as found (None: implicit)
    fast_kind: int = NO_FAST_PATH  # fast.kind, or NO_FAST_PATH
    name: str = ""  # fast.name
    field: Field | None = None  # fast.field
    repeated: bool = False  # fast.repeated
    fast_vr: str = ""  # fast.vr
    finite: bool = False  # NUMBERS of a FLOAT column: NaN and infinity go the general path


def _fast_plan(tag: int, vr: str | None) -> FastPlan | None:
    """The fast path's part of a plan: standard non-repeating-group elements whose VR is a plain
    string, charset text (short or long), binary number, date, time or person name of the
    column's own type, and private non-sequence elements of the string and number VRs. Anything
    else has none."""
    if not tag & 0xFFFF:
        return None
    info = tag_info(tag)
    if info is not None:
        if vr is None:
            if " or " in info.dictionary_vr:
                return None
            vr = info.dictionary_vr
        column_type = info.column_type
        if info.repeating_group or column_type is None:
            return None
        if vr == "PN" and column_type == RECORD:
            pn_field = _pn_field(info.keyword, REPEATED if info.repeated else NULLABLE)
            return FastPlan(PERSON_NAMES, info.keyword, pn_field, info.repeated, vr)
        field = _scalar(info.keyword, column_type, REPEATED if info.repeated else NULLABLE)
        if vr in ASCII_STRING_VRS and column_type == STRING:
            return FastPlan(ASCII, info.keyword, field, info.repeated, vr)
        if vr in SHORT_TEXT_VRS and column_type == STRING:
            return FastPlan(TEXT, info.keyword, field, info.repeated, vr)
        if vr in SINGLE_VALUED and column_type == STRING:
            return FastPlan(LONG_TEXT, info.keyword, field, info.repeated, vr)
        if _NUMBER_TYPES.get(vr) == column_type:
            return FastPlan(NUMBERS, info.keyword, field, info.repeated, vr)
        temporal = _TEMPORAL_KINDS.get((vr, column_type))
        if temporal is not None:
            return FastPlan(temporal, info.keyword, field, info.repeated, vr)
        return None
    if not (tag >> 16) & 1 or vr is None:
        return None
    if vr in ASCII_STRING_VRS:
        return FastPlan(PRIVATE_ASCII, tag_name(tag), OTHER_ELEMENTS_FIELD, True, vr)
    if vr in SHORT_TEXT_VRS:
        return FastPlan(PRIVATE_TEXT, tag_name(tag), OTHER_ELEMENTS_FIELD, True, vr)
    if vr in _NUMBER_TYPES:
        return FastPlan(PRIVATE_NUMBERS, tag_name(tag), OTHER_ELEMENTS_FIELD, True, vr)
    return None


def classify(tag: int, vr: str | None, resolved: bool = False) -> Plan:
    """The plan for an element of `tag` found with `vr`; `resolved`: the VR is pydicom's answer
    (after `ElementSource.resolve`), so UN means binary rather than "ask pydicom"."""
    info = tag_info(tag)
    as_converted = vr
    if as_converted is None and info is not None and " or " not in info.dictionary_vr:
        as_converted = info.dictionary_vr  # implicit VR, standard tag: the dictionary says it
    if not tag & 0xFFFF:
        kind = SKIP  # group length: structural
    elif as_converted is None or (as_converted == "UN" and not resolved):
        kind = PYDICOM
    elif as_converted == "SQ":
        kind = SEQUENCE
    elif as_converted in BINARY_VRS or (info is not None and info.column_type is None):
        kind = DROP
    elif info is None:
        kind = OTHER  # private, private creator, or no keyword: OtherElements keeps the text
    else:
        kind = STANDARD
    dropped_name = info.keyword if info is not None else tag_name(tag)
    fast = _fast_plan(tag, vr)
    if fast is None:
        return Plan(None, kind, as_converted or "", info, dropped_name, tag_reference(tag), vr)
    return Plan(
        fast, kind, as_converted or "", info, dropped_name, tag_reference(tag), vr,
        fast.kind, fast.name, fast.field, fast.repeated, fast.vr,
        fast.kind == NUMBERS and fast.field.type == "FLOAT",
    )


_PLANS: dict[tuple[int, str | None], Plan] = {}
_RESOLVED_PLANS: dict[tuple[int, str | None], Plan] = {}
# The first plan made for each tag, which the walker checks against the VR found (`Plan.found`):
# a tag is nearly always found with one VR, and an int key costs no tuple per element.
_PLAN_OF_TAG: dict[int, Plan] = {}


def plan_for(tag: int, vr: str | None) -> Plan:
    key = (tag, vr)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = classify(tag, vr)
        _PLAN_OF_TAG.setdefault(tag, plan)
    return plan


# -- the walker -------------------------------------------------------------------------------------


class InstanceState:
    """What one instance's conversion collects across nesting levels."""

    __slots__ = ("dropped", "max_depth", "tz_offset")

    def __init__(self, max_depth: int, tz_offset: str | None) -> None:
        self.dropped: list[dict[str, str]] = []
        self.tz_offset = tz_offset
        self.max_depth = max_depth


def walk(
    source: ElementSource,
    elements: Any,
    row: Row,
    fields: dict[str, Field],
    other: list[dict[str, Any]],
    encodings: list[str],
    depth: int,
    path: str,
    state: InstanceState,
) -> None:
    """Convert one dataset of `source` (at RECORD nesting `depth`) into `row` and `fields`."""
    codec = codec_of(encodings)
    plan_of_tag = _PLAN_OF_TAG
    little = source.little
    numbers = vrs.NUMBER_UNPACKERS[little]
    dropped = state.dropped
    isfinite = math.isfinite
    for tag, element in source.entries(elements):
        vr = element[0]
        try:
            plan = plan_of_tag[tag]
            if plan.found != vr:
                plan = plan_for(tag, vr)
        except KeyError:
            plan = plan_for(tag, vr)
        fast_kind = plan.fast_kind
        value = element[1]
        if fast_kind >= 0 and value:
            # The fast path: raw bytes of a common element (see the module docstring), decoded in
            # place, the commonest kinds first. Anything it cannot settle (a value that does not
            # fit, a keyword taken already, text without a plain codec) falls through to the
            # general path below, which decides it as it would have without the fast path.
            if fast_kind == ASCII or fast_kind == TEXT:
                name = plan.name
                if name not in row and (fast_kind == ASCII or codec is not None):
                    if fast_kind == ASCII:
                        text = value.decode("latin_1")
                    else:
                        text = value.decode(codec, errors="replace")  # type: ignore[arg-type]
                    if "\\" not in text:
                        fields[name] = plan.field  # type: ignore[assignment]
                        row[name] = [text.strip(" \x00")] if plan.repeated else text.strip(" \x00")
                        continue
                    if plan.repeated:
                        fields[name] = plan.field  # type: ignore[assignment]
                        row[name] = [v.strip(" \x00") for v in text.split("\\")]
                        continue
            elif fast_kind == PRIVATE_NUMBERS:
                by_length = numbers[plan.fast_vr]
                unpack = by_length.get(len(value)) or vrs.number_unpacker(plan.fast_vr, little, len(value))
                if unpack is not None:
                    # NaN and infinity too: the general path writes the same text for them.
                    other.append({"Tag": plan.name, "Data": list(map(str, unpack(value)))})
                    continue
            elif fast_kind == NUMBERS:
                name = plan.name
                if name not in row:
                    by_length = numbers[plan.fast_vr]
                    unpack = by_length.get(len(value)) or vrs.number_unpacker(plan.fast_vr, little, len(value))
                    if unpack is not None:
                        unpacked = unpack(value)
                        # The sum of finite numbers may overflow: that element only goes the general path.
                        if not plan.finite or isfinite(sum(unpacked)):
                            if plan.repeated:
                                fields[name] = plan.field  # type: ignore[assignment]
                                row[name] = list(unpacked)
                                continue
                            if len(unpacked) == 1:
                                fields[name] = plan.field  # type: ignore[assignment]
                                row[name] = unpacked[0]
                                continue
            elif fast_kind >= PRIVATE_ASCII:  # PRIVATE_ASCII, PRIVATE_TEXT: OtherElements {Tag, Data}
                if fast_kind == PRIVATE_ASCII or codec is not None:
                    if fast_kind == PRIVATE_ASCII:
                        text = value.decode("latin_1")
                    else:
                        text = value.decode(codec, errors="replace")  # type: ignore[arg-type]
                    if "\\" in text:
                        other.append({"Tag": plan.name, "Data": [v.strip(" \x00") for v in text.split("\\")]})
                    else:
                        other.append({"Tag": plan.name, "Data": [text.strip(" \x00")]})
                    continue
            else:  # LONG_TEXT, DATES, TIMES, DATETIMES, PERSON_NAMES
                name = plan.name
                if name not in row:
                    typed = _fast_typed(plan, value, codec, depth, state)
                    if typed is not None:
                        fields[name] = plan.field  # type: ignore[assignment]
                        row[name] = typed
                        continue
        elif fast_kind >= 0 and value is not None:  # empty raw bytes: an element without values
            if fast_kind >= PRIVATE_ASCII:
                other.append({"Tag": plan.name, "Data": []})
                continue
            name = plan.name
            # (A person name needs two RECORD levels below this one: see standard_values.)
            if name not in row and (fast_kind != PERSON_NAMES or depth + 2 <= state.max_depth):
                fields[name] = plan.field  # type: ignore[assignment]
                continue
        kind = plan.kind
        if kind == PYDICOM:
            try:
                element = source.resolve(tag, element)
            except Undecodable as exc:  # keep its text rather than lose it
                if exc.text is None:
                    dropped.append({"TagName": plan.dropped_name, "TagReference": path + plan.reference})
                else:
                    other.append({"Tag": tag_name(tag), "Data": exc.text})
                continue
            key = (tag, element[0])
            resolved_plan = _RESOLVED_PLANS.get(key)
            if resolved_plan is None:
                resolved_plan = _RESOLVED_PLANS[key] = classify(tag, element[0], resolved=True)
            plan = resolved_plan
            kind = plan.kind
        if kind == STANDARD:  # a standard element: classify gave it its TagInfo
            standard_values(
                tag, source.values(element, plan.vr, codec), plan.info,  # type: ignore[arg-type]
                row, fields, other, depth, path, state,
            )
        elif kind == SEQUENCE:
            _sequence(source, tag, element, plan, row, fields, encodings, depth, path, state)
        elif kind == DROP:
            dropped.append({"TagName": plan.dropped_name, "TagReference": path + plan.reference})
        elif kind == OTHER:
            found = source.values(element, plan.vr, codec)
            if found is None:
                dropped.append({"TagName": plan.dropped_name, "TagReference": path + plan.reference})
            else:
                other.append({"Tag": tag_name(tag), "Data": [_text(v) for v in found]})
        # SKIP: nothing to export


def _fast_typed(plan: Plan, value: bytes, codec: str | None, depth: int, state: InstanceState) -> Any:
    """The row value of a non-empty LONG_TEXT, DATES, TIMES, DATETIMES or PERSON_NAMES element
    on the fast path (what standard_values makes of it), or None: the general path decides."""
    kind = plan.fast_kind
    repeated = plan.repeated
    if kind == LONG_TEXT:  # one value, trailing padding only (vr.split_text)
        if plan.fast_vr not in TEXT_VRS:
            text = value.decode("latin_1")
        elif codec is not None:
            text = value.decode(codec, errors="replace")
        else:
            return None
        return [text.rstrip(" \x00")] if repeated else text.rstrip(" \x00")
    if kind == PERSON_NAMES:
        if codec is None or depth + 2 > state.max_depth:
            return None
        try:
            text = value.decode(codec, errors="replace")
            names = [vrs.person_name(_pn_groups(v.rstrip(" \x00"))) for v in text.split("\\")]
        except vrs.ValueConversionError:
            return None
        if repeated:
            return names
        return names[0] if len(names) == 1 else None
    text = value.decode("latin_1")  # DATES, TIMES, DATETIMES
    if "\\" not in text:
        typed = _temporal(kind, text.strip(" \x00"), state.tz_offset)
        return [typed] if repeated and typed is not None else typed
    if not repeated:
        return None
    values = [_temporal(kind, v.strip(" \x00"), state.tz_offset) for v in text.split("\\")]
    return None if None in values else values


# DA and TM texts -> their column text (None: not a date or time), kept: the instances of a
# study repeat its dates and times. Emptied when they outgrow their bound.
_DATES: dict[str, str | None] = {}
_TIMES: dict[str, str | None] = {}


def _temporal(kind: int, text: str, tz_offset: str | None) -> str | None:
    """A DA, TM or DT value's column text (`_typed`'s), or None when it is not one."""
    if kind == DATETIMES:
        try:
            return vrs.to_bq_timestamp(text, tz_offset)
        except vrs.ValueConversionError:
            return None
    known = _DATES if kind == DATES else _TIMES
    try:
        return known[text]
    except KeyError:
        pass
    try:
        found: str | None = vrs.to_bq_date(text) if kind == DATES else vrs.to_bq_time(text)
    except vrs.ValueConversionError:
        found = None
    if len(known) >= _CACHE_LIMIT:
        known.clear()
    known[text] = found
    return found


def _sequence(
    source: ElementSource,
    tag: int,
    element: Element,
    plan: Plan,
    row: Row,
    fields: dict[str, Field],
    encodings: list[str],
    depth: int,
    path: str,
    state: InstanceState,
) -> None:
    info = plan.info
    # A keyword column taken already in this dataset (a second element with the same
    # keyword) keeps its items under its tag's name, as a private sequence does.
    name = info.keyword if info is not None and info.keyword not in fields else tag_name(tag)
    if depth + 1 > state.max_depth:
        state.dropped.append({"TagName": plan.dropped_name, "TagReference": path + plan.reference})
        return
    items = source.items(element)
    item_rows = []
    item_fields: tuple[Field, ...] = ()
    child_path = f"{path}{plan.reference}/"
    for index, item in enumerate(items):
        item_row: Row = {}
        these: dict[str, Field] = {}
        item_other: list[dict[str, Any]] = []
        walk(
            source, item, item_row, these, item_other, source.encodings(item, encodings), depth + 1,
            f"{child_path}{index}/", state,
        )
        if item_other:
            item_row["OtherElements"] = item_other
            these["OtherElements"] = OTHER_ELEMENTS_FIELD
        item_rows.append(item_row)
        item_fields = merge_item_fields(item_fields, ordered_fields(these))
    if not item_fields:
        # No item holds any value: there is nothing to export, and BigQuery has no RECORD
        # without sub-fields, so an empty sequence gets no column.
        return
    fields[name] = sequence_field(name, item_fields)
    if item_rows:
        row[name] = item_rows


def standard_values(
    tag: int,
    values: list | None,
    info: TagInfo,
    row: Row,
    fields: dict[str, Field],
    other: list[dict[str, Any]],
    depth: int,
    path: str,
    state: InstanceState,
) -> None:
    """A standard element's decoded values -> its column (or OtherElements when they do not fit)."""
    if values is None:  # binary in disguise: an explicit VR that has no column type
        state.dropped.append({"TagName": info.keyword, "TagReference": path + tag_reference(tag)})
        return
    column_type = info.column_type
    assert column_type is not None  # classify sends elements without a column type to DROP
    name = info.keyword
    repeated = info.repeated
    if info.repeating_group:
        needed_depth = depth + (3 if column_type == RECORD else 1)
    else:
        needed_depth = depth + (2 if column_type == RECORD else 0)
    if needed_depth > state.max_depth:
        state.dropped.append({"TagName": info.keyword, "TagReference": path + tag_reference(tag)})
        return
    if info.repeating_group:
        field = _repeating_group_field(name, column_type, repeated)
    elif column_type == RECORD:
        field = _pn_field(name, REPEATED if repeated else NULLABLE)
    else:
        field = _scalar(name, column_type, REPEATED if repeated else NULLABLE)
    existing = row.get(name)
    if existing is not None and not info.repeating_group:
        # The same keyword twice in one dataset (masked repeaters): keep the second as text.
        other.append({"Tag": tag_name(tag), "Data": [_text(v) for v in values]})
        return
    fields[name] = field
    if not values:
        return
    try:
        typed = _typed(values, column_type, state)
        if not repeated and len(typed) > 1:
            raise vrs.ValueConversionError(f"{len(typed)} values in a VM 1 element")
    except vrs.ValueConversionError:
        other.append({"Tag": tag_name(tag), "Data": [_text(v) for v in values]})
        return
    value: Any = typed if repeated else typed[0]
    if info.repeating_group:
        record = {"Id": f"{tag >> 16:04X}", "Value": value}
        if existing is None:
            row[name] = [record]
        else:
            existing.append(record)
    else:
        row[name] = value


def _typed(values: list, column_type: str, state: InstanceState) -> list:
    """Values decoded by their actual VR -> values of the column's type."""
    if column_type == STRING:
        return [v if isinstance(v, str) else _text(v) for v in values]
    if column_type == "DATE":
        return [vrs.to_bq_date(_as_str(v)) for v in values]
    if column_type == "TIME":
        return [vrs.to_bq_time(_as_str(v)) for v in values]
    if column_type == TIMESTAMP:
        return [vrs.to_bq_timestamp(_as_str(v), state.tz_offset) for v in values]
    if column_type == INTEGER:
        return [_as_int(v) for v in values]
    if column_type == "FLOAT":
        return [_as_float(v) for v in values]
    if column_type == RECORD:  # person names
        return [vrs.person_name(_pn_groups(v)) for v in values]
    raise vrs.ValueConversionError(f"no conversion to {column_type}")


# -- one instance -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstanceParts:
    """One instance as an adapter hands it to the walker: its datasets in order (the File Meta
    Information, then the body), each with the source that reads it and its character sets, and
    the TimezoneOffsetFromUTC values (for DT values without an offset)."""

    datasets: list[tuple[ElementSource, Any, list[str]]]
    offset_values: list | None


def walk_instance(parts: InstanceParts, max_depth: int, **facts: Unpack[StoredFacts]) -> ConvertedInstance:
    """One instance's row: its datasets walked in order into one row, then closed (`finish`)."""
    offset_values = parts.offset_values
    state = InstanceState(max_depth, vrs.parse_offset(offset_values[0] if offset_values else None))
    row: Row = {}
    fields: dict[str, Field] = {}
    other: list[dict[str, Any]] = []
    for source, elements, encodings in parts.datasets:
        walk(source, elements, row, fields, other, encodings, 0, "", state)
    return finish(
        row, fields, other, state,
        facts.get("blob_storage_size"), facts.get("last_updated"), facts.get("storage_class", "STANDARD"),
    )


def finish(
    row: Row,
    fields: dict[str, Field],
    other: list[dict[str, Any]],
    state: InstanceState,
    blob_storage_size: int | None,
    last_updated: datetime | None,
    storage_class: str,
) -> ConvertedInstance:
    """Close a flattened row: OtherElements, DroppedTags and the trailing non-DICOM columns."""
    if other:
        row["OtherElements"] = other
        fields["OtherElements"] = OTHER_ELEMENTS_FIELD
    if state.dropped:
        row["DroppedTags"] = state.dropped
        fields["DroppedTags"] = DROPPED_TAGS_FIELD
    row["Type"] = "CREATE"
    if last_updated is not None:
        row["LastUpdated"] = timestamp_text(last_updated)
    row["StorageClass"] = storage_class
    if blob_storage_size is not None:
        row["BlobStorageSize"] = int(blob_storage_size)
    for trailing in TRAILING_FIELDS:
        fields[trailing.name] = trailing
    ordered = ordered_fields(fields)
    return ConvertedInstance(
        row,
        ordered,
        _single(row.get("StudyInstanceUID")),
        _single(row.get("SeriesInstanceUID")),
        _single(row.get("SOPInstanceUID")),
        holds_no_float(ordered),
    )


def timestamp_text(moment: datetime) -> str:
    """A BigQuery TIMESTAMP literal in UTC (naive times are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _single(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # a person name record
        return json.dumps(value, sort_keys=True)
    return repr(value) if isinstance(value, float) else str(value)


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise vrs.ValueConversionError(f"expected text, got {type(value).__name__}")
    return value


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            return int(str(value).strip())
        except ValueError:
            raise vrs.ValueConversionError("not an integer") from None
    return value


def _as_float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise vrs.ValueConversionError("not a number") from None
    if not math.isfinite(number):
        raise vrs.ValueConversionError("non-finite number")
    return number


def _pn_groups(value: Any) -> list[str]:
    if not isinstance(value, str):
        raise vrs.ValueConversionError("person name is not text")
    groups = value.split("=")
    if len(groups) > 3:
        raise vrs.ValueConversionError(f"person name with {len(groups)} component groups")
    return groups

