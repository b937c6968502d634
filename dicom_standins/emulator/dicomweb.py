"""DICOMweb for the emulator: STOW-RS to load instances, QIDO-RS to find them, WADO-RS to read them.

Only what loading test data and checking it needs: multipart/related bodies in and out, the
usual study/series/instance attributes in QIDO answers, and DICOM JSON metadata (produced by
the export engine's JSON converter, so it matches the `schemaJson` table's `Metadata`).
Failures in a STOW answer use DICOM's Failure Reason codes.
"""

from __future__ import annotations

import fnmatch
import io
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow_provider_dicom.dicom import vocabulary
from dicom_standins.emulator.errors import ApiError, invalid

# DICOM Failure Reason (0008,1197) values.
REASON_CANNOT_UNDERSTAND = 0xC000
REASON_DUPLICATE_SOP = 0x0111
REASON_STUDY_MISMATCH = 0xA900

# DICOM JSON keys of the identifying UIDs (the vocabulary's tags, as 8 hex digits).
SOP_CLASS = f"{vocabulary.SOP_CLASS_UID:08X}"
SOP_INSTANCE = f"{vocabulary.SOP_INSTANCE_UID:08X}"
STUDY = f"{vocabulary.STUDY_INSTANCE_UID:08X}"
SERIES = f"{vocabulary.SERIES_INSTANCE_UID:08X}"

_STUDY_TAGS = ("00080020", "00080030", "00080050", "00080090", "00081030", "00100010", "00100020",
               "00100030", "00100040", "0020000D", "00200010")
_SERIES_TAGS = ("00080060", "0008103E", "0020000E", "00200011", "0020000D")
_INSTANCE_TAGS = ("00080016", "00080018", "00200013", "00280008", "00280010", "00280011", "0020000D", "0020000E")
_KEYWORDS = {
    "StudyInstanceUID": STUDY, "SeriesInstanceUID": SERIES, "SOPInstanceUID": SOP_INSTANCE,
    "SOPClassUID": SOP_CLASS, "PatientID": "00100020", "PatientName": "00100010", "Modality": "00080060",
    "AccessionNumber": "00080050", "StudyDate": "00080020", "StudyID": "00200010",
    "SeriesNumber": "00200011", "InstanceNumber": "00200013", "StudyDescription": "00081030",
    "SeriesDescription": "0008103E",
}
_IGNORED_PARAMS = {"includefield", "fuzzymatching", "limit", "offset"}
_UID_TAGS = {STUDY, SERIES, SOP_INSTANCE, SOP_CLASS}


@dataclass
class ParsedInstance:
    study: str
    series: str
    sop: str
    sop_class: str | None
    data: bytes


class StowFailure(Exception):
    def __init__(self, reason: int, message: str, sop: str | None = None, sop_class: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.sop = sop
        self.sop_class = sop_class


def parse_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related body: (lower-cased headers, payload bytes). The same
    reader as the provider's WADO-RS copy (`airflow_provider_dicom.sources.multipart`)."""
    from airflow_provider_dicom.sources.multipart import MultipartError, parse_parts

    try:
        return parse_parts(body, content_type)
    except MultipartError as exc:
        raise invalid(f"multipart/related body: {exc}") from None


def build_multipart(payloads: list[bytes], media_type: str = "application/dicom") -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    out = io.BytesIO()
    for payload in payloads:
        out.write(f"--{boundary}\r\nContent-Type: {media_type}\r\n\r\n".encode())
        out.write(payload)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f'multipart/related; type="{media_type}"; boundary={boundary}'


def dicom_payloads(body: bytes, content_type: str) -> list[bytes]:
    """The DICOM files of a STOW-RS request (multipart/related of application/dicom, or one file)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/dicom":
        return [body]
    if media != "multipart/related":
        raise invalid(
            f"STOW-RS needs Content-Type multipart/related; type=\"application/dicom\" (or application/dicom), "
            f"got {content_type!r}"
        )
    payloads = []
    for headers, payload in parse_multipart(body, content_type):
        part_type = headers.get("content-type", "application/dicom").split(";", 1)[0].strip().lower()
        if part_type != "application/dicom":
            raise invalid(f"STOW-RS part of type {part_type!r}: only application/dicom parts are supported")
        payloads.append(payload)
    return payloads


def parse_instance(data: bytes, expected_study: str | None = None) -> ParsedInstance:
    """The UIDs of one Part 10 file; StowFailure when it cannot be stored."""
    from airflow_provider_dicom.dicom.read import InvalidDicomError, NotDicomError, read_instance
    from airflow_provider_dicom.sources.folder import instance_uids

    try:
        ds = read_instance(io.BytesIO(data))
    except (NotDicomError, InvalidDicomError) as exc:
        raise StowFailure(REASON_CANNOT_UNDERSTAND, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is that instance's failure, not a 500
        from airflow_provider_dicom.dicom.outcomes import failure

        raise StowFailure(REASON_CANNOT_UNDERSTAND, failure("", exc).reason or type(exc).__name__) from None
    study, series, sop = instance_uids(ds)
    sop_class = _text(ds, vocabulary.SOP_CLASS_UID)
    if not (study and series and sop):
        raise StowFailure(REASON_CANNOT_UNDERSTAND, "instance lacks a Study, Series or SOP Instance UID",
                          sop, sop_class)
    if expected_study is not None and study != expected_study:
        raise StowFailure(REASON_STUDY_MISMATCH, "instance belongs to another study than the request path",
                          sop, sop_class)
    return ParsedInstance(study, series, sop, sop_class, data)


def _text(ds: Any, tag: int) -> str | None:
    elem = ds._dict.get(tag)
    if elem is None:
        return None
    value = elem.value
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).strip("\x00 ") or None


def instance_metadata(data: bytes, last_updated: datetime | None = None) -> dict[str, Any]:
    """DICOM JSON of an instance without bulk data (pixel data and other binary elements left out)."""
    from airflow_provider_dicom.dicom.convert import InstanceConverter
    from airflow_provider_dicom.dicom.read import quiet_pydicom, read_instance

    with quiet_pydicom():
        ds = read_instance(io.BytesIO(data))
        metadata = InstanceConverter("json").convert(ds).row["Metadata"]
    return {tag: value for tag, value in metadata.items() if not tag.startswith("0002")}


def stow_response(stored: list[ParsedInstance], failed: list[StowFailure], base_url: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": [
            {
                "00081150": {"vr": "UI", "Value": [item.sop_class or ""]},
                "00081155": {"vr": "UI", "Value": [item.sop]},
                "00081190": {"vr": "UR", "Value": [
                    f"{base_url}/studies/{item.study}/series/{item.series}/instances/{item.sop}"]},
            }
            for item in stored
        ]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [
            {
                **({"00081150": {"vr": "UI", "Value": [f.sop_class]}} if f.sop_class else {}),
                **({"00081155": {"vr": "UI", "Value": [f.sop]}} if f.sop else {}),
                "00081197": {"vr": "US", "Value": [f.reason]},
            }
            for f in failed
        ]}
    return body


def query_filters(query: dict[str, list[str]]) -> tuple[dict[str, str], int | None, int]:
    """QIDO query parameters as {tag: pattern}, limit and offset; unknown keys are a 400."""
    filters: dict[str, str] = {}
    for key, values in query.items():
        if key.lower() in _IGNORED_PARAMS:
            continue
        tag = _KEYWORDS.get(key) or (key.upper() if re.fullmatch(r"[0-9A-Fa-f]{8}", key) else None)
        if tag is None:
            raise invalid(f"QIDO-RS: unsupported query parameter {key!r}")
        filters[tag] = values[-1]
    limit = _int_param(query, "limit")
    offset = _int_param(query, "offset") or 0
    return filters, limit, offset


def _int_param(query: dict[str, list[str]], key: str) -> int | None:
    values = query.get(key)
    if not values:
        return None
    try:
        number = int(values[-1])
    except ValueError:
        raise invalid(f"QIDO-RS: {key} must be an integer, got {values[-1]!r}") from None
    if number < 0:
        raise invalid(f"QIDO-RS: {key} must be >= 0")
    return number


def _first(metadata: dict[str, Any], tag: str) -> Any:
    values = metadata.get(tag, {}).get("Value")
    return values[0] if values else None


def matches(metadata: dict[str, Any], filters: dict[str, str]) -> bool:
    for tag, pattern in filters.items():
        value = _first(metadata, tag)
        if isinstance(value, dict):  # a person name
            value = value.get("Alphabetic", "")
        if value is None:
            return False
        text = str(value)
        if tag in _UID_TAGS:
            if text not in {p.strip() for p in pattern.replace("\\", ",").split(",")}:
                return False
        elif tag == "00100010":
            if not fnmatch.fnmatchcase(text.lower(), pattern.lower()):
                return False
        elif not fnmatch.fnmatchcase(text, pattern):
            return False
    return True


def pick(metadata: dict[str, Any], tags: tuple[str, ...]) -> dict[str, Any]:
    return {tag: metadata[tag] for tag in tags if tag in metadata}


def study_attributes(instances: list[dict[str, Any]]) -> dict[str, Any]:
    first = instances[0]
    result = pick(first, _STUDY_TAGS)
    modalities = sorted({m for m in (_first(i, "00080060") for i in instances) if m})
    if modalities:
        result["00080061"] = {"vr": "CS", "Value": modalities}
    result["00201206"] = {"vr": "IS", "Value": [len({_first(i, SERIES) for i in instances})]}
    result["00201208"] = {"vr": "IS", "Value": [len(instances)]}
    return result


def series_attributes(instances: list[dict[str, Any]]) -> dict[str, Any]:
    result = pick(instances[0], _SERIES_TAGS)
    result["00201209"] = {"vr": "IS", "Value": [len(instances)]}
    return result


def instance_attributes(metadata: dict[str, Any]) -> dict[str, Any]:
    return pick(metadata, _INSTANCE_TAGS)


def page(items: list[Any], limit: int | None, offset: int) -> list[Any]:
    items = items[offset:]
    return items if limit is None else items[:limit]


def check_uid(value: str, what: str) -> str:
    if not value or not re.fullmatch(r"[0-9A-Za-z.\-_]{1,128}", value):
        raise ApiError(400, f"invalid {what} {value!r} in the DICOMweb path")
    return value
