"""One DICOM instance -> one row of the Cloud Healthcare BigQuery table, and the schema it needs.

Rules (DESIGN.md section 3, and Google's "Understanding the BigQuery DICOM schema"):
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
Both the flattened table and the single-JSON-column table (`schemaJson`) are produced here.
Files we parse ourselves take a faster route to the same flattened row, without pydicom objects
(`convert_lean`, lean_convert.py); it shares the value decoding and column rules below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_dicom.dicom import vr as vrs
from airflow_provider_dicom.dicom.schema import (
    INTEGER,
    JSON,
    NULLABLE,
    RECORD,
    REPEATED,
    STRING,
    TIMESTAMP,
    Field,
    _rank,
    merge_fields,
)
from airflow_provider_dicom.dicom.tags import TagInfo, tag_info, tag_name, tag_reference
from airflow_provider_dicom.model.options import SchemaVariant

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from airflow_provider_dicom.dicom.scan import LeanInstance

# BigQuery allows 15 levels of nested RECORDs; deeper content is dropped (and listed).
MAX_NESTING = 15

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
JSON_SCHEMA_FIELDS = (
    Field("StudyInstanceUID", STRING, NULLABLE),
    Field("SeriesInstanceUID", STRING, NULLABLE),
    Field("SOPInstanceUID", STRING, NULLABLE),
    Field("SourceDicomStore", STRING, NULLABLE),
    Field("Metadata", JSON, NULLABLE),
    Field("StructuredStorageSize", INTEGER, NULLABLE),
    Field("DroppedTags", STRING, REPEATED),
    Field("StorageClass", STRING, NULLABLE),
    Field("LastUpdated", TIMESTAMP, NULLABLE),
    Field("BlobStorageSize", INTEGER, NULLABLE),
    Field("Type", STRING, NULLABLE),
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
_order_cache: dict[tuple[str, ...], tuple[str, ...]] = {}
_record_cache: dict[tuple[str, tuple[Field, ...]], Field] = {}
_merge_cache: dict[tuple[tuple[Field, ...], tuple[Field, ...]], tuple[Field, ...]] = {}


def ordered_fields(fields: dict[str, Field]) -> tuple[Field, ...]:
    """The fields of one dataset in canonical column order."""
    names = tuple(fields)
    order = _order_cache.get(names)
    if order is None:
        if len(_order_cache) >= _CACHE_LIMIT:
            _order_cache.clear()
        order = _order_cache[names] = tuple(sorted(names, key=_rank))
    return tuple([fields[name] for name in order])


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


@dataclass(slots=True)
class ConvertedInstance:
    row: dict[str, Any]
    fields: tuple[Field, ...]
    study_uid: str | None
    series_uid: str | None
    sop_uid: str | None


# Encodings that are ASCII-compatible single-byte or UTF-8: a backslash byte is always a
# separator, so values can be decoded whole. Anything else goes through pydicom.
_FAST_CODECS = {"iso8859": "latin_1", "latin_1": "latin_1", "UTF8": "utf_8", "utf_8": "utf_8"}
_DEFAULT_ENCODINGS = ["iso8859"]


def _encodings_of(ds: Dataset, inherited: list[str]) -> list[str]:
    raw = ds._dict.get(0x00080005)
    if raw is None:
        return inherited
    from pydicom.charset import convert_encodings

    value = raw.value
    if isinstance(value, bytes):
        names = [part.strip(" \x00") for part in value.decode("latin_1").split("\\")]
    elif value is None:
        names = []
    else:
        names = [value] if isinstance(value, str) else list(value)
    if not any(names):
        return _DEFAULT_ENCODINGS
    return convert_encodings(names if len(names) > 1 else names[0])


class NeedsPydicom(Exception):
    """A value only pydicom can decode (text in a character set with code extensions, a VR it
    must work out): the general route asks pydicom for it; the lean route converts the whole
    instance the general way."""


def _codec_of(encodings: list[str]) -> str | None:
    """The Python codec for text in `encodings` when decoding whole values is safe, else None."""
    return _FAST_CODECS.get(encodings[0]) if len(encodings) == 1 else None


_NUMERIC_VRS = frozenset(vr for vr, type_ in vrs.BQ_TYPE.items() if type_ in (INTEGER, "FLOAT"))


def decode_raw(value: bytes, vr: str, little: bool, codec: str | None) -> list | None:
    """Non-empty raw value bytes -> str values (string VRs) or numbers; None for binary VRs.

    Raises NeedsPydicom for text VRs when `codec` is None (see `_codec_of`)."""
    if vr in _NUMERIC_VRS:
        try:
            return vrs.decode_numbers(value, vr, little)
        except vrs.ValueConversionError:
            return [value.hex()]
    if vr in vrs.BINARY_VRS:
        return None
    if vr in vrs.TEXT_VRS:
        if codec is None:
            raise NeedsPydicom(vr)
        text = value.decode(codec, errors="replace")
    else:
        text = value.decode("latin_1")
    if vr in vrs.SINGLE_VALUED:
        return vrs.split_text(text, vr)
    if vr == "PN":
        return [part.rstrip(" \x00") for part in text.split("\\")]
    return vrs.split_text(text, vr)


def lean_values(element: tuple, vr: str, little: bool, codec: str | None) -> list | None:
    """A scanned element's values, as `_values` gives them for the same raw element."""
    value = element[1]
    if value is None:
        if not element[3]:
            return []
        raise NeedsPydicom("a value not read (deferred)")
    if value.__class__ is list:
        raise NeedsPydicom("a sequence where a value was expected")
    if not value:
        return []
    return decode_raw(value, vr, little, codec)


_lean_encodings: dict[bytes, list[str]] = {}


def lean_encodings(elements: dict, inherited: list[str]) -> list[str]:
    """The character sets of a scanned dataset, as `_encodings_of` gives them."""
    element = elements.get(0x00080005)
    if element is None:
        return inherited
    value = element[1]
    if not isinstance(value, bytes):
        raise NeedsPydicom("Specific Character Set is not text")
    found = _lean_encodings.get(value)
    if found is None:
        names = [part.strip(" \x00") for part in value.decode("latin_1").split("\\")]
        if not any(names):
            return _DEFAULT_ENCODINGS
        from pydicom.charset import convert_encodings

        from airflow_provider_dicom.dicom.read import quiet_pydicom

        with quiet_pydicom():  # a misspelt name is corrected with a warning; the row says enough
            found = convert_encodings(names if len(names) > 1 else names[0])
        if len(_lean_encodings) >= _CACHE_LIMIT:
            _lean_encodings.clear()
        _lean_encodings[value] = found
    return found


_RawDataElement: type | None = None  # pydicom's, bound on first use to keep imports lazy
_MISSING = object()
# Fast-path kinds: standard columns, then (from _PRIVATE_ASCII up) OtherElements entries.
_ASCII, _TEXT, _NUMBERS, _PRIVATE_ASCII, _PRIVATE_TEXT, _PRIVATE_NUMBERS = range(6)
_ASCII_VRS = frozenset(("AE", "AS", "CS", "DS", "IS", "UI"))
_TEXT_VRS = frozenset(("SH", "LO", "UC"))
_NUMBER_TYPES = {"US": INTEGER, "UL": INTEGER, "SS": INTEGER, "SL": INTEGER, "FL": "FLOAT", "FD": "FLOAT"}
_PLANS: dict[tuple[int, str | None], tuple | None] = {}


def _make_plan(tag: int, vr: str | None) -> tuple | None:
    """How the fast path handles (tag, VR), or None to leave it to the general path.

    Covered: standard non-repeating-group elements whose VR is a plain string, charset text or
    binary number of the column's own type, and private non-sequence elements of those VRs."""
    if not tag & 0xFFFF:
        return None
    info = tag_info(tag)
    if info is not None:
        if vr is None:
            if " or " in info.dictionary_vr:
                return None
            vr = info.dictionary_vr
        if info.repeating_group or info.column_type is None:
            return None
        mode = REPEATED if info.repeated else NULLABLE
        if vr in _ASCII_VRS and info.column_type == STRING:
            return (_ASCII, info.keyword, _scalar(info.keyword, STRING, mode), info.repeated, vr)
        if vr in _TEXT_VRS and info.column_type == STRING:
            return (_TEXT, info.keyword, _scalar(info.keyword, STRING, mode), info.repeated, vr)
        if _NUMBER_TYPES.get(vr) == info.column_type:
            return (_NUMBERS, info.keyword, _scalar(info.keyword, info.column_type, mode), info.repeated, vr)
        return None
    if not (tag >> 16) & 1 or vr is None:
        return None
    if vr in _ASCII_VRS:
        return (_PRIVATE_ASCII, tag_name(tag), None, True, vr)
    if vr in _TEXT_VRS:
        return (_PRIVATE_TEXT, tag_name(tag), None, True, vr)
    if vr in _NUMBER_TYPES:
        return (_PRIVATE_NUMBERS, tag_name(tag), None, True, vr)
    return None


class _InstanceState:
    """What one instance's conversion collects across nesting levels."""

    __slots__ = ("dropped", "tz_offset", "max_depth")

    def __init__(self, max_depth: int, tz_offset: str | None) -> None:
        self.dropped: list[dict[str, str]] = []
        self.tz_offset = tz_offset
        self.max_depth = max_depth


class InstanceConverter:
    """Converts pydicom Datasets into rows of one table variant (flattened or JSON).

    One converter serves a whole export: it holds no per-instance state, only caches of
    dictionary facts and schema fields, which makes repeated instances cheap.
    """

    def __init__(self, schema: str | SchemaVariant = SchemaVariant.FLATTENED, max_depth: int = MAX_NESTING):
        self.schema = SchemaVariant.parse(schema)
        if not 1 <= max_depth <= MAX_NESTING:
            raise ValueError(f"max_depth must be between 1 and {MAX_NESTING}, got {max_depth!r}")
        self.max_depth = max_depth

    def convert(
        self,
        ds: Dataset,
        *,
        blob_storage_size: int | None = None,
        last_updated: datetime | None = None,
        storage_class: str = "STANDARD",
        source_store: str | None = None,
    ) -> ConvertedInstance:
        if self.schema is SchemaVariant.JSON:
            return self._convert_json(ds, blob_storage_size, last_updated, storage_class, source_store)
        global _RawDataElement
        if _RawDataElement is None:
            from pydicom.dataelem import RawDataElement

            _RawDataElement = RawDataElement
        state = _InstanceState(self.max_depth, None)
        offset_raw = ds._dict.get(0x00080201)
        if offset_raw is not None:
            offset_values = self._values(
                ds, offset_raw, "SH", _DEFAULT_ENCODINGS, getattr(offset_raw, "is_raw", False)
            )
            state.tz_offset = vrs.parse_offset(offset_values[0] if offset_values else None)
        encodings = _encodings_of(ds, _DEFAULT_ENCODINGS)
        row: dict[str, Any] = {}
        fields: dict[str, Field] = {}
        other: list[dict[str, Any]] = []
        file_meta = getattr(ds, "file_meta", None)
        if file_meta is not None:
            self._convert_into(file_meta, row, fields, other, _DEFAULT_ENCODINGS, 0, "", state)
        self._convert_into(ds, row, fields, other, encodings, 0, "", state)
        return _finish(row, fields, other, state, blob_storage_size, last_updated, storage_class)

    def convert_lean(
        self,
        lean: LeanInstance,
        *,
        blob_storage_size: int | None = None,
        last_updated: datetime | None = None,
        storage_class: str = "STANDARD",
    ) -> ConvertedInstance:
        """The same row as `convert` on the Dataset pydicom would build from the same file, made
        from a scanned header (scan.py) without pydicom objects: the export's fast route.

        Flattened table only. Raises NeedsPydicom when the instance holds something only pydicom
        can decode; convert it with `convert(parse.to_dataset(...))` then."""
        if self.schema is SchemaVariant.JSON:
            raise NeedsPydicom("the JSON table is made by pydicom's to_json_dict")
        from airflow_provider_dicom.dicom.lean_convert import convert_elements

        state = _InstanceState(self.max_depth, None)
        body = lean.body
        offset = body.get(0x00080201)
        if offset is not None:
            offset_values = lean_values(offset, "SH", True, "latin_1")
            state.tz_offset = vrs.parse_offset(offset_values[0] if offset_values else None)
        row: dict[str, Any] = {}
        fields: dict[str, Field] = {}
        other: list[dict[str, Any]] = []
        convert_elements(self, lean.meta, row, fields, other, _DEFAULT_ENCODINGS, True, 0, "", state)
        encodings = lean_encodings(body, _DEFAULT_ENCODINGS)
        convert_elements(self, body, row, fields, other, encodings, lean.little, 0, "", state)
        return _finish(row, fields, other, state, blob_storage_size, last_updated, storage_class)

    # -- flattened ---------------------------------------------------------------------------

    def _convert_into(
        self,
        ds: Dataset,
        row: dict[str, Any],
        fields: dict[str, Field],
        other: list[dict[str, Any]],
        encodings: list[str],
        depth: int,
        path: str,
        state: _InstanceState,
    ) -> None:
        """Convert the elements of `ds` (at RECORD nesting `depth`) into `row` and `fields`."""
        codec = _FAST_CODECS.get(encodings[0]) if len(encodings) == 1 else None
        plans = _PLANS
        # pydicom replaces a raw element by its converted one in place when we ask it to convert;
        # that changes values, not keys, so iterating the live dict is safe.
        for tag, elem in ds._dict.items():
            vr = elem.VR
            if elem.__class__ is _RawDataElement and elem.value:
                # Fast path for the common elements (see _make_plan); anything unusual falls through.
                key = (tag & 0xFFFFFFFF, vr)  # a plain int: BaseTag's Python-level __eq__ is slow
                plan = plans.get(key, _MISSING)
                if plan is _MISSING:
                    plan = plans[key] = _make_plan(tag, vr)
                if plan is not None:
                    kind, name, field, repeated, plan_vr = plan
                    value = elem.value
                    if kind == _NUMBERS or kind == _PRIVATE_NUMBERS:
                        try:
                            values = vrs.decode_numbers(value, plan_vr, elem.is_little_endian)
                        except vrs.ValueConversionError:
                            values = None
                        else:
                            if (plan_vr == "FD" or plan_vr == "FL") and not vrs.all_finite(values):
                                values = None
                    elif kind == _TEXT or kind == _PRIVATE_TEXT:
                        values = None if codec is None else value.decode(codec, errors="replace").split("\\")
                    else:
                        values = value.decode("latin_1").split("\\")
                    if values is not None:
                        if kind >= _PRIVATE_ASCII:
                            if kind == _PRIVATE_NUMBERS:
                                other.append({"Tag": name, "Data": list(map(str, values))})
                            else:
                                other.append({"Tag": name, "Data": [v.strip(" \x00") for v in values]})
                            continue
                        if name not in row and (repeated or len(values) == 1):
                            fields[name] = field
                            if kind != _NUMBERS:
                                values = [v.strip(" \x00") for v in values]
                            row[name] = values if repeated else values[0]
                            continue
            if not tag & 0xFFFF:
                continue  # group length: structural
            info = tag_info(tag)
            raw = getattr(elem, "is_raw", False)
            if raw and vr is None and info is not None and " or " not in info.dictionary_vr:
                vr = info.dictionary_vr  # implicit VR, standard tag: the dictionary says it
            if raw and (vr is None or vr == "UN"):
                # Implicit VR, or UN for a tag whose real VR is known: let pydicom work out the VR
                # (private dictionaries, ambiguous US/SS from PixelRepresentation, UN replacement).
                try:
                    elem = ds[tag]
                except Exception:  # a value pydicom itself cannot decode: keep its text
                    self._keep_raw_text(elem, other, path, state)
                    continue
                vr = elem.VR
                raw = False
            if vr == "SQ":
                self._sequence(ds, tag, elem, info, row, fields, other, encodings, depth, path, state)
                continue
            if info is None or vr in vrs.BINARY_VRS or info.column_type is None:
                if vr in vrs.BINARY_VRS or (info is not None and info.column_type is None):
                    self._drop(tag, info, path, state)
                    continue
                # Private, private creator, or no keyword: OtherElements keeps the text.
                values = self._values(ds, elem, vr, encodings, raw)
                if values is None:
                    self._drop(tag, info, path, state)
                else:
                    other.append({"Tag": tag_name(tag), "Data": [_text(v) for v in values]})
                continue
            self._standard(ds, tag, elem, vr, info, row, fields, other, encodings, depth, path, raw, state)

    def _standard(self, ds, tag, elem, vr, info: TagInfo, row, fields, other, encodings, depth, path, raw, state):
        self._standard_values(tag, self._values(ds, elem, vr, encodings, raw), info, row, fields, other, depth, path, state)

    def _standard_values(self, tag, values, info: TagInfo, row, fields, other, depth, path, state) -> None:
        """A standard element's decoded values -> its column (or OtherElements when they do not fit)."""
        if values is None:  # binary in disguise: an explicit VR that has no column type
            self._drop(tag, info, path, state)
            return
        column_type = info.column_type
        name = info.keyword
        repeated = info.repeated
        if info.repeating_group:
            needed_depth = depth + (3 if column_type == RECORD else 1)
        else:
            needed_depth = depth + (2 if column_type == RECORD else 0)
        if needed_depth > state.max_depth:
            self._drop(tag, info, path, state)
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
            typed = self._typed(values, column_type, state)
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

    def _typed(self, values: list, column_type: str, state: _InstanceState) -> list:
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

    def _values(self, ds, elem, vr: str, encodings: list[str], raw: bool) -> list | None:
        """The element's values as str (string VRs) or numbers; None for binary content."""
        if raw:
            value = elem.value
            if value is None and not elem.length:
                return []  # pydicom's reader gives empty values as None
            if value is None:  # deferred (e.g. a large value past a size limit): read it now
                elem = ds[elem.tag]
                return self._values(ds, elem, elem.VR, encodings, False)
            if not value:
                return []
            try:
                return decode_raw(value, vr, elem.is_little_endian, _codec_of(encodings))
            except NeedsPydicom:  # text in a character set only pydicom decodes
                converted = ds[elem.tag]
                return self._values(ds, converted, vr, encodings, False) or []
        # An already converted pydicom DataElement.
        value = elem.value
        if vr in vrs.BINARY_VRS:
            return None
        if value is None or value == "" or value == b"":
            return []
        from pydicom.multival import MultiValue

        items = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
        if vr == "AT":
            return [int(v) for v in items]
        if vr == "PN":
            return [_pn_text(v) for v in items]
        if isinstance(items[0], bytes):
            return None
        return [v if isinstance(v, (int, float)) and vr not in ("DS", "IS") else str(v) for v in items]

    def _sequence(self, ds, tag, elem, info, row, fields, other, encodings, depth, path, state) -> None:
        # A keyword column taken already in this dataset (a second element with the same
        # keyword) keeps its items under its tag's name, as a private sequence does.
        name = info.keyword if info is not None and info.keyword not in fields else tag_name(tag)
        if depth + 1 > state.max_depth:
            self._drop(tag, info, path, state)
            return
        if getattr(elem, "is_raw", False):
            elem = ds[tag]
        items = elem.value or []
        item_rows = []
        item_fields: tuple[Field, ...] = ()
        child_path = f"{path}{tag_reference(tag)}/"
        for index, item in enumerate(items):
            item_row: dict[str, Any] = {}
            these: dict[str, Field] = {}
            item_other: list[dict[str, Any]] = []
            # pydicom decodes an item's text with its parent's character set; say what that is,
            # whoever parsed the file.
            inherited = item._parent_encoding
            if (inherited if isinstance(inherited, list) else [inherited]) != encodings:
                item._parent_encoding = encodings
            item_encodings = _encodings_of(item, encodings)
            self._convert_into(
                item, item_row, these, item_other, item_encodings, depth + 1, f"{child_path}{index}/", state
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

    def _drop(self, tag: int, info: TagInfo | None, path: str, state: _InstanceState) -> None:
        state.dropped.append(
            {"TagName": info.keyword if info is not None else tag_name(tag), "TagReference": path + tag_reference(tag)}
        )

    def _keep_raw_text(self, elem, other, path, state) -> None:
        value = elem.value
        if isinstance(value, bytes):
            other.append({"Tag": tag_name(elem.tag), "Data": [value.decode("latin_1").strip(" \x00")]})
        else:
            self._drop(elem.tag, None, path, state)

    # -- JSON variant ------------------------------------------------------------------------

    def _convert_json(self, ds, blob_storage_size, last_updated, storage_class, source_store) -> ConvertedInstance:
        dropped: list[str] = []

        def bulk(element) -> str:
            dropped.append(tag_reference(element.tag))
            return ""

        file_meta = getattr(ds, "file_meta", None)
        from airflow_provider_dicom.dicom.parse import CUT_SEQUENCES

        # Sequences nested deeper than the reader walks (scan.MAX_SEQUENCE_DEPTH): listed, not lost silently.
        dropped.extend(tag_reference(tag) for tag in getattr(ds, CUT_SEQUENCES, ()))
        # Deferred: a raw element with a length but no value read (pydicom also gives empty
        # elements a None value, with length 0; those are kept as empty values).
        deferred = [
            tag for tag, elem in ds._dict.items()
            if getattr(elem, "is_raw", False) and elem.value is None and elem.length
        ]
        if deferred:
            # Pixel data the reader skipped: listed as dropped, never read just to be dropped.
            from pydicom.dataset import Dataset

            dropped.extend(tag_reference(tag) for tag in deferred)
            kept = Dataset({tag: elem for tag, elem in ds._dict.items() if tag not in deferred})
            kept.set_original_encoding(*ds.original_encoding[:2], None)
            ds = kept
        metadata = ds.to_json_dict(bulk_data_threshold=1, bulk_data_element_handler=bulk, suppress_invalid_tags=True)
        for tag, elem in ds._dict.items():
            key = tag_reference(tag)
            if key in metadata or key in dropped or not tag & 0xFFFF:
                continue
            # pydicom could not convert this value (e.g. IS "1A"): keep its text rather than lose it,
            # as the flattened table keeps it in OtherElements.
            text = _raw_text(elem)
            if text is not None:
                metadata[key] = {"vr": elem.VR or "UN", "Value": text}
        if file_meta is not None:
            metadata.update(file_meta.to_json_dict(bulk_data_threshold=1, bulk_data_element_handler=bulk))
        metadata = {key: value for key, value in metadata.items() if "BulkDataURI" not in value and key[4:] != "0000"}
        study = _json_uid(metadata, "0020000D")
        series = _json_uid(metadata, "0020000E")
        sop = _json_uid(metadata, "00080018")
        encoded = json.dumps(metadata, separators=(",", ":"))
        row: dict[str, Any] = {
            "StudyInstanceUID": study,
            "SeriesInstanceUID": series,
            "SOPInstanceUID": sop,
            # An object, not a string holding JSON: a JSON column loads it as the object itself.
            "Metadata": metadata,
            "StructuredStorageSize": len(encoded.encode()),
            "StorageClass": storage_class,
            "Type": "CREATE",
        }
        if dropped:
            row["DroppedTags"] = sorted(set(dropped))
        if source_store is not None:
            row["SourceDicomStore"] = source_store
        if last_updated is not None:
            row["LastUpdated"] = _timestamp(last_updated)
        if blob_storage_size is not None:
            row["BlobStorageSize"] = int(blob_storage_size)
        fields = JSON_SCHEMA_FIELDS if source_store is not None else tuple(
            f for f in JSON_SCHEMA_FIELDS if f.name != "SourceDicomStore"
        )
        return ConvertedInstance({k: v for k, v in row.items() if v is not None}, fields, study, series, sop)


def _finish(
    row: dict[str, Any],
    fields: dict[str, Field],
    other: list[dict[str, Any]],
    state: _InstanceState,
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
        row["LastUpdated"] = _timestamp(last_updated)
    row["StorageClass"] = storage_class
    if blob_storage_size is not None:
        row["BlobStorageSize"] = int(blob_storage_size)
    for trailing in TRAILING_FIELDS:
        fields[trailing.name] = trailing
    return ConvertedInstance(
        row,
        ordered_fields(fields),
        _single(row.get("StudyInstanceUID")),
        _single(row.get("SeriesInstanceUID")),
        _single(row.get("SOPInstanceUID")),
    )


def _raw_text(elem: Any) -> list[str] | None:
    """The values of an element pydicom could not convert, as text; None if it has no text form."""
    value = getattr(elem, "value", None)
    if isinstance(value, bytes):
        return [part.strip(" \x00") for part in value.decode("latin_1").split("\\")]
    if isinstance(value, str):
        return [value]
    return None


def _json_uid(metadata: dict, key: str) -> str | None:
    values = metadata.get(key, {}).get("Value")
    return values[0] if values else None


def _timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


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
    if number != number or number in (float("inf"), float("-inf")):
        raise vrs.ValueConversionError("non-finite number")
    return number


def _pn_text(value: Any) -> str:
    """A pydicom PersonName (already decoded) -> 'alphabetic=ideographic=phonetic' text."""
    components = getattr(value, "components", None)
    if components is not None:
        return "=".join(components)
    return str(value)


def _pn_groups(value: Any) -> list[str]:
    if not isinstance(value, str):
        raise vrs.ValueConversionError("person name is not text")
    groups = value.split("=")
    if len(groups) > 3:
        raise vrs.ValueConversionError(f"person name with {len(groups)} component groups")
    return groups
