"""Comparing two exported tables row for row, minus what differs by nature of their sources.

A DICOMweb export and a folder export of the same instances cannot agree on everything; each
exclusion here says why, and everything not excluded must be equal:
- BlobStorageSize, LastUpdated: what the source knows about its storage (a file's size and mtime;
  DICOMweb offers neither) -- `SOURCE_COLUMNS`;
- the File Meta Information (group 0002): part of a file, not of the DICOM JSON model --
  `FILE_META_COLUMNS` and their DroppedTags entries;
- DS and IS values: DICOM JSON carries numbers, so "1.000000e+01" and "10" are one value -- compared
  as numbers;
- FL/FD values: a server prints binary floats in decimal, possibly rounded (Orthanc 1.10 prints
  2.6e-29 as 0.0) -- compared to 6 significant digits, and below 1e-12 as zero;
- a value that is only padding ("" after stripping) and no value: DICOM JSON has no empty string.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Iterable
from typing import Any

SOURCE_COLUMNS = frozenset({"BlobStorageSize", "LastUpdated"})


def _keywords_of_group(group: int) -> frozenset[str]:
    from pydicom.datadict import DicomDictionary

    return frozenset(entry[4] for tag, entry in DicomDictionary.items() if tag >> 16 == group and entry[4])


def _keywords_with_vr(*vrs: str) -> frozenset[str]:
    from pydicom.datadict import DicomDictionary

    return frozenset(entry[4] for entry in DicomDictionary.values() if entry[0] in vrs and entry[4])


FILE_META_COLUMNS = _keywords_of_group(0x0002)
NUMBER_TEXT_COLUMNS = _keywords_with_vr("DS", "IS")


def _float(value: float) -> float:
    if abs(value) < 1e-12:
        return 0.0
    return float(f"{value:.6g}")


def _number_or_text(text: str) -> Any:
    try:
        return _float(float(text))
    except ValueError:
        return text


def normalise(value: Any, key: str | None = None, *, drop: frozenset[str] = frozenset(), file_meta: bool = True) -> Any:
    """A value with the source-specific differences above taken out (see the module docstring)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in drop or k in SOURCE_COLUMNS or (file_meta and k in FILE_META_COLUMNS):
                continue
            if k == "DroppedTags" and file_meta and isinstance(v, list):
                v = [d for d in v if not str((d or {}).get("TagReference", "")).startswith("0002")]
            normalised = normalise(v, k, file_meta=file_meta)
            if normalised not in (None, "", [], {}):
                out[k] = normalised
        return out
    if isinstance(value, list):
        if key == "Data":  # OtherElements values: private DS/IS/FL/FD text among them
            return [_number_or_text(v) if isinstance(v, str) else v for v in value]
        return [normalise(v, key, file_meta=file_meta) for v in value]
    if key in NUMBER_TEXT_COLUMNS and isinstance(value, str):
        return _number_or_text(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, decimal.Decimal):
        return _float(float(value))
    if isinstance(value, (dt.date, dt.time, dt.datetime)):
        return value.isoformat()
    return value


def canonical(row: dict, **options: Any) -> str:
    return json.dumps(normalise(row, **options), sort_keys=True, default=str)


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where two normalised values first differ, as `Column[0].Child: a != b` (for failure messages)."""
    if type(a) is not type(b):
        return f"{path}: {a!r:.200} != {b!r:.200}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} values != {len(b)}: {a!r:.200} != {b!r:.200}"
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{path}[{i}]")
        return None
    return None if a == b else f"{path}: {a!r:.200} != {b!r:.200}"


def rows_by_sop(rows: Iterable[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row.get("SOPInstanceUID"), []).append(row)
    return out


def canonical_rows(client, table_id: str, drop: Iterable[str] = ()) -> list[str]:
    """Every row of the table as sorted-key JSON, in sorted order: two tables are equal row for
    row (whatever order BigQuery returns them in) when these lists are equal."""
    skip = set(drop)
    rows = client.query(f"SELECT * FROM `{table_id}`").result()
    return sorted(
        json.dumps({k: v for k, v in dict(row).items() if k not in skip}, sort_keys=True, default=str) for row in rows
    )
