"""
Cohort subset: export a DICOM store's metadata, pick a cohort in BigQuery, and re-export just that
cohort's metadata to a second table and its DICOM files to Cloud Storage.

    export_metadata -> build_filter -> export_cohort_metadata -> report
                                    \\-> export_cohort_files  --/

This is Google's "query, save to a table, export to GCS, pass as filter" guide as one DAG you can
schedule, backfill and trigger with a form from the Airflow UI ("Trigger DAG" shows the Params):

- ``modality`` (e.g. CT, MR; empty: any), ``study_date_from`` / ``study_date_to`` (default: the
  day the run covers, see below), ``patient_ids`` (optional list), ``body_part`` (optional
  BodyPartExamined). Every Param is optional: the form's defaults can be submitted as they are.

Which day a run selects (`airflow_provider_dicom.model.naming.covered_days`): the schedule is a
data-interval timetable (``CronDataIntervalTimetable("0 0 * * *", timezone="UTC")``), so the run at
2026-12-06 00:00 covers 2026-12-05, and each backfill run covers its own day. A manual run with no
logical date (the UI form, ``airflow dags trigger``, the REST API) covers the day before it was
triggered (UTC), unless ``study_date_from`` / ``study_date_to`` say otherwise.
- Every value reaches BigQuery as a named query parameter, never spliced into the SQL; the table
  name is checked by the ``table_id`` macro before it is.

Tasks:
- ``export_metadata`` exports the whole store (``dicomStores.export``) to ``<dataset>.instances``
  with WRITE_TRUNCATE, waiting in the triggerer (deferrable).
- ``build_filter`` (BuildFilterFileOperator) queries it and writes
  ``gs://<bucket>/cohorts/<key>/filter.txt`` (instance level; invalid UIDs are reported,
  duplicates removed). An empty cohort skips the rest of the run (no file is written) instead of
  exporting nothing.
- ``export_cohort_metadata`` re-exports the cohort to ``<dataset>.cohort_<key>``
  (WRITE_TRUNCATE) and ``export_cohort_files`` its files to ``gs://<bucket>/cohorts/<key>/dicom``
  (one object per instance).
- ``report`` logs and returns the counts.

``<key>`` (`airflow_provider_dicom.model.naming.output_key`) is the interval's date (``20261205``) for
scheduled and backfill runs, and the run id made safe for table names
(``manual__2026_12_06T10_15_30_123456_00_00_<hash>``) for every other run. So two manual runs on
the same day never share a table or a folder, and clearing a run (same run id) or re-running a
backfill for the same interval rewrites exactly its own table and objects, never duplicates.

Tasks retry twice (30 s apart); a retried export reattaches to the operation it started.

Configuration: run ``conf``/Params ``store``, ``project``, ``dataset``, ``bucket``; or, left empty,
the Airflow Variables ``dicom_store``, ``dicom_project``, ``dicom_dataset``, ``dicom_bucket``.
Credentials come from the ``google_cloud_default`` connection. Locally, the same DAG runs
unchanged against the emulators: ``HEALTHCARE_EMULATOR_HOST``, ``BIGQUERY_EMULATOR_HOST`` and
``STORAGE_EMULATOR_HOST`` for the worker and triggerer, and an anonymous connection
(``{"conn_type": "google_cloud_platform", "extra": {"is_anonymous": true}}``); unset them and use a
real connection for Google Cloud. ``DICOM_EXAMPLE_POLL_SECONDS`` sets how often the operations are
polled (default 15).

Parsing this file makes no connection or network call.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param, task
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_dicom.model import naming
from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator
from airflow_provider_dicom.operators.export_gcs import DicomExportToGcsOperator
from airflow_provider_dicom.operators.filter_file import BuildFilterFileOperator

POLL_SECONDS = float(os.environ.get("DICOM_EXAMPLE_POLL_SECONDS", "15"))


def table_id(project: str, dataset: str, table: str) -> str:
    """`project.dataset.table`, checked, for the one identifier the SQL cannot take as a parameter."""
    from airflow_provider_dicom.model.uris import BigQueryTableUri

    return BigQueryTableUri.parse(f"bq://{project}.{dataset}.{table}").table_id


def expr(name: str) -> str:
    """A run's Param, else the Airflow Variable `dicom_<name>` (read when the task runs, not at parse)."""
    return f"(params.{name} or var.value.get('dicom_{name}', ''))"


STORE, PROJECT, DATASET, BUCKET = ("{{ " + expr(n) + " }}" for n in ("store", "project", "dataset", "bucket"))
# Scheduled and backfill runs: the interval's date; any other run: its own run id (naming.output_key).
KEY = "{{ output_key(dag_run) }}"
EXPORT_TABLE = f"bq://{PROJECT}.{DATASET}.instances"
COHORT_TABLE = f"bq://{PROJECT}.{DATASET}.cohort_{KEY}"
COHORT_PREFIX = f"gs://{BUCKET}/cohorts/{KEY}"

# Values only as @parameters. BodyPartExamined is referenced only when asked for: the export table
# has a column per element present in the store, and a store without it has no such column.
COHORT_SQL = (
    "SELECT StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID\n"
    f"FROM `{{{{ table_id({expr('project')}, {expr('dataset')}, 'instances') }}}}`\n"
    "WHERE StudyDate BETWEEN @date_from AND @date_to\n"
    "  AND (@modality = '' OR Modality = @modality)\n"
    "  AND (ARRAY_LENGTH(@patient_ids) = 0 OR PatientID IN UNNEST(@patient_ids))\n"
    "  AND (@body_part = ''{% if params.body_part %} OR BodyPartExamined = @body_part{% endif %})\n"
)
# The days the run covers (naming.covered_days): never `ds`/`data_interval_start`, which a manual
# run triggered without a logical date does not have.
DATE_FROM = "{{ params.study_date_from or covered_days(dag_run)[0] }}"
DATE_TO = "{{ params.study_date_to or covered_days(dag_run)[1] }}"

with DAG(
    dag_id="example_dicom_cohort",
    description="Export a DICOM store, select a cohort in BigQuery, re-export the cohort's metadata and files",
    # A data-interval timetable: the 00:00 run covers the day that just ended ("@daily" would be a
    # CronTriggerTimetable, whose 00:00 run covers the day just begun).
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["example", "dicom", "healthcare", "bigquery", "cohort"],
    user_defined_macros={"table_id": table_id, **naming.MACROS},
    # Optional Params admit null: the UI form treats a Param whose type excludes null as required.
    params={
        "store": Param(None, type=["null", "string"], description="projects/P/locations/L/datasets/D/dicomStores/S "
                       "(empty: Variable dicom_store)"),
        "project": Param(None, type=["null", "string"], description="BigQuery project (empty: Variable dicom_project)"),
        "dataset": Param(None, type=["null", "string"], description="BigQuery dataset (empty: Variable dicom_dataset)"),
        "bucket": Param(None, type=["null", "string"], description="Cloud Storage bucket (empty: Variable dicom_bucket)"),
        "modality": Param("CT", type=["null", "string"], description="Modality to select; empty for any"),
        "study_date_from": Param(None, type=["null", "string"], format="date",
                                 description="first StudyDate (default: the day the run covers)"),
        "study_date_to": Param(None, type=["null", "string"], format="date",
                               description="last StudyDate (default: the day the run covers)"),
        "patient_ids": Param([], type=["null", "array"], items={"type": "string"},
                             description="only these PatientIDs (empty: all)"),
        "body_part": Param(None, type=["null", "string"], description="BodyPartExamined (empty: any)"),
    },
) as dag:
    export_metadata = DicomExportToBigQueryOperator(
        task_id="export_metadata",
        source=STORE,
        destination_table_uri=EXPORT_TABLE,
        write_disposition="WRITE_TRUNCATE",
        deferrable=True,
        poll_interval=POLL_SECONDS,
    )

    build_filter = BuildFilterFileOperator(
        task_id="build_filter",
        sql=COHORT_SQL,
        query_parameters={
            "date_from": {"type": "DATE", "value": DATE_FROM},
            "date_to": {"type": "DATE", "value": DATE_TO},
            "modality": {"type": "STRING", "value": "{{ params.modality or '' }}"},
            "patient_ids": {"type": "ARRAY<STRING>", "value": "{{ (params.patient_ids or []) | list | tojson }}"},
            "body_part": {"type": "STRING", "value": "{{ params.body_part or '' }}"},
        },
        level="instance",
        destination=f"{COHORT_PREFIX}/filter.txt",
        on_empty="skip",
    )

    export_cohort_metadata = DicomExportToBigQueryOperator(
        task_id="export_cohort_metadata",
        source=STORE,
        destination_table_uri=COHORT_TABLE,
        write_disposition="WRITE_TRUNCATE",
        filter_config="{{ ti.xcom_pull(task_ids='build_filter')['uri'] }}",
        deferrable=True,
        poll_interval=POLL_SECONDS,
    )

    export_cohort_files = DicomExportToGcsOperator(
        task_id="export_cohort_files",
        source=STORE,
        uri_prefix=f"{COHORT_PREFIX}/dicom",
        mime_type="application/dicom; transfer-syntax=*",
        filter_config="{{ ti.xcom_pull(task_ids='build_filter')['uri'] }}",
        deferrable=True,
        poll_interval=POLL_SECONDS,
    )

    @task
    def report(cohort: dict, metadata: dict, files: dict) -> dict:
        summary = {
            "filter_file": cohort["uri"],
            "cohort": {k: cohort[k] for k in ("studies", "series", "instances", "rejected")},
            "metadata_exported": metadata["success"],
            "metadata_table": metadata["destination"],
            "files_exported": files["success"],
            "files_prefix": files["destination"],
        }
        print(
            f"cohort of {cohort['instances']} instances ({cohort['series']} series, {cohort['studies']} studies) "
            f"in {cohort['uri']}; {metadata['success']} rows to {metadata['destination']}; "
            f"{files['success']} files to {files['destination']}"
        )
        return summary

    export_metadata >> build_filter >> [export_cohort_metadata, export_cohort_files]
    report(build_filter.output, export_cohort_metadata.output, export_cohort_files.output)
