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
  adding duplicate rows: every run is idempotent. Left empty, the table is the run's own
  ``instances_<run key>`` (never ``ds``: a manual run triggered without a logical date has none).
- If some files are broken DICOM, every good instance is still loaded, then the task fails with
  the count and the first failures; the ``max_failed_instances`` parameter sets how many are
  tolerated (null: any number). A failed export is not retried: a retry cannot mend a file.
- `report` prints the export summary the export task returned through XCom.

The BigQuery client comes from the `google_cloud_default` connection, as with the Google provider's
operators. For a local BigQuery emulator, set ``BIGQUERY_EMULATOR_HOST=http://127.0.0.1:PORT`` and
``AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT='{"conn_type": "google_cloud_platform", "extra": {"is_anonymous": true}}'``.

Every Param but ``max_failed_instances`` may be left empty (the form's defaults): ``source_folder``,
``project`` and ``dataset`` are then the Airflow Variables ``dicom_source_folder``,
``dicom_project`` and ``dicom_dataset``, and the table is ``instances_<run key>``
(`airflow_provider_dicom.model.naming.output_key`), so two runs never share a table.

Parsing this file makes no connection or network call: everything is read when the task runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_dicom.model import naming
from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator


def value(name: str, variable: str) -> str:
    """A run's Param, else the Airflow Variable (read when the task runs, never at parse)."""
    return "{{ params.%s or var.value.get('%s', '') }}" % (name, variable)


with DAG(
    dag_id="example_dicom_folder_to_bigquery",
    description="Export a folder of DICOM files to BigQuery with the Cloud Healthcare schema",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["example", "dicom", "bigquery"],
    user_defined_macros=naming.MACROS,
    # Optional Params admit null: the UI form treats a Param whose type excludes null as required.
    params={
        "source_folder": Param(None, type=["null", "string"], description="folder of DICOM files, read "
                               "recursively (empty: Variable dicom_source_folder)"),
        "project": Param(None, type=["null", "string"], description="Google Cloud project of the table "
                         "(empty: Variable dicom_project)"),
        "dataset": Param(None, type=["null", "string"], description="existing BigQuery dataset "
                         "(empty: Variable dicom_dataset)"),
        "table": Param(None, type=["null", "string"], description="table to create or replace "
                       "(empty: instances_<run key>)"),
        "max_failed_instances": Param(
            0, type=["integer", "null"], minimum=0,
            description="broken DICOM files tolerated before the task fails (null: any number)",
        ),
    },
) as dag:
    export = DicomExportToBigQueryOperator(
        task_id="export_folder_to_bigquery",
        source=value("source_folder", "dicom_source_folder"),
        destination_table_uri=(
            f"bq://{value('project', 'dicom_project')}.{value('dataset', 'dicom_dataset')}"
            ".{{ params.table or 'instances_' ~ output_key(dag_run) }}"
        ),
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
