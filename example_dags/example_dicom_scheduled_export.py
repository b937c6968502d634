"""
Scheduled full export: every day, a snapshot of a DICOM source's metadata in its own BigQuery table.

Each run exports the whole source (a Cloud Healthcare store through ``dicomStores.export``; a
folder, ``gs://`` prefix or DICOMweb URL through the provider's own reader) into
``<dataset>.instances_<key>`` with WRITE_TRUNCATE. ``<key>`` (`airflow_provider_dicom.model.naming.output_key`)
is the interval's day for scheduled and backfill runs: the run at 2026-12-06 00:00 (a data-interval
timetable) writes ``instances_20261205``, the snapshot as of the end of that day. Any other run
(triggered from the UI form or ``airflow dags trigger``, with or without a logical date) writes its
own ``instances_<run id made safe for a table name>``, so it never replaces a day's snapshot.
So a run is idempotent: clearing it, retrying it, or re-running it in a backfill from the UI
rewrites exactly its own table and no other, and never appends duplicate rows. (A retried store
export reattaches to the operation it already started rather than starting a second one; tasks
retry twice, 30 s apart.)

Backfill a range of days from the UI (or ``airflow backfill create --dag-id
example_dicom_scheduled_export --from-date 2025-01-01 --to-date 2025-01-07``): one table per day.

Asset: the export task declares the AssetAlias ``dicom-export/example_dicom_scheduled_export/export_snapshot``
and, when it succeeds, an event for the table it wrote (``bigquery://PROJECT/DATASET/instances_<key>``).
``example_dicom_cohort_on_export`` is scheduled on it.

Configuration: the Params ``source``, ``project``, ``dataset`` (from a manual trigger's form), or
for scheduled runs the Airflow Variables ``dicom_store``, ``dicom_project``, ``dicom_dataset``.
Credentials: the ``google_cloud_default`` connection. Locally, point the worker and triggerer at the
emulators with ``HEALTHCARE_EMULATOR_HOST`` and ``BIGQUERY_EMULATOR_HOST`` and an anonymous
connection; unset them and use a real connection for Google Cloud. ``DICOM_EXAMPLE_POLL_SECONDS``
sets how often the operation is polled (default 15).

Parsing this file makes no connection or network call.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param, task
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_dicom.model import naming
from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator

POLL_SECONDS = float(os.environ.get("DICOM_EXAMPLE_POLL_SECONDS", "15"))


def expr(name: str, variable: str) -> str:
    """A run's Param, else an Airflow Variable (read when the task runs, never at parse)."""
    return "{{ params.%s or var.value.get('%s', '') }}" % (name, variable)


with DAG(
    dag_id="example_dicom_scheduled_export",
    description="Daily snapshot of a DICOM source's metadata in a per-day BigQuery table",
    # A data-interval timetable: the 00:00 run is the snapshot of the day that just ended.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=2,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["example", "dicom", "bigquery", "scheduled"],
    user_defined_macros=naming.MACROS,
    # Optional Params admit null: the UI form treats a Param whose type excludes null as required.
    params={
        "source": Param(None, type=["null", "string"], description="DICOM store, folder, gs:// prefix or DICOMweb URL "
                        "(empty: Variable dicom_store)"),
        "project": Param(None, type=["null", "string"], description="BigQuery project (empty: Variable dicom_project)"),
        "dataset": Param(None, type=["null", "string"], description="BigQuery dataset (empty: Variable dicom_dataset)"),
    },
) as dag:
    export = DicomExportToBigQueryOperator(
        task_id="export_snapshot",
        source=expr("source", "dicom_store"),
        destination_table_uri=(
            f"bq://{expr('project', 'dicom_project')}.{expr('dataset', 'dicom_dataset')}"
            ".instances_{{ output_key(dag_run) }}"
        ),
        write_disposition="WRITE_TRUNCATE",
        deferrable=True,
        poll_interval=POLL_SECONDS,
    )

    @task
    def report(summary: dict) -> None:
        # A store export returns the operation's summary, other sources the engine's counts.
        exported = summary.get("success", summary.get("instances_exported"))
        table = summary.get("destination", summary.get("table_uri"))
        print(f"snapshot: {exported} instances exported to {table}")

    report(export.output)
