"""
Export a Cloud Healthcare API DICOM store: its metadata to BigQuery, its instance files to Cloud Storage.

Trigger it from the UI ("Trigger DAG w/ config") or the command line:

    airflow dags trigger example_dicom_store_export --conf '{
        "store": "projects/my-project/locations/us-central1/datasets/imaging/dicomStores/ct",
        "table": "bq://my-project.dicom.instances", "gcs_prefix": "gs://my-bucket/dicom"}'

Every Param may be left empty (the form's defaults): ``store`` is then the Airflow Variable
``dicom_store``, the table ``bq://<dicom_project>.<dicom_dataset>.instances_<run key>`` and the
files ``gs://<dicom_bucket>/dicom/<run key>`` (Variables ``dicom_project``, ``dicom_dataset``,
``dicom_bucket``; `airflow_provider_dicom.model.naming.output_key`), so two runs never share a table.

What it does:
- `export_metadata` calls `dicomStores.export` with a BigQuery destination and waits for the
  long-running operation in the triggerer (deferrable), so no worker slot is held for the hours a
  large store can take. WRITE_TRUNCATE makes every run replace the table, so re-runs are idempotent.
- `export_files` exports the instance files to `{gcs_prefix}/{study}/{series}/{instance}.dcm`.
- Both fail when the operation fails, is cancelled, or reports failed instances (the message
  carries the count and the operation's logs link, also shown as the task's "Operation Logs"
  link). A retried task reattaches to the operation its earlier try started instead of exporting
  twice; killing a task cancels its operation.
- `report` prints both operations' summaries (counts, times, logs link) from XCom.

The `google_cloud_default` connection supplies the credentials (its service account needs the
Healthcare DICOM Editor role on the store's dataset, where operations are checked, not on the
store alone; the Cloud Healthcare service agent needs BigQuery and Storage roles on the
destinations: README, "IAM roles each operator needs"). For the local emulator,
`python -m dicom_standins.emulator --port 8090`, set ``HEALTHCARE_EMULATOR_HOST=http://127.0.0.1:8090``
for the worker and triggerer and an anonymous connection
(``{"conn_type": "google_cloud_platform", "extra": {"is_anonymous": true}}``).

Parsing this file makes no connection or network call.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_dicom.model import naming
from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator
from airflow_provider_dicom.operators.export_gcs import DicomExportToGcsOperator

STORE_PATTERN = r"^projects/[^/]+/locations/[^/]+/datasets/[^/]+/dicomStores/[^/]+$"
POLL_SECONDS = float(os.environ.get("DICOM_EXAMPLE_POLL_SECONDS", "30"))


def var(name: str) -> str:
    """The Airflow Variable `dicom_<name>` (read when the task runs, never at parse)."""
    return "var.value.get('dicom_%s', '')" % name


# Empty Params fall back to the Variables; the default outputs are named per run (naming.output_key).
STORE = "{{ params.store or %s }}" % var("store")
TABLE = ("{{ params.table or 'bq://' ~ %s ~ '.' ~ %s ~ '.instances_' ~ output_key(dag_run) }}"
         % (var("project"), var("dataset")))
GCS_PREFIX = "{{ params.gcs_prefix or 'gs://' ~ %s ~ '/dicom/' ~ output_key(dag_run) }}" % var("bucket")

with DAG(
    dag_id="example_dicom_store_export",
    description="Export a Cloud Healthcare DICOM store to BigQuery and Cloud Storage",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["example", "dicom", "healthcare", "bigquery"],
    user_defined_macros=naming.MACROS,
    # Optional Params admit null: the UI form treats a Param whose type excludes null as required.
    params={
        "store": Param(
            None,
            type=["null", "string"],
            pattern=STORE_PATTERN,
            description="the DICOM store to export (empty: Variable dicom_store)",
        ),
        "table": Param(
            None, type=["null", "string"], description="BigQuery table to replace (empty: "
            "bq://<Variable dicom_project>.<Variable dicom_dataset>.instances_<run key>)"
        ),
        "gcs_prefix": Param(None, type=["null", "string"], description="where the files go (empty: "
                            "gs://<Variable dicom_bucket>/dicom/<run key>)"),
    },
) as dag:
    export_metadata = DicomExportToBigQueryOperator(
        task_id="export_metadata",
        source=STORE,
        destination_table_uri=TABLE,
        write_disposition="WRITE_TRUNCATE",
        deferrable=True,
        poll_interval=POLL_SECONDS,
    )

    export_files = DicomExportToGcsOperator(
        task_id="export_files",
        source=STORE,
        uri_prefix=GCS_PREFIX,
        mime_type="application/dicom; transfer-syntax=*",
        deferrable=True,
        poll_interval=POLL_SECONDS,
    )

    @task
    def report(metadata: dict, files: dict) -> None:
        for what, summary in (("metadata", metadata), ("files", files)):
            print(
                f"{what}: operation {summary['name']} {summary['state']}: {summary['success']} exported, "
                f"{summary['failure']} failed, to {summary['destination']} (logs: {summary['logs_url']})"
            )

    report(export_metadata.output, export_files.output)
