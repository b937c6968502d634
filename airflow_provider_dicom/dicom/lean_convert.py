"""The converter's fast route: a scanned header (scan.py's plain dicts and tuples) -> the row.

`InstanceConverter.convert` walks pydicom Datasets; for a file we parsed ourselves that means
building a BaseTag, a RawDataElement, and for every sequence item a Dataset, only to read their
bytes back. This route reads the scanned values directly and applies the same rules through the
same helpers (`decode_raw`, `_standard_values`, the field caches), so it gives the same row and
schema, byte for byte; tests/unit/test_lean_convert.py holds the two routes to that on the whole
pydicom test corpus and on odd inputs.

What only pydicom can judge raises NeedsPydicom, and the caller converts that instance the
general way: an implicit VR element whose VR the dictionary does not settle (private tags,
"US or SS"), UN elements (pydicom may know their real VR), text in a character set with code
extensions, a value that was not read.

Per (tag, VR) the decisions that do not depend on the value are made once and kept as a plan.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_dicom.dicom import vr as vrs
from airflow_provider_dicom.dicom.convert import (
    _FAST_CODECS,
    _NUMBERS,
    _PRIVATE_ASCII,
    _PRIVATE_NUMBERS,
    _PRIVATE_TEXT,
    _TEXT,
    OTHER_ELEMENTS_FIELD,
    InstanceConverter,
    NeedsPydicom,
    _InstanceState,
    _make_plan,
    _text,
    lean_encodings,
    lean_values,
    merge_item_fields,
    ordered_fields,
    sequence_field,
)
from airflow_provider_dicom.dicom.scan import LeanInstance
from airflow_provider_dicom.dicom.schema import Field
from airflow_provider_dicom.dicom.tags import TagInfo, tag_info, tag_name, tag_reference

# What the general route does with an element once the fast path (see convert._make_plan) has
# passed it by, in the order convert._convert_into tests for it.
_SKIP, _PYDICOM, _SEQUENCE, _DROP, _OTHER, _STANDARD = range(6)
_NO_FAST = -1

# (tag, VR as scanned) -> (fast kind, fast name, fast field, fast repeated, fast VR,
#                          kind, VR as resolved, TagInfo or None, name when dropped, tag reference)
_PLANS: dict[tuple[int, str | None], tuple] = {}


def _plan(tag: int, vr: str | None) -> tuple:
    fast = _make_plan(tag, vr)
    fast_part = fast if fast is not None else (_NO_FAST, None, None, False, None)
    info = tag_info(tag)
    resolved = vr
    if resolved is None and info is not None and " or " not in info.dictionary_vr:
        resolved = info.dictionary_vr  # implicit VR, standard tag: the dictionary says it
    if not tag & 0xFFFF:
        kind = _SKIP  # group length: structural
    elif resolved is None or resolved == "UN":
        kind = _PYDICOM
    elif resolved == "SQ":
        kind = _SEQUENCE
    elif resolved in vrs.BINARY_VRS or (info is not None and info.column_type is None):
        kind = _DROP
    elif info is None:
        kind = _OTHER  # private, private creator, or no keyword: OtherElements keeps the text
    else:
        kind = _STANDARD
    dropped_name = info.keyword if info is not None else tag_name(tag)
    return (*fast_part, kind, resolved, info, dropped_name, tag_reference(tag))


def hands_on(lean: LeanInstance) -> bool:
    """Whether the fast route would hand this instance to pydicom (NeedsPydicom), judged before
    converting anything: what the scan flagged, and for implicit VR the top-level elements whose
    dictionary VR is ambiguous ("US or SS"). A cheap early answer, not a complete one."""
    if lean.unusual:
        return True
    if not lean.implicit:
        return False
    plans = _PLANS
    for tag, element in lean.body.items():
        key = (tag, element[0])
        plan = plans.get(key)
        if plan is None:
            plan = plans[key] = _plan(*key)
        if plan[5] == _PYDICOM:
            return True
    return False


def convert_elements(
    converter: InstanceConverter,
    elements: dict,
    row: dict[str, Any],
    fields: dict[str, Field],
    other: list[dict[str, Any]],
    encodings: list[str],
    little: bool,
    depth: int,
    path: str,
    state: _InstanceState,
) -> None:
    """Convert one scanned dataset (at RECORD nesting `depth`) into `row` and `fields`, as
    `InstanceConverter._convert_into` does for the Dataset built from it."""
    codec = _FAST_CODECS.get(encodings[0]) if len(encodings) == 1 else None
    plans = _PLANS
    dropped = state.dropped
    for tag, element in elements.items():
        vr = element[0]
        value = element[1]
        plan = plans.get((tag, vr))
        if plan is None:
            plan = plans[(tag, vr)] = _plan(tag, vr)
        fast = plan[0]
        if fast != _NO_FAST and value:
            # The general route's fast path, as in convert._convert_into.
            _, name, field, repeated, plan_vr = plan[:5]
            if fast == _NUMBERS or fast == _PRIVATE_NUMBERS:
                try:
                    values = vrs.decode_numbers(value, plan_vr, little)
                except vrs.ValueConversionError:
                    values = None
                else:
                    if (plan_vr == "FD" or plan_vr == "FL") and not vrs.all_finite(values):
                        values = None
            elif fast == _TEXT or fast == _PRIVATE_TEXT:
                values = None if codec is None else value.decode(codec, errors="replace").split("\\")
            else:
                values = value.decode("latin_1").split("\\")
            if values is not None:
                if fast >= _PRIVATE_ASCII:
                    if fast == _PRIVATE_NUMBERS:
                        other.append({"Tag": name, "Data": list(map(str, values))})
                    else:
                        other.append({"Tag": name, "Data": [v.strip(" \x00") for v in values]})
                    continue
                if name not in row and (repeated or len(values) == 1):
                    fields[name] = field
                    if fast != _NUMBERS:
                        values = [v.strip(" \x00") for v in values]
                    row[name] = values if repeated else values[0]
                    continue
        kind = plan[5]
        if kind == _STANDARD:
            converter._standard_values(
                tag, lean_values(element, plan[6], little, codec), plan[7], row, fields, other, depth, path, state
            )
        elif kind == _SEQUENCE:
            _sequence(converter, tag, element, plan[7], row, fields, encodings, little, depth, path, state)
        elif kind == _DROP:
            dropped.append({"TagName": plan[8], "TagReference": path + plan[9]})
        elif kind == _OTHER:
            values = lean_values(element, plan[6], little, codec)
            if values is None:
                dropped.append({"TagName": plan[8], "TagReference": path + plan[9]})
            else:
                other.append({"Tag": tag_name(tag), "Data": [_text(v) for v in values]})
        elif kind == _PYDICOM:
            raise NeedsPydicom("an element whose VR pydicom must work out")
        # _SKIP: nothing to export


def _sequence(
    converter: InstanceConverter,
    tag: int,
    element: tuple,
    info: TagInfo | None,
    row: dict[str, Any],
    fields: dict[str, Field],
    encodings: list[str],
    little: bool,
    depth: int,
    path: str,
    state: _InstanceState,
) -> None:
    """As InstanceConverter._sequence, for a scanned sequence (a list of item dicts)."""
    name = info.keyword if info is not None and info.keyword not in fields else tag_name(tag)
    if depth + 1 > state.max_depth:
        state.dropped.append(
            {"TagName": info.keyword if info is not None else tag_name(tag), "TagReference": path + tag_reference(tag)}
        )
        return
    items = element[1]
    if items.__class__ is not list:
        if items:
            # An implicit element the dictionary calls a sequence, too short to be one: pydicom decides.
            raise NeedsPydicom("a sequence value that is not items")
        items = ()
    item_rows = []
    item_fields: tuple[Field, ...] = ()
    child_path = f"{path}{tag_reference(tag)}/"
    for index, item in enumerate(items):
        item_row: dict[str, Any] = {}
        these: dict[str, Field] = {}
        item_other: list[dict[str, Any]] = []
        item_encodings = lean_encodings(item, encodings)
        convert_elements(
            converter, item, item_row, these, item_other, item_encodings, little, depth + 1,
            f"{child_path}{index}/", state,
        )
        if item_other:
            item_row["OtherElements"] = item_other
            these["OtherElements"] = OTHER_ELEMENTS_FIELD
        item_rows.append(item_row)
        item_fields = merge_item_fields(item_fields, ordered_fields(these))
    if not item_fields:
        return  # no item holds any value: no column (see InstanceConverter._sequence)
    fields[name] = sequence_field(name, item_fields)
    if item_rows:
        row[name] = item_rows
