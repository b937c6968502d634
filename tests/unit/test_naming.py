"""Per-run output names and the days a run covers (airflow_provider_dicom.model.naming): the rules the
example DAGs use so two runs never share a table or prefix, and a scheduled daily run at 00:00
takes the day that just ended."""

from __future__ import annotations

import datetime as dt
import re
from types import SimpleNamespace

import pytest

from airflow_provider_dicom.model.naming import MACROS, covered_days, output_key, run_key
from airflow_provider_dicom.model.uris import BigQueryTableUri, GcsUri

UTC = dt.timezone.utc


def run(run_type="manual", run_id="manual__2026-12-06T10:15:30.123456+00:00", start=None, end=None, run_after=None):
    return SimpleNamespace(run_type=run_type, run_id=run_id, data_interval_start=start, data_interval_end=end,
                           run_after=run_after)


@pytest.mark.parametrize(
    "run_id",
    [
        "manual__2026-12-06T10:15:30.123456+00:00",
        "scheduled__2026-12-05T00:00:00+00:00",
        "backfill__2026-12-01T00:00:00+00:00",
        "asset_triggered__2026-12-06T00:01:02.5+00:00",
        "my run: ñ/é ☃ with spaces",
        "x" * 2000,
    ],
)
def test_run_key_is_a_valid_table_name_and_prefix(run_id):
    key = run_key(run_id)
    assert re.fullmatch(r"[A-Za-z0-9_]{1,200}", key)
    assert BigQueryTableUri.parse(f"bq://my-project.d.cohort_{key}").table == f"cohort_{key}"
    assert GcsUri.parse(f"gs://bucket/cohorts/{key}/filter.txt", require_object=True).name.startswith("cohorts/")
    assert run_key(run_id) == key  # the same run (cleared, retried) gets the same name


def test_run_keys_of_different_runs_never_collide():
    ids = ["a-b", "a.b", "a_b", "a b", "a:b", "manual__2026-12-06T10:15:30+00:00", "manual__2026-12-06T10:15:31+00:00"]
    assert len({run_key(i) for i in ids}) == len(ids)
    assert run_key("a_b") == "a_b"  # already clean: kept as is
    assert run_key("manual__2026-12-06T10:15:30.123456+00:00").startswith("manual__2026_12_06T10_15_30_123456_00_00_")
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"
    assert run_key(long_a) != run_key(long_b)


@pytest.mark.parametrize("bad", ["", None, 42])
def test_run_key_rejects_what_is_not_a_run_id(bad):
    with pytest.raises(ValueError, match="invalid run id"):
        run_key(bad)


def test_output_key_is_the_interval_only_for_runs_meant_to_overwrite_it():
    day = dt.datetime(2026, 12, 5, tzinfo=UTC)
    assert output_key(run("scheduled", "scheduled__x", day, day + dt.timedelta(days=1))) == "20261205"
    assert output_key(run("backfill", "backfill__x", day, day + dt.timedelta(days=1))) == "20261205"
    # Manual and asset-triggered runs get their own name, with or without a logical date.
    assert output_key(run("manual", "manual__1", day, day)) == "manual__1"
    assert output_key(run("manual", "manual__2")) == "manual__2"
    assert output_key(run("asset_triggered", "asset_triggered__1", day, day)) == "asset_triggered__1"

    from airflow.utils.types import DagRunType  # what the worker's DagRun carries

    assert output_key(run(DagRunType.SCHEDULED, "s", day, day)) == "20261205"


def test_covered_days():
    midnight = dt.datetime(2026, 12, 6, tzinfo=UTC)
    day = dt.timedelta(days=1)
    # The scheduled run at 2026-12-06 00:00 of a daily data-interval timetable: the day that ended.
    assert covered_days(run("scheduled", start=midnight - day, end=midnight, run_after=midnight)) == (
        "2026-12-05", "2026-12-05")
    # A backfill interval: its own day, whenever it runs.
    assert covered_days(run("backfill", start=midnight - 3 * day, end=midnight - 2 * day, run_after=midnight)) == (
        "2026-12-03", "2026-12-03")
    # A manual run with no logical date (no interval): yesterday as of when it was triggered.
    later = midnight + dt.timedelta(hours=15, minutes=7)
    assert covered_days(run(run_after=later)) == ("2026-12-05", "2026-12-05")
    # A zero-length interval (a trigger timetable's manual run) counts as no interval.
    assert covered_days(run(start=later, end=later, run_after=later)) == ("2026-12-05", "2026-12-05")
    # UTC days, whatever zone the datetimes carry; a weekly interval covers its seven days.
    cet = dt.timezone(dt.timedelta(hours=1))
    assert covered_days(run(run_after=dt.datetime(2026, 12, 6, 0, 30, tzinfo=cet))) == ("2026-12-04", "2026-12-04")
    assert covered_days(run(start=midnight - 7 * day, end=midnight)) == ("2026-11-29", "2026-12-05")
    with pytest.raises(ValueError, match="cannot tell which day"):
        covered_days(run())


def test_macros_are_the_functions():
    assert MACROS == {"run_key": run_key, "output_key": output_key, "covered_days": covered_days}
