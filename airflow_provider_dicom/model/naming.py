"""What a DAG run's outputs are called and which days it covers: one rule each, for every DAG.

Why this exists (verified in a running Airflow 3.3): a manual run's data interval is the trigger
instant, or nothing at all when it is triggered without a logical date (the Airflow 3 default of
the UI, `airflow dags trigger` and the REST API), so `ds` / `data_interval_start` either name
"today" for every manual run of the day or are undefined. Outputs named from them collide (three
manual cohort runs wrote one `cohort_<today>` table) or fail to render.

- `run_key(run_id)`: a name part unique to one DAG run, valid in a BigQuery table id (letters,
  digits, underscores) and a Cloud Storage object prefix. Clearing a run keeps its run id, so a
  re-done run rewrites its own outputs and no other run's.
- `output_key(dag_run)`: the interval (``YYYYMMDD``) for scheduled and backfill runs, which are
  meant to overwrite their interval's output; `run_key` for every other run (manual,
  asset-triggered), which must never overwrite a scheduled run's output or each other's.
- `covered_days(dag_run)`: the days a "process yesterday" run covers: its data interval's days
  when it has a non-empty one (scheduled and backfill runs of a data-interval timetable, and
  manual runs given a logical date), else the day before the run's `run_after` (a manual run with
  no logical date: "yesterday" as of when it was triggered), in UTC.

Airflow-free (duck-typed on the DagRun's attributes), so DAGs use these as Jinja macros
(``user_defined_macros=naming.MACROS``) and the engine and tests use them as plain functions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any

# BigQuery dataset and table names both accept these; so does every GCS tool without quoting.
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_]+")
MAX_KEY_LENGTH = 200  # leaves room for a table prefix within BigQuery's 1024-character table ids
DIGEST_LENGTH = 8
INTERVAL_RUN_TYPES = frozenset({"scheduled", "backfill"})


def run_key(run_id: str) -> str:
    """`run_id` as letters, digits and underscores, unique per run id.

    Characters outside ``[A-Za-z0-9_]`` become ``_``; when anything was replaced (or the id is
    too long), a short digest of the original id is appended, so two run ids that differ only in
    replaced characters (``a-b``, ``a.b``) never share a name.
    ``manual__2026-12-06T10:15:30.123456+00:00`` -> ``manual__2026_12_06T10_15_30_123456_00_00_<8 hex>``.
    """
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"invalid run id {run_id!r}: expected a non-empty string")
    cleaned = _NOT_ALLOWED.sub("_", run_id).strip("_") or "run"
    if cleaned == run_id and len(cleaned) <= MAX_KEY_LENGTH:
        return cleaned
    digest = hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:DIGEST_LENGTH]
    return f"{cleaned[: MAX_KEY_LENGTH - DIGEST_LENGTH - 1]}_{digest}"


def _run_type(dag_run: Any) -> str:
    value = getattr(dag_run, "run_type", None)
    return str(getattr(value, "value", value) or "")


def output_key(dag_run: Any, interval_format: str = "%Y%m%d") -> str:
    """The interval's date for scheduled and backfill runs, else `run_key(run_id)` (see module doc)."""
    start = getattr(dag_run, "data_interval_start", None)
    if _run_type(dag_run) in INTERVAL_RUN_TYPES and start is not None:
        return start.strftime(interval_format)
    return run_key(dag_run.run_id)


def _utc_date(value: dt.datetime) -> dt.date:
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc)
    return value.date()


def covered_days(dag_run: Any) -> tuple[str, str]:
    """(first, last) ISO date a "process yesterday" run covers, both inclusive (see module doc)."""
    start = getattr(dag_run, "data_interval_start", None)
    end = getattr(dag_run, "data_interval_end", None)
    if start is not None and end is not None and end > start:
        # The end is exclusive: the interval [Dec 5 00:00, Dec 6 00:00) is the one day Dec 5.
        return _utc_date(start).isoformat(), _utc_date(end - dt.timedelta(microseconds=1)).isoformat()
    anchor = getattr(dag_run, "run_after", None) or end or start
    if anchor is None:
        raise ValueError("the DAG run has neither a data interval nor run_after: cannot tell which day it covers")
    day = (_utc_date(anchor) - dt.timedelta(days=1)).isoformat()
    return day, day


# For DAG(user_defined_macros=...): {{ run_key(run_id) }}, {{ output_key(dag_run) }}, {{ covered_days(dag_run)[0] }}.
MACROS = {"run_key": run_key, "output_key": output_key, "covered_days": covered_days}

__all__ = ["MACROS", "covered_days", "output_key", "run_key"]
