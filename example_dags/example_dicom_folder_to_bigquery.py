"""
Export a folder of DICOM files into a BigQuery table shaped like the Cloud Healthcare API export's.

Trigger it from the UI ("Trigger DAG w/ config") or the command line with the folder and the
table as parameters:

    airflow dags trigger example_dicom_folder_to_bigquery \\
        --conf '{"source_folder": "/data/dicom", "project": "my-project", "dataset": "dicom", "table": "instances"}'

What it does:
- `export_folder_to_bigquery` reads every file below the folder (files that are not DICOM are
  skipped and counted), converts each instance into the row Cloud Healthcare would write, and
  loads them with BigQuery load jobs. The dataset must exist.
- It writes with WRITE_TRUNCATE, so a re-run or a retry replaces the table atomically instead of
  adding duplicate rows: every run is idempotent. For one snapshot table per run instead, add
  ``user_defined_macros=airflow_provider_dicom.naming.MACROS`` to the DAG and name the table
  ``instances_{{ output_key(dag_run) }}`` (a manual run has no ``ds`` when triggered without a
  logical date).
- If some files are broken DICOM, every good instance is still loaded, then the task fails with
  the count and the first failures; the ``max_failed_instances`` parameter sets how many are
  tolerated (null: any number). A failed export is not retried: a retry cannot mend a file.
- `report` prints the export summary the export task returned through XCom.

The BigQuery client comes from the `google_cloud_default` connection, as with the Google provider's
operators. For a local BigQuery emulator, set ``BIGQUERY_EMULATOR_HOST=http://127.0.0.1:PORT`` and
``AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT='{"conn_type": "google_cloud_platform", "extra": {"is_anonymous": true}}'``.

Parsing this file makes no connection or network call: everything is read when the task runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator

with DAG(
    dag_id="example_dicom_folder_to_bigquery",
    description="Export a folder of DICOM files to BigQuery with the Cloud Healthcare schema",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["example", "dicom", "bigquery"],
    params={
        "source_folder": Param("/data/dicom", type="string", description="folder of DICOM files, read recursively"),
        "project": Param("my-project", type="string", description="Google Cloud project of the table"),
        "dataset": Param("dicom", type="string", description="existing BigQuery dataset"),
        "table": Param("instances", type="string", description="table to create or replace"),
        "max_failed_instances": Param(
            0, type=["integer", "null"], minimum=0,
            description="broken DICOM files tolerated before the task fails (null: any number)",
        ),
    },
) as dag:
    export = DicomExportToBigQueryOperator(
        task_id="export_folder_to_bigquery",
        source="{{ params.source_folder }}",
        destination_table_uri="bq://{{ params.project }}.{{ params.dataset }}.{{ params.table }}",
        write_disposition="WRITE_TRUNCATE",
        schema="flattened",
        max_failed_instances="{{ params.max_failed_instances }}",
        gcp_conn_id="google_cloud_default",
    )

    @task
    def report(summary: dict) -> None:
        """Counts only: the summary holds no patient data, but the log should never hold any."""
        print(
            f"exported {summary['instances_exported']} instances, "
            f"{summary['failure_count']} failed, {summary['not_dicom_count']} files were not DICOM"
        )

    report(export.output)
