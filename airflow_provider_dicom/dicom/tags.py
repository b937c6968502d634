"""What the DICOM dictionary says about a tag, looked up once per tag and cached.

The engine asks this for every element of every instance, so the answer is a small tuple built
once; the pydicom dictionary (with its repeater masks) is only consulted on a cache miss.
"""

from __future__ import annotations

from typing import NamedTuple

from airflow_provider_dicom.dicom.google_columns import GOOGLE_COLUMNS
from airflow_provider_dicom.dicom.vr import column_type_for

# 50xx (curves) and 60xx (overlays) repeat their elements in up to 16 even groups; the
# Cloud Healthcare schema folds them into one keyword column of {Id, Value} records.
REPEATING_GROUP_BASES = (0x5000, 0x6000)


class TagInfo(NamedTuple):
    keyword: str  # the column name
    dictionary_vr: str  # may be ambiguous, e.g. "US or SS"
    column_type: str | None  # None: binary, no column
    repeated: bool  # VM other than "1" (or REPEATED in Google's table: google_columns.py)
    repeating_group: bool  # a 50xx/60xx element, stored as {Id, Value}


_cache: dict[int, TagInfo | None] = {}


def tag_info(tag: int) -> TagInfo | None:
    """Dictionary facts for a standard tag; None for private, group-length and unknown tags."""
    try:
        return _cache[tag]
    except KeyError:
        pass
    info = _lookup(tag)
    _cache[tag] = info
    return info


def _lookup(tag: int) -> TagInfo | None:
    from pydicom.datadict import get_entry

    group = tag >> 16
    if group & 1 or (tag & 0xFFFF) == 0:
        return None
    try:
        vr, vm, _name, _retired, keyword = get_entry(tag)
    except KeyError:
        return None
    if not keyword:
        return None
    repeating = (group & 0xFF00) in REPEATING_GROUP_BASES
    column_type, repeated = column_type_for(vr), vm != "1"
    google = GOOGLE_COLUMNS.get(keyword)
    if google is not None:  # Google's table wins over pydicom's dictionary (see google_columns.py)
        column_type, repeated = google.type, google.mode == "REPEATED"
    return TagInfo(keyword, vr, column_type, repeated, repeating)


def tag_name(tag: int) -> str:
    """The `Tag_GGGGEEEE` name the export uses for elements without a keyword column."""
    return f"Tag_{tag:08X}"


def tag_reference(tag: int) -> str:
    return f"{tag:08X}"
