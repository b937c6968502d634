"""
Cohort selection scheduled on an export: runs whenever ``example_dicom_scheduled_export`` has
written a snapshot table, and selects a cohort from exactly that table.

    exported_table -> build_filter -> report

The export task declares the AssetAlias ``dicom-export/example_dicom_scheduled_export/export_snapshot``
and attaches an asset event for the table it wrote (``bigquery://PROJECT/DATASET/instances_<key>``);
this DAG is scheduled on that alias, so Airflow starts it after each successful export (the first
time, once the DAG processor has re-parsed it and resolved the alias to the table's asset; the
UI then shows the schedule as that asset instead of "unresolved AssetAlias").

- ``exported_table``: the table named by the triggering asset event (the latest one when several
  exports happened since the last run); for a manual run, the ``table`` Param, else the Variable
  ``dicom_table``.
- ``build_filter`` queries it for ``modality`` (empty: any) and writes
  ``gs://<bucket>/cohorts/<run key>/filter.txt`` (a name unique to this run,
  `airflow_provider_dicom.model.naming.run_key`); an empty cohort skips ``report``. The filter file is
  this task's own outlet (an AssetAlias event), for a further DAG to re-export the cohort.
- ``report`` logs the counts.

Configuration: Params ``bucket`` (else Variable ``dicom_bucket``), ``modality``, ``table``.
Parsing this file makes no connection or network call.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, AssetAlias, Param, task

from airflow_provider_dicom.model import naming
from airflow_provider_dicom.operators.filter_file import BuildFilterFileOperator

EXPORT_ALIAS = "dicom-export/example_dicom_scheduled_export/export_snapshot"


def table_id(uri: str) -> str:
    """`project.dataset.table` of a checked ``bq://`` URI: the one identifier SQL cannot take as a parameter."""
    from airflow_provider_dicom.model.uris import BigQueryTableUri

    return BigQueryTableUri.parse(uri).table_id


BUCKET = "{{ params.bucket or var.value.get('dicom_bucket', '') }}"
TABLE = "{{ ti.xcom_pull(task_ids='exported_table') }}"

with DAG(
    dag_id="example_dicom_cohort_on_export",
    description="Select a cohort from each new export table (scheduled on the export's asset)",
    schedule=[AssetAlias(EXPORT_ALIAS)],
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["example", "dicom", "bigquery", "cohort", "asset"],
    user_defined_macros={"table_id": table_id, **naming.MACROS},
    params={
        "table": Param(None, type=["null", "string"],
                       description="bq://PROJECT.DATASET.TABLE for a manual run (empty: the triggering "
                       "export's table, else Variable dicom_table)"),
        "bucket": Param(None, type=["null", "string"], description="Cloud Storage bucket (empty: Variable dicom_bucket)"),
        "modality": Param("CT", type=["null", "string"], description="Modality to select; empty for any"),
    },
) as dag:

    @task
    def exported_table(params: dict, triggering_asset_events=None, triggering_dataset_events=None) -> str:
        from airflow.providers.common.compat.sdk import Variable

        from airflow_provider_dicom.utils.assets import table_uri_from_asset

        if params.get("table"):
            return params["table"]
        latest = None
        # Airflow 2 calls them dataset events (`triggering_dataset_events`, `event.dataset`).
        for events in (triggering_asset_events or triggering_dataset_events or {}).values():
            for event in events:
                uri = (getattr(event, "asset", None) or event.dataset).uri
                if uri.startswith("bigquery://") and (latest is None or event.timestamp > latest[1]):
                    latest = (uri, event.timestamp)
        if latest is not None:
            print(f"triggered by the export of {latest[0]}")
            return table_uri_from_asset(latest[0])
        table = Variable.get("dicom_table", None)  # positional: Airflow 2 names it default_var, 3 default
        if not table:
            raise ValueError("no table: not triggered by an export, and neither the table Param nor the "
                             "Variable dicom_table is set")
        return table

    table = exported_table()

    build_filter = BuildFilterFileOperator(
        task_id="build_filter",
        sql=(
            "SELECT StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID\n"
            f"FROM `{{{{ table_id({TABLE[3:-3]}) }}}}`\n"
            "WHERE (@modality = '' OR Modality = @modality)\n"
        ),
        query_parameters={"modality": {"type": "STRING", "value": "{{ params.modality or '' }}"}},
        level="instance",
        destination=f"gs://{BUCKET}/cohorts/{{{{ run_key(run_id) }}}}/filter.txt",
        on_empty="skip",
    )

    @task
    def report(cohort: dict) -> dict:
        print(f"cohort of {cohort['instances']} instances ({cohort['series']} series, "
              f"{cohort['studies']} studies) in {cohort['uri']}")
        return cohort

    table >> build_filter
    report(build_filter.output)
