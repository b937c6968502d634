"""Value representations: which BigQuery type each VR becomes, and decoding of raw value bytes.

We decode raw element bytes ourselves instead of going through pydicom's DataElement conversion:
that conversion (validation, MultiValue and DSfloat objects, warnings) is ~90% of the cost of the
naive `to_json_dict()` route, and the BigQuery row needs plain str/int/float anyway. Non-default
character sets that need ISO 2022 code extensions are handed back to pydicom, which does them right.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable
from datetime import date

from airflow_provider_dicom.dicom.schema import DATE, FLOAT, INTEGER, RECORD, STRING, TIME, TIMESTAMP
from airflow_provider_dicom.dicom.vocabulary import BINARY_VRS, SINGLE_VALUED, TEXT_VRS  # noqa: F401 - re-exported
from airflow_provider_dicom.utils.errors import DicomProviderError

# VR -> BigQuery column type. DS and IS stay STRING so "0.50" keeps its text.
BQ_TYPE: dict[str, str] = {
    **dict.fromkeys(("AE", "AS", "CS", "LO", "LT", "SH", "ST", "UC", "UI", "UR", "UT", "DS", "IS"), STRING),
    "DA": DATE,
    "TM": TIME,
    "DT": TIMESTAMP,
    "FL": FLOAT,
    "FD": FLOAT,
    **dict.fromkeys(("AT", "SL", "SS", "UL", "US"), INTEGER),
    "PN": RECORD,
    "SQ": RECORD,
}
# Trailing padding only is insignificant for the single-valued VRs; leading spaces are part of the text.
_KEEP_LEADING = SINGLE_VALUED

_NUMERIC_FORMAT: dict[str, tuple[str, int]] = {
    "FL": ("f", 4),
    "FD": ("d", 8),
    "SL": ("l", 4),
    "SS": ("h", 2),
    "UL": ("L", 4),
    "US": ("H", 2),
    "AT": ("H", 2),
}

PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


class ValueConversionError(DicomProviderError, ValueError):
    """A value that cannot be represented in its column type; the row keeps it as text instead."""


def column_type_for(vr: str) -> str | None:
    """The BigQuery type for a (possibly ambiguous, e.g. 'US or OW') dictionary VR; None if binary."""
    if " or " not in vr:
        return None if vr in BINARY_VRS else BQ_TYPE.get(vr)
    types = {BQ_TYPE.get(option) for option in vr.split(" or ") if option not in BINARY_VRS}
    types.discard(None)
    return types.pop() if len(types) == 1 else None


def split_text(text: str, vr: str) -> list[str]:
    """Split a decoded string value into its values and strip the padding DICOM allows."""
    if vr in _KEEP_LEADING:
        return [text.rstrip(" \x00")]
    if vr == "UI":
        return [part.strip("\x00 ") for part in text.split("\\")]
    return [part.strip(" \x00") for part in text.split("\\")]


def decode_numbers(value: bytes, vr: str, little_endian: bool) -> list[int] | list[float]:
    """The numbers of a binary numeric value (FL FD SL SS UL US AT), in file order.

    Called for every binary element of every instance (126 times per CT_small), so the
    struct.Struct for a (VR, byte order, value length) is built once and kept, not re-parsed
    from a format string on each call (`number_unpacker`)."""
    unpack = NUMBER_UNPACKERS[little_endian][vr].get(len(value)) or number_unpacker(vr, little_endian, len(value))
    if unpack is None:
        raise ValueConversionError(f"{len(value)} bytes is not a whole number of {vr} values")
    if vr == "AT":
        # An attribute tag is a (group, element) pair; the column holds it as one integer.
        numbers = unpack(value)
        return [(numbers[i] << 16) | numbers[i + 1] for i in range(0, len(numbers) - 1, 2)]
    return list(unpack(value))


# Struct.unpack of binary numbers, kept by byte order, VR and value length: {little endian: {VR:
# {length: unpack}}}, nested so the walker's per-element lookup builds no key tuple. A length that
# is no whole number of values maps to None. Lengths vary little within a corpus; a VR's cache is
# emptied should odd ones make it grow past _UNPACKERS_MAX.
NUMBER_UNPACKERS: dict[bool, dict[str, dict[int, Callable[[bytes], tuple] | None]]] = {
    little: {vr: {} for vr in _NUMERIC_FORMAT} for little in (True, False)
}
_UNPACKERS_MAX = 1024


def number_unpacker(vr: str, little_endian: bool, length: int) -> Callable[[bytes], tuple] | None:
    """The Struct.unpack for `length` bytes of `vr` numbers (None: not a whole number of values),
    made once and kept in NUMBER_UNPACKERS; callers look there first."""
    code, size = _NUMERIC_FORMAT[vr]
    count, remainder = divmod(length, size)
    unpack = None if remainder else struct.Struct(f"{'<' if little_endian else '>'}{count}{code}").unpack
    by_length = NUMBER_UNPACKERS[little_endian][vr]
    if len(by_length) >= _UNPACKERS_MAX:
        by_length.clear()
    by_length[length] = unpack
    return unpack


def all_finite(numbers: list[float]) -> bool:
    """BigQuery JSON loads take no NaN or infinity; such values are kept as text instead."""
    return all(map(math.isfinite, numbers))


_DA = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")
_TM = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")
_DT = re.compile(
    r"^(\d{4})(\d{2})(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?)?(?:([+-])(\d{2})(\d{2}))?$"
)


def to_bq_date(text: str) -> str:
    """YYYYMMDD (or the ACR-NEMA YYYY.MM.DD) -> YYYY-MM-DD. Partial dates are not dates."""
    match = _DA.match(text)
    if not match:
        raise ValueConversionError(f"not a DICOM date: {len(text)} characters")
    year, month, day = (int(part) for part in match.groups())
    try:
        date(year, month, day)
    except ValueError as exc:
        raise ValueConversionError(str(exc)) from None
    return f"{match[1]}-{match[2]}-{match[3]}"


def to_bq_time(text: str) -> str:
    """HH[MM[SS[.F{1,6}]]] (or HH:MM:SS) -> HH:MM:SS[.ffffff].

    Truncated times are valid DICOM meaning the start of that hour or minute, so they are
    padded; a leap second (60) has no BigQuery TIME and is kept as text instead."""
    match = _TM.match(text)
    if not match:
        raise ValueConversionError("not a DICOM time")
    hours, minutes, seconds, fraction = match.groups()
    minutes = minutes or "00"
    seconds = seconds or "00"
    if int(hours) > 23 or int(minutes) > 59 or int(seconds) > 59:
        raise ValueConversionError("time out of range")
    return f"{hours}:{minutes}:{seconds}" + (f".{fraction}" if fraction else "")


def to_bq_timestamp(text: str, default_offset: str | None = None) -> str:
    """DICOM DT -> a BigQuery TIMESTAMP literal.

    A DT needs at least a full date to be an instant: year-only and year-month values are kept as
    text. A missing offset takes the dataset's TimezoneOffsetFromUTC when it has one, else UTC."""
    match = _DT.match(text)
    if not match:
        raise ValueConversionError("not a DICOM date-time with at least a full date")
    year, month, day, hours, minutes, seconds, fraction, sign, off_h, off_m = match.groups()
    try:
        date(int(year), int(month), int(day))
    except ValueError as exc:
        raise ValueConversionError(str(exc)) from None
    hours, minutes, seconds = hours or "00", minutes or "00", seconds or "00"
    if int(hours) > 23 or int(minutes) > 59 or int(seconds) > 59:
        raise ValueConversionError("time of day out of range")
    out = f"{year}-{month}-{day}T{hours}:{minutes}:{seconds}" + (f".{fraction}" if fraction else "")
    if sign:
        if int(off_h) > 14 or int(off_m) > 59:
            raise ValueConversionError("UTC offset out of range")
        return f"{out}{sign}{off_h}:{off_m}"
    if default_offset:
        return out + default_offset
    return out + "Z"


def parse_offset(text: str | None) -> str | None:
    """TimezoneOffsetFromUTC ('+0100', '-0500') -> '+01:00', or None if absent or malformed."""
    if not text:
        return None
    text = text.strip()
    if len(text) == 5 and text[0] in "+-" and text[1:].isdigit() and int(text[1:3]) <= 14:
        return f"{text[:3]}:{text[3:]}"
    return None


def person_name(groups: list[str]) -> dict[str, dict[str, str]]:
    """'Family^Given^Middle^Prefix^Suffix' groups (Alphabetic, Ideographic, Phonetic) -> the PN record."""
    record: dict[str, dict[str, str]] = {}
    for group_name, group in zip(PN_GROUPS, groups):
        if not group:
            continue
        parts = group.split("^")
        if len(parts) > 5:
            raise ValueConversionError(f"person name group with {len(parts)} components")
        record[group_name] = {
            component: part.strip(" ") for component, part in zip(PN_COMPONENTS, parts) if part.strip(" ")
        }
    return record
