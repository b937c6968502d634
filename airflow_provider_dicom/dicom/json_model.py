"""The DICOM JSON model (PS3.18 F.2), as DICOMweb servers send it, to the row a file gives.

A server's JSON differs from the file it was made from in ways the row must not show: DS and IS
come as JSON numbers, some servers split single-valued text on backslashes or leave padding,
binary values come as BulkDataURI references. `prepare` undoes that. The prepared JSON is then
walked straight into a row by the one walker (walker.py) through `JsonSource`, without building a
pydicom Dataset (`Dataset.from_json` cost most of a DICOMweb export's CPU).

The row must be the one pydicom's Dataset of the same JSON gives (`dataset_from_json`, then the
Dataset adapter): what this adapter does not settle exactly as pydicom would (a value of the
wrong JSON type, an unknown VR, a key that is not an upper-case tag, several value keys, bad
base64) raises NeedsPydicom, and the caller converts that instance through the Dataset.
The JSON table's Metadata is walked from the same prepared JSON through the same adapter
(json_table.json_model_metadata). tests/unit/test_routes_agree.py holds both to pydicom's rows.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from airflow_provider_dicom.dicom.scan import MAX_SEQUENCE_DEPTH
from airflow_provider_dicom.dicom.vocabulary import (
    BINARY_VRS,
    KNOWN_VRS,
    SINGLE_VALUED,
    TEXT_NUMBER_VRS,
    TEXT_VRS,
    TIMEZONE_OFFSET_FROM_UTC,
)
from airflow_provider_dicom.dicom.walker import (
    DEFAULT_ENCODINGS,
    ConvertedInstance,
    Element,
    InstanceParts,
    NeedsPydicom,
    decode_raw,
    walk_instance,
)

_CHARSET_KEY = "00080005"
_PLACEHOLDER = "AAA="  # base64 of b"\x00\x00"
# String VRs a server may pad or split on a yen sign (see `prepare`).
_STRING_VRS = frozenset(("AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UC", "UI"))
_VALUE_KEYS = ("Value", "BulkDataURI", "InlineBinary")
# String VRs pydicom keeps whole when their one value holds a backslash (its ALLOW_BACKSLASH); it
# splits the others' single value into several.
WHOLE_TEXT_VRS = frozenset(("LT", "ST", "UT"))


def dataset_from_json(metadata: dict, on_bulk_data: Callable[[str], None] | None = None) -> Any:
    """A pydicom Dataset from one instance's DICOM JSON, prepared so it converts like a file:
    DS/IS numbers become their shortest text, and BulkDataURI elements become empty binary
    elements (listed in DroppedTags, as a file's binary elements are) without fetching anything."""
    return dataset_from_prepared(prepare(metadata, on_bulk_data))


def dataset_from_prepared(prepared: dict) -> Any:
    """The Dataset of DICOM JSON `prepare` has made ready (see `dataset_from_json`)."""
    from pydicom.dataset import Dataset

    from airflow_provider_dicom.dicom.read import quiet_pydicom

    with quiet_pydicom():
        # DS/IS values reach pydicom empty: it would parse them as numbers and raise on text that
        # is not one ("1,5"), where a file's row keeps that text. Their text is put in afterwards.
        ds = Dataset.from_json(_without_numbers(prepared))
    _restore_number_text(ds, prepared)
    return ds


def _without_numbers(prepared: dict) -> dict:
    """`prepared` with the values of DS/IS elements left out (nested items included)."""
    out: dict[str, Any] = {}
    for key, element in prepared.items():
        vr = element.get("vr")
        if vr in TEXT_NUMBER_VRS and "Value" in element:
            element = {"vr": vr}
        elif vr == "SQ" and isinstance(element.get("Value"), list):
            element = {
                **element,
                "Value": [
                    _without_numbers(item) if isinstance(item, dict) else item for item in element["Value"]
                ],
            }
        out[key] = element
    return out


def _restore_number_text(ds: Any, prepared: dict) -> None:
    """pydicom turns DS/IS JSON values into floats and ints whatever text it is given ("16" ->
    16.0 -> "16.0"). Put them back as the raw text a file holds, in place (the element keeps its
    position), so the converter reads them exactly as it reads a file's."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    for key, element in prepared.items():
        vr = element.get("vr")
        values = element.get("Value")
        if not isinstance(values, list) or not values:
            continue
        if vr in TEXT_NUMBER_VRS:
            tag = Tag(int(key, 16))
            text = _number_text_bytes(values)
            ds._dict[tag] = RawDataElement(tag, vr, len(text), text, 0, False, True)
        elif vr == "SQ":
            items = ds._dict[Tag(int(key, 16))].value or []
            for item, item_json in zip(items, values):
                if isinstance(item_json, dict):
                    _restore_number_text(item, item_json)


def prepare(
    dataset: dict, on_bulk_data: Callable[[str], None] | None, charsets: tuple[str, ...] = (), depth: int = 0
) -> dict:
    """Undo what the JSON model (and some servers) do to values, so they read as the file's did.

    Sequences are followed as deep as a file's are read (scan.MAX_SEQUENCE_DEPTH); deeper ones
    are kept empty (the converter drops and lists what lies below BigQuery's 15 levels), so a
    server's 1,000-deep JSON costs no recursion."""
    out: dict[str, Any] = {}
    charset_element = dataset.get(_CHARSET_KEY)
    if isinstance(charset_element, dict) and isinstance(charset_element.get("Value"), list):
        charsets = tuple(str(v) for v in charset_element["Value"] if v)
    # Under ISO 2022 IR 13 (JIS X 0201) byte 0x5C is the yen sign: a server decoding a whole
    # value with it turns the backslash between values into "¥". Only text VRs may hold a yen.
    yen_delimiter = any(c.replace("_", " ").endswith("IR 13") for c in charsets)
    # In tag order, as a file holds them (DroppedTags and OtherElements list elements in that order).
    for tag, element in sorted(dataset.items(), key=lambda item: _tag_order(item[0])):
        if not isinstance(element, dict):
            raise TypeError(f"element {tag} is not a JSON object")
        vr = element.get("vr")
        if "BulkDataURI" in element:
            if on_bulk_data is not None:
                on_bulk_data(tag)
            # Binary either way: a text element moved to bulk data cannot be read without fetching
            # it, so it is listed as dropped rather than exported empty.
            # (OB, not UN: pydicom would give UN back the dictionary VR and an empty value.)
            # Two zero bytes stand in for the value: never exported (binary values never are), but
            # not empty, so the JSON variant lists the element in DroppedTags as it does a file's.
            out[tag] = {"vr": vr if vr in BINARY_VRS else "OB", "InlineBinary": _PLACEHOLDER}
            continue
        values = element.get("Value")
        if isinstance(values, list) and values:
            if vr == "SQ" and depth >= MAX_SEQUENCE_DEPTH:
                values = []
            elif vr == "SQ":
                values = [
                    prepare(item, on_bulk_data, charsets, depth + 1) if isinstance(item, dict) else item
                    for item in values
                ]
            elif vr in ("DS", "IS"):
                values = [_number_text(v) for v in values]
            elif vr == "PN":
                values = [_strip_name(v) for v in values]
            elif vr in SINGLE_VALUED:
                # One value by definition; a server that split it on backslashes gets it joined back.
                text = "\\".join("" if v is None else str(v) for v in values)
                values = [text.rstrip(" \x00")]
            elif vr in _STRING_VRS:
                if yen_delimiter and vr not in TEXT_VRS:
                    values = [
                        part for v in values for part in (v.split("\u00a5") if isinstance(v, str) else [v])
                    ]
                values = [v.strip(" \x00") if isinstance(v, str) else v for v in values]
            element = {**element, "Value": values}
        out[tag] = element
    return out


def _tag_order(tag: str) -> int:
    try:
        return int(tag, 16)
    except (TypeError, ValueError):
        return -1  # pydicom rejects it, with its own message


def _strip_name(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            group: text.rstrip(" \x00") if isinstance(text, str) else text for group, text in value.items()
        }
    return value


def _number_text(value: Any) -> Any:
    """DICOM JSON carries DS/IS as numbers; files carry text. The shortest text that reads back as
    the same number is what a file most likely held: "3.7", not "3.7000000000000002"; "16", not
    "16.0" (a server may print an integral DS either way)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return value


# -- the walker's adapter --------------------------------------------------------------------------

_FLOAT_VRS = frozenset(("FL", "FD"))
_INT_VRS = frozenset(("SL", "SS", "UL", "US"))
_TAGS: dict[str, int] = {}


def _tag_of(key: Any) -> int:
    """The tag of a JSON key: upper-case hex only (pydicom also takes keywords and lower case,
    so two keys could name one tag: it settles those)."""
    tag = _TAGS.get(key) if isinstance(key, str) else None
    if tag is None:
        try:
            tag = int(key, 16)
        except (TypeError, ValueError):
            raise NeedsPydicom("a key that is not a tag") from None
        if len(key) != 8 or f"{tag:08X}" != key:
            raise NeedsPydicom("a key that is not an upper-case tag")
        if len(_TAGS) < 65536:
            _TAGS[key] = tag
    return tag


def _pn_text(value: Any) -> str:
    """A JSON person name ({Alphabetic, Ideographic, Phonetic}) as pydicom joins its groups."""
    if value is None:
        return ""
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise NeedsPydicom("a person name that is not groups of text")
    if "Phonetic" in value:
        groups = [value.get("Alphabetic", ""), value.get("Ideographic", ""), value["Phonetic"]]
    elif "Ideographic" in value:
        groups = [value.get("Alphabetic", ""), value["Ideographic"]]
    else:
        groups = [value.get("Alphabetic", "")]
    return "=".join(groups)


def _number_text_bytes(values: list) -> bytes:
    """DS/IS values (prepared) as the raw text a file holds (see `_restore_number_text`)."""
    return "\\".join("" if v is None else str(v) for v in values).encode("latin_1", "replace")


def _at_tag(value: Any) -> int:
    if not isinstance(value, str):
        raise NeedsPydicom("an attribute tag that is not text")
    return _tag_of(value)


def _json_values(vr: str, element: dict) -> list:
    """The values pydicom's Dataset of this element gives the walker (its Dataset adapter's
    `values`), for a non-sequence, non-binary element; NeedsPydicom where pydicom would judge."""
    values = element.get("Value")
    if values is None:
        if "InlineBinary" in element or "BulkDataURI" in element:
            raise NeedsPydicom("binary content for a VR that is not binary")
        return []
    if not isinstance(values, list):
        raise NeedsPydicom("a Value that is not a list")
    if not values:
        return []
    if vr in TEXT_NUMBER_VRS:
        text = _number_text_bytes(values)
        return (decode_raw(text, vr, True, None) or []) if text else []
    out: list
    if vr == "PN":
        out = [_pn_text(v) for v in values]
    elif vr in _INT_VRS or vr in _FLOAT_VRS:
        if not all(type(v) is int or type(v) is float for v in values):
            raise NeedsPydicom("a number that is not a JSON number")
        out = [float(v) for v in values] if vr in _FLOAT_VRS else [int(v) for v in values]
    elif vr == "AT":
        out = [_at_tag(v) for v in values]
    else:
        if not all(v is None or isinstance(v, str) for v in values):
            raise NeedsPydicom("text that is not a JSON string")
        out = ["" if v is None else v for v in values]
    if vr == "PN" or out.__class__ is list and out and isinstance(out[0], str):
        if len(out) == 1 and vr not in WHOLE_TEXT_VRS and "\\" in out[0]:
            out = out[0].split("\\")  # one value holding backslashes: pydicom's several (DataElement.value)
        if vr == "PN":
            out = [name.rstrip("=") for name in out]  # PersonName drops trailing empty groups
        elif vr == "UI":
            out = [uid.strip() for uid in out]  # as pydicom's UID does
    if len(out) == 1 and out[0] == "":
        return []  # one empty value: pydicom's element is empty
    return out


def _check_binary(element: dict) -> None:
    """A binary element is dropped; pydicom still decodes its inline value (and refuses bad base64)."""
    if "Value" in element or "BulkDataURI" in element:
        raise NeedsPydicom("a binary element with a Value or an unresolved BulkDataURI")
    inline = element.get("InlineBinary")
    if inline is None:
        return
    if isinstance(inline, list):
        inline = inline[0] if inline else None
    if not isinstance(inline, str):
        raise NeedsPydicom("InlineBinary that is not base64 text")
    try:
        base64.b64decode(inline)
    except (binascii.Error, ValueError):
        raise NeedsPydicom("InlineBinary that is not base64") from None


class JsonSource:
    """Elements of prepared DICOM JSON (see `prepare`). An element record is (VR, the DS/IS text
    as raw bytes or None, the JSON element, its values as pydicom's Dataset would give them)."""

    little = True  # the DS/IS text given as raw bytes is byte-order free

    def entries(self, dataset: dict) -> Iterator[tuple[int, Element]]:
        for key, element in dataset.items():
            tag = _tag_of(key)
            if not isinstance(element, dict):
                raise NeedsPydicom("an element that is not an object")
            vr = element.get("vr")
            if vr not in KNOWN_VRS:
                raise NeedsPydicom("a VR that is not one of DICOM's")
            if len(element) > 2 and sum(1 for k in _VALUE_KEYS if k in element) > 1:
                raise NeedsPydicom("an element with several values")
            if vr == "SQ":
                yield tag, (vr, None, element, None)
            elif vr in BINARY_VRS:
                _check_binary(element)
                yield tag, (vr, None, element, None)
            else:
                values = element.get("Value")
                raw = _number_text_bytes(values) if vr in TEXT_NUMBER_VRS and isinstance(values, list) else None
                yield tag, (vr, raw, element, _json_values(vr, element))

    def values(self, element: Element, vr: str, codec: str | None) -> list | None:
        if element[0] in BINARY_VRS:
            return None
        return element[3]  # type: ignore[no-any-return]

    def items(self, element: Element) -> Sequence[dict]:
        values = element[2].get("Value")
        if values is None:
            if "InlineBinary" in element[2] or "BulkDataURI" in element[2]:
                raise NeedsPydicom("a sequence with binary content")
            return ()
        if not isinstance(values, list):
            raise NeedsPydicom("a sequence Value that is not a list")
        if not all(item is None or isinstance(item, dict) for item in values):
            raise NeedsPydicom("a sequence item that is not an object")
        return [{} if item is None else item for item in values]

    def encodings(self, dataset: dict, inherited: list[str]) -> list[str]:
        # JSON text is decoded already; a Specific Character Set pydicom could choke on is its call.
        element = dataset.get(_CHARSET_KEY)
        if element is not None:
            values = element.get("Value") if isinstance(element, dict) else None
            if values is not None and not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
                raise NeedsPydicom("a Specific Character Set that is not text")
        return inherited

    def resolve(self, tag: int, element: Element) -> Element:
        # UN: binary, dropped, unless pydicom's dictionary knows the tag: then pydicom gives the
        # element the dictionary's VR, and decodes an inline value by it (config.replace_un_with_known_vr).
        if in_dictionary(tag):
            raise NeedsPydicom("UN for a tag pydicom's dictionary knows")
        return element


_KNOWN_TAGS: dict[int, bool] = {}


def in_dictionary(tag: int) -> bool:
    """Whether pydicom's dictionary knows `tag` (so gives a UN element of it the dictionary's VR)."""
    known = _KNOWN_TAGS.get(tag)
    if known is None:
        from pydicom.datadict import get_entry

        try:
            get_entry(tag)
            known = True
        except KeyError:
            known = False
        if len(_KNOWN_TAGS) < 65536:
            _KNOWN_TAGS[tag] = known
    return known


JSON_SOURCE = JsonSource()


def instance_parts(prepared: dict) -> InstanceParts:
    """Prepared DICOM JSON (`prepare`) as the walker takes it; raises NeedsPydicom (module docstring).
    DICOMweb has no File Meta Information, stored size or update time: those columns stay empty."""
    JSON_SOURCE.encodings(prepared, DEFAULT_ENCODINGS)
    offset = prepared.get(f"{TIMEZONE_OFFSET_FROM_UTC:08X}")
    offset_values = None
    if offset is not None:
        if not isinstance(offset, dict) or offset.get("vr") != "SH":
            raise NeedsPydicom("a TimezoneOffsetFromUTC that is not SH")
        offset_values = _json_values("SH", offset)
    return InstanceParts([(JSON_SOURCE, prepared, DEFAULT_ENCODINGS)], offset_values)


def convert_prepared(prepared: dict, max_depth: int) -> ConvertedInstance:
    """The flattened row of prepared DICOM JSON; raises NeedsPydicom (see the module docstring)."""
    return walk_instance(instance_parts(prepared), max_depth)
