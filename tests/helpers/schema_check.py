"""Check a row against a BigQuery schema the way a load job would, before any load job runs.

A row the engine produces is only useful if BigQuery accepts it under the table schema: a value of
the wrong JSON type, a NULL inside an array, an unknown column or an unparsable date fails the
whole load job (or, worse, lands as NULL). These checks give one readable problem per bad value,
named by its path in the row (``ContentSequence[0].ConceptNameCodeSequence[0].CodeValue``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_dicom.dicom.schema import Field

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?$")
# The canonical forms BigQuery's JSON loader takes for TIMESTAMP: date, 'T' or space, time,
# optional fraction (up to microseconds), optional zone (Z, +HH:MM, +HHMM, +HH or ' UTC').
_TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?(Z|[+-]\d{2}(:?\d{2})?| UTC)?$"
)


def _check_date(value: str) -> str | None:
    if not _DATE.match(value):
        return f"DATE must look like YYYY-MM-DD, got {value!r}"
    try:
        dt.date.fromisoformat(value)
    except ValueError as exc:
        return f"DATE {value!r} is not a calendar date ({exc})"
    return None


def _check_clock(hour: str, minute: str, second: str) -> bool:
    # BigQuery TIME/TIMESTAMP allow a leap second (:60) only in some inputs; keep to 0..59.
    return int(hour) <= 23 and int(minute) <= 59 and int(second) <= 59


def _check_time(value: str) -> str | None:
    match = _TIME.match(value)
    if not match or not _check_clock(*match.groups()[:3]):
        return f"TIME must look like HH:MM:SS[.ffffff], got {value!r}"
    return None


def _check_timestamp(value: str) -> str | None:
    match = _TIMESTAMP.match(value)
    if not match:
        return f"TIMESTAMP must look like YYYY-MM-DD[ T]HH:MM:SS[.ffffff][zone], got {value!r}"
    date, hour, minute, second = match.groups()[:4]
    problem = _check_date(date)
    if problem:
        return f"TIMESTAMP {value!r}: {problem}"
    if not _check_clock(hour, minute, second):
        return f"TIMESTAMP {value!r} has an impossible time of day"
    return None


def _scalar_problem(field_type: str, value: Any) -> str | None:
    """Why `value` cannot load into a column of `field_type`, or None when it can."""
    if field_type == "STRING":
        return None if isinstance(value, str) else f"STRING expects str, got {type(value).__name__} {value!r}"
    if field_type == "INTEGER":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"INTEGER expects int, got {type(value).__name__} {value!r}"
        if not INT64_MIN <= value <= INT64_MAX:
            return f"INTEGER {value} is outside the INT64 range"
        return None
    if field_type == "FLOAT":
        # A JSON integer loads into FLOAT too; a bool or a string does not.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"FLOAT expects float, got {type(value).__name__} {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"FLOAT {value!r} is not a finite number (not valid JSON)"
        return None
    if field_type in ("DATE", "TIME", "TIMESTAMP"):
        if not isinstance(value, str):
            return f"{field_type} expects a string, got {type(value).__name__} {value!r}"
        return {"DATE": _check_date, "TIME": _check_time, "TIMESTAMP": _check_timestamp}[field_type](value)
    if field_type == "BOOLEAN":
        return None if isinstance(value, bool) else f"BOOLEAN expects bool, got {value!r}"
    if field_type == "JSON":
        # A JSON column takes a JSON document as text or as an already-structured value.
        if isinstance(value, str):
            try:
                json.loads(value)
            except ValueError as exc:
                return f"JSON column holds text that is not JSON ({exc})"
            return None
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return f"JSON column holds a value that is not JSON-serialisable ({exc})"
        return None
    return f"unknown column type {field_type}"


def row_problems(row: Mapping[str, Any], fields: Iterable[Field], path: str = "") -> list[str]:
    """Every reason BigQuery would reject or mis-load `row` under `fields`, as 'path: reason'."""
    problems: list[str] = []
    if not isinstance(row, Mapping):
        return [f"{path or '<row>'}: RECORD expects a JSON object, got {type(row).__name__}"]
    by_name = {f.name: f for f in fields}
    for name, value in row.items():
        where = f"{path}.{name}" if path else name
        field = by_name.get(name)
        if field is None:
            problems.append(f"{where}: no such column in the schema")
            continue
        problems.extend(_value_problems(field, value, where))
    return problems


def _value_problems(field: Field, value: Any, where: str) -> list[str]:
    if value is None:
        # NULL is fine for a NULLABLE column; for REPEATED a load job reads it as an empty array.
        return []
    if field.mode == "REPEATED":
        if not isinstance(value, list):
            return [f"{where}: REPEATED column expects a list, got {type(value).__name__} {value!r}"]
        problems = []
        for index, item in enumerate(value):
            item_where = f"{where}[{index}]"
            if item is None:
                problems.append(f"{item_where}: an array cannot hold NULL")
            else:
                problems.extend(_single_problems(field, item, item_where))
        return problems
    if isinstance(value, list):
        return [f"{where}: {field.mode} column got a list {value!r}"]
    return _single_problems(field, value, where)


def _single_problems(field: Field, value: Any, where: str) -> list[str]:
    if field.type == "RECORD":
        if not isinstance(value, Mapping):
            return [f"{where}: RECORD expects a JSON object, got {type(value).__name__} {value!r}"]
        return row_problems(value, field.fields, where)
    problem = _scalar_problem(field.type, value)
    return [f"{where}: {problem}"] if problem else []


def assert_row_fits(row: Mapping[str, Any], fields: Iterable[Field], label: str = "row") -> None:
    """Fail with every problem listed when `row` would not load under `fields`."""
    problems = row_problems(row, tuple(fields))
    if problems:
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise AssertionError(f"{label} does not fit the schema:\n  {shown}{more}")


def schema_problems(fields: Iterable[Field], path: str = "") -> list[str]:
    """Reasons BigQuery would refuse the schema itself: duplicate names, empty RECORDs,
    unknown types or modes, more than 15 levels of RECORD nesting, more than 10,000 columns."""
    problems: list[str] = []
    fields = tuple(fields)
    seen: set[str] = set()
    for field in fields:
        where = f"{path}.{field.name}" if path else field.name
        if field.name.lower() in seen:
            problems.append(f"{where}: duplicate column name (BigQuery names are case-insensitive)")
        seen.add(field.name.lower())
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$", field.name):
            problems.append(f"{where}: not a valid BigQuery column name")
        if field.mode not in ("NULLABLE", "REQUIRED", "REPEATED"):
            problems.append(f"{where}: unknown mode {field.mode}")
        if field.type == "RECORD":
            if not field.fields:
                problems.append(f"{where}: RECORD without sub-fields")
            problems.extend(schema_problems(field.fields, where))
        elif field.fields:
            problems.append(f"{where}: {field.type} column has sub-fields")
        elif field.type not in ("STRING", "INTEGER", "FLOAT", "DATE", "TIME", "TIMESTAMP", "BOOLEAN", "JSON"):
            problems.append(f"{where}: unexpected column type {field.type}")
    if not path:
        depth = max((f.depth() for f in fields), default=0)
        if depth > 15:
            problems.append(f"RECORD nesting is {depth} levels deep; BigQuery allows 15")
        columns = sum(f.column_count() for f in fields)
        if columns > 10_000:
            problems.append(f"{columns} columns including nested ones; BigQuery allows 10,000")
    return problems
