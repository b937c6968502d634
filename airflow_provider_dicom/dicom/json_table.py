"""The JSON table's Metadata (DICOM JSON, PS3.18 F.2) made by walking elements, without pydicom.

The single-JSON-column table (`schemaJson`) holds each instance's DICOM JSON as pydicom writes it
(`Dataset.to_json_dict` with `suppress_invalid_tags`, binary values listed in DroppedTags instead
of inlined; convert.py). That output is the specification, byte for byte: this module walks a
scanned header through the walker's element interface (`walker.ElementSource`, the same plans
from `walker.plan_for`) and writes the JSON pydicom would, for elements whose conversion it can
mirror exactly: raw values of plain string, text, number and binary VRs, and sequences of them.

Where pydicom's answer depends on more than that, the instance is declined with NeedsPydicom and
converted from its pydicom Dataset, as the flattened table does. Declined, in particular:

- whatever the walker itself leaves to pydicom (implicit VR the dictionary does not settle, UN,
  private elements in implicit VR) and values not read (deferred, sequences cut by the scan);
- any value pydicom's strict reading would refuse (`pydicom.valuerep.validate_value` in RAISE
  mode, asked here for every string value): pydicom then drops the element, or for an element
  inside a sequence the whole top-level sequence, and convert.py keeps the raw text of what it
  dropped at the top level. (So the JSON table of pydicom's RT dose files lacks
  ReferencedRTPlanSequence, whose item holds a UID with a leading-zero component, while the
  flattened table keeps it: the rule is pydicom's, and this table's rows are pydicom's.)
- DS and IS values other than plain decimal numbers; text with code extensions (ISO 2022) or
  that its character set does not decode, character sets other than the default, ISO_IR 100 and
  ISO_IR 192; non-ASCII bytes in the other string VRs; SV, UV, UR.

The DICOMweb route's JSON table is walked the same way from a server's DICOM JSON
(`json_model_metadata`, through json_model.JsonSource), mirroring pydicom's `Dataset.from_json`
followed by `to_json_dict`; see its docstring for what it hands on.

tests/unit/test_routes_agree.py holds the result to pydicom's (the oracle, `_convert_json`'s
pydicom route) on the whole corpus, instance by instance, and counts how many it walks itself.
"""

from __future__ import annotations

import re
from struct import Struct
from typing import Any

from airflow_provider_dicom.dicom import vr as vrs
from airflow_provider_dicom.dicom.json_model import JSON_SOURCE, JsonSource
from airflow_provider_dicom.dicom.tags import tag_reference
from airflow_provider_dicom.dicom.vocabulary import (
    BINARY_NUMBER_VRS,
    BINARY_VRS,
    SPECIFIC_CHARACTER_SET,
    TEXT_VRS,
)
from airflow_provider_dicom.dicom.walker import (
    _CACHE_LIMIT,
    PYDICOM,
    ElementSource,
    InstanceParts,
    NeedsPydicom,
    codec_of,
    plan_for,
)

# Plain decimal numbers, the forms pydicom's DS and IS take and print back unchanged.
_DS = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_IS = re.compile(r"[+-]?\d+")
_NUMBER_TEXT = re.compile(r"[0-9+\-.eE \\\x00]*")  # what such values, their padding and separators hold
_INT32 = range(-(2**31), 2**31)
_AT_LITTLE, _AT_BIG = Struct("<HH"), Struct(">HH")
# pydicom's BYTES_VR: values it writes as bulk data (listed in DroppedTags here). SV and UV, binary
# for the flattened table, are numbers in DICOM JSON (and left to pydicom below).
_BULK = BINARY_VRS - {"SV", "UV"}
# String VRs pydicom reads without a character set (convert_string, convert_UI, convert_AE_string).
_PLAIN = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI"})
# Text VRs decoded with the dataset's character sets: split at backslashes, or single-valued.
_MULTI_TEXT = frozenset({"LO", "SH", "UC"})
_SINGLE_TEXT = frozenset({"LT", "ST", "UT"})

_validate: Any = None  # pydicom.valuerep.validate_value, bound on first use (imports stay lazy)
_RAISE = 2  # pydicom.config.RAISE (checked when bound)


# (VR, value) pairs pydicom's validator took: most values repeat across an export's instances.
_VALID: set[tuple[str, str]] = set()


def _check(vr: str, value: str) -> None:
    """Refuse (NeedsPydicom) a value pydicom's strict reading refuses: pydicom's own rule."""
    global _validate
    key = (vr, value)
    if key in _VALID:
        return
    if _validate is None:
        from pydicom import config
        from pydicom.valuerep import validate_value

        assert config.RAISE == _RAISE
        _validate = validate_value
    try:
        _validate(vr, value, _RAISE)
    except ValueError:
        raise NeedsPydicom(f"a {vr} value pydicom refuses") from None
    if len(_VALID) >= _CACHE_LIMIT:
        _VALID.clear()
    _VALID.add(key)


# Character sets whose names pydicom takes as they are. Another name (a misspelt or unknown one)
# makes pydicom fall back in ways the text and person names show; such instances go to pydicom.
_PLAIN_CHARACTER_SETS = frozenset({b"", b"ISO_IR 6", b"ISO_IR 100", b"ISO_IR 192"})


def json_metadata(parts: InstanceParts) -> tuple[dict[str, Any], list[str]]:
    """The Metadata object of the JSON table and the TagReferences it drops (binary values),
    for an instance whose datasets give raw values (the scanned route); raises NeedsPydicom for
    what only pydicom settles (see the module docstring)."""
    dropped: list[str] = []
    metadata: dict[str, Any] = {}
    datasets = parts.datasets
    # pydicom's order: the body's elements, then the File Meta Information's (an update).
    for source, elements, encodings in (*datasets[1:], *datasets[:1]):
        metadata.update(_dataset(source, elements, encodings, dropped, top=True))
    return metadata, dropped


def _dataset(
    source: ElementSource, elements: Any, encodings: list[str], dropped: list[str], top: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    codec = codec_of(encodings)
    little = source.little
    for tag, element in source.entries(elements):
        vr = element[0]
        if not tag & 0xFFFF:
            # Group length: pydicom writes it and the table leaves it out, but pydicom converts it
            # first, and in the File Meta Information a value it cannot convert fails the instance.
            if vr not in ("UL", None) or not isinstance(element[1], bytes) or len(element[1]) != 4:
                raise NeedsPydicom("a group length pydicom judges")
            continue
        plan = plan_for(tag, vr)
        if plan.kind == PYDICOM:
            source.resolve(tag, element)  # the scanned source cannot: NeedsPydicom
            raise NeedsPydicom("an element whose VR pydicom works out")
        vr = plan.vr
        value = element[1]
        if tag == SPECIFIC_CHARACTER_SET and (
            not isinstance(value, bytes) or value.strip(b" \x00") not in _PLAIN_CHARACTER_SETS
        ):
            raise NeedsPydicom("a character set pydicom judges")
        if vr == "SQ":
            if value.__class__ is not list:
                raise NeedsPydicom("a sequence value that is not items")
            out[f"{tag:08X}"] = {
                "vr": "SQ",
                "Value": [
                    _dataset(source, item, source.encodings(item, encodings), dropped, top=False)
                    for item in source.items(element)
                ],
            }
            continue
        if value is None:
            if top and element[3] and vr in _BULK:  # pixel data, listed, never read
                dropped.append(tag_reference(tag))
                continue
            raise NeedsPydicom("a value not read")
        if not isinstance(value, bytes):
            raise NeedsPydicom("a value that is not raw bytes")
        if vr in _BULK:
            if value:
                # pydicom's bulk data: listed. The table leaves it out of the top level; inside
                # items it stays as pydicom wrote it, a BulkDataURI of "" (its handler's answer).
                dropped.append(tag_reference(tag))
                if not top:
                    out[f"{tag:08X}"] = {"vr": vr, "BulkDataURI": ""}
            else:
                out[f"{tag:08X}"] = {"vr": vr}
            continue
        values = _values(value, vr, little, codec)
        out[f"{tag:08X}"] = {"vr": vr, "Value": values} if values else {"vr": vr}
    return out


def _values(value: bytes, vr: str, little: bool, codec: str | None) -> list[Any]:
    """Raw bytes -> the "Value" list pydicom writes ([] for an empty element); `codec`: the
    dataset's text codec (walker.codec_of)."""
    if vr in BINARY_NUMBER_VRS:
        if not value:
            return []
        try:
            return vrs.decode_numbers(value, vr, little)
        except vrs.ValueConversionError:
            raise NeedsPydicom("a number of the wrong length") from None
    if vr == "AT":
        if len(value) % 4:
            raise NeedsPydicom("an AT value of the wrong length")
        pairs = _AT_LITTLE if little else _AT_BIG
        return [f"{group:04X}{element:04X}" for group, element in pairs.iter_unpack(value)]
    if vr in TEXT_VRS:
        # Decoded as pydicom's strict reading decodes it: whole, with the one character set.
        if codec is None or b"\x1b" in value:
            raise NeedsPydicom("text with code extensions")
        try:
            text = value.decode(codec)
        except UnicodeDecodeError:
            raise NeedsPydicom("text its character set does not decode") from None
    elif value.isascii():
        text = value.decode("ascii")
    else:
        raise NeedsPydicom("a string that is not ASCII")
    if vr in _PLAIN:
        if vr == "AE":
            values = [part.strip() for part in text.split("\\")]
        else:
            values = text.rstrip(" \x00").split("\\")
    elif vr in _MULTI_TEXT:
        values = []
        for part in text.split("\\"):
            _check(vr, part)  # convert_text checks each value before stripping it
            values.append(part.rstrip("\x00 "))
    elif vr in _SINGLE_TEXT:
        _check(vr, text)
        values = [text.rstrip("\x00 ")]
    elif vr == "PN":
        values = text.rstrip(" \x00").split("\\")
        for name in values:
            _check(vr, name)
        if len(values) == 1 and not values[0]:
            return []
        if not all(name.strip("=") for name in values):
            raise NeedsPydicom("an empty person name (or only its group separators)")
        names = []
        for name in values:
            groups = name.split("=")
            if len(groups) > 3:
                raise NeedsPydicom("a person name with more than three groups")
            names.append(dict(zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False)))
        return names
    elif vr == "DS" or vr == "IS":
        return _numbers(text, vr)
    else:
        raise NeedsPydicom(f"{vr} is left to pydicom")
    for part in values:
        _check(vr, part)
    if len(values) == 1 and not values[0]:
        return []
    return values


def _numbers(text: str, vr: str) -> list[Any]:
    """DS/IS text -> the numbers pydicom writes (float / int); only plain numbers are taken."""
    if not _NUMBER_TEXT.fullmatch(text):
        raise NeedsPydicom(f"a {vr} value pydicom judges")
    parts = text.strip().rstrip(" \x00").split("\\")
    if len(parts) == 1 and not parts[0]:
        return []
    numbers: list[Any] = []
    for part in parts:
        if vr == "DS":
            if len(part) > 16 or not _DS.fullmatch(part):
                raise NeedsPydicom("a DS value pydicom judges")
            numbers.append(float(part))
        else:
            if len(part) > 12 or not _IS.fullmatch(part) or int(part) not in _INT32:
                raise NeedsPydicom("an IS value pydicom judges")
            numbers.append(int(part))
    return numbers


# -- DICOM JSON (a DICOMweb server's), as the JSON table writes it ---------------------------------


def json_model_metadata(prepared: dict) -> tuple[dict[str, Any], list[str]]:
    """The JSON table's Metadata and the TagReferences it drops, for one instance's DICOM JSON
    made ready by `json_model.prepare`: the bytes pydicom writes (`to_json_dict` of the Dataset
    `json_model.dataset_from_prepared` builds, as convert.py writes it), walked from the JSON
    through the walker's JSON adapter (json_model.JsonSource) without building that Dataset.

    What the adapter leaves to pydicom (NeedsPydicom, see json_model's docstring) is left to it here
    too, and so is most of what pydicom's writer fails on (an empty name among several, SV and UV
    numbers, an empty InlineBinary list, DS or IS values its strict reading may refuse). One such
    failure is common enough to mirror: a top-level DS or IS value that is not a number at all,
    which the table keeps as its text, after the other elements (convert.py's `_raw_text`)."""
    dropped: list[str] = []
    refused: list[tuple[str, dict[str, Any]]] = []
    metadata = _json_model_dataset(JSON_SOURCE, prepared, dropped, refused)
    for key, entry in refused:
        if key not in dropped:
            metadata[key] = entry
    return metadata, dropped


class _NotANumber(NeedsPydicom):
    """A DS or IS value pydicom fails on whatever its validation mode (`float` refuses it): at the
    top level the table keeps its text; inside an item it is handed on like any NeedsPydicom."""


def _json_model_dataset(
    source: JsonSource, dataset: dict, dropped: list[str], refused: list[tuple[str, dict[str, Any]]] | None
) -> dict[str, Any]:
    """One dataset's elements; `refused` collects the top level's DS/IS text pydicom fails on
    (None inside items: a value failing there costs pydicom the whole top-level sequence)."""
    top = refused is not None
    source.encodings(dataset, [])  # a Specific Character Set that is not text: pydicom's call
    out: dict[str, Any] = {}
    for tag, element in source.entries(dataset):
        vr = element[0]
        entry: dict[str, Any]
        if vr == "SQ":
            entry = {
                "vr": "SQ",
                "Value": [_json_model_dataset(source, item, dropped, None) for item in source.items(element)],
            }
        elif vr in _BULK:
            if vr == "UN":
                source.resolve(tag, element)  # UN the dictionary knows: pydicom gives it that VR
            if _has_inline_bytes(element[2]):
                # pydicom's bulk data (see `_dataset`): listed; inside items a BulkDataURI of "".
                dropped.append(tag_reference(tag))
                if top:
                    continue
                entry = {"vr": vr, "BulkDataURI": ""}
            else:
                entry = {"vr": vr}
        elif vr in BINARY_VRS:
            raise NeedsPydicom(f"{vr}: numbers in DICOM JSON, left to pydicom")  # SV, UV
        else:
            try:
                values = _json_model_values(vr, element)
            except _NotANumber:
                if refused is None:
                    raise
                if tag & 0xFFFF:
                    parts = element[1].decode("latin_1").split("\\")
                    kept = {"vr": vr, "Value": [part.strip(" \x00") for part in parts]}
                    refused.append((f"{tag:08X}", kept))
                continue
            entry = {"vr": vr, "Value": values} if values else {"vr": vr}
        if top and not tag & 0xFFFF:
            continue  # group length: the table leaves it out of the top level (convert.py)
        out[f"{tag:08X}"] = entry
    return out


def _has_inline_bytes(element: dict) -> bool:
    """Whether a binary element's InlineBinary (checked by the adapter) decodes to any bytes."""
    import base64

    inline = element.get("InlineBinary")
    if isinstance(inline, list):
        if not inline:
            raise NeedsPydicom("an empty InlineBinary list")  # pydicom fails on it
        inline = inline[0]
    return inline is not None and bool(base64.b64decode(inline))


def _json_model_values(vr: str, element: Any) -> list[Any]:
    """The "Value" pydicom writes for a non-sequence, non-bulk element of prepared DICOM JSON, from
    the adapter's record (VR, DS/IS text as raw bytes, JSON element, values as pydicom reads them)."""
    if vr == "DS" or vr == "IS":
        # Put back as raw text (json_model._restore_number_text): read as a file's are.
        raw = element[1]
        return _json_model_numbers(raw.decode("latin_1"), vr) if raw else []
    values: list[Any] = element[3]
    if not values:
        return []
    if vr in BINARY_NUMBER_VRS:
        return values
    if vr == "AT":
        return [f"{tag:08X}" for tag in values]
    if vr == "PN":
        return _json_model_names(values)
    return values  # split and stripped as pydicom's element holds them (json_model._json_values)


def _json_model_numbers(text: str, vr: str) -> list[Any]:
    """`_numbers`, or _NotANumber for text holding a value `float` refuses (pydicom's DS and IS
    are floats first: DSfloat, IS), split as pydicom splits it (values.multi_string)."""
    try:
        return _numbers(text, vr)
    except NeedsPydicom:
        for part in text.strip().rstrip(" \x00").split("\\"):
            if part.strip():  # blank: pydicom keeps it as it is
                try:
                    float(part)
                except ValueError:
                    raise _NotANumber(f"a {vr} value that is not a number") from None
        raise


def _json_model_names(names: list[str]) -> list[dict[str, str]]:
    """Person names (their groups joined by "=", trailing empty groups dropped: json_model's
    values) as pydicom's PersonName writes them: at most three groups."""
    out = []
    for name in names:
        if not name:
            raise NeedsPydicom("an empty person name among several")  # pydicom's writer fails on it
        groups = name.split("=")
        person = {"Alphabetic": groups[0]}
        if len(groups) > 1:
            person["Ideographic"] = groups[1]
        if len(groups) > 2:
            person["Phonetic"] = groups[2]
        out.append(person)
    return out
