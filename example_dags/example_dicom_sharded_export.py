"""
Export a large DICOM archive to BigQuery, split across Airflow workers, loaded in one atomic step.

For archives too large for one task (millions of instances in a bucket, or a DICOMweb server that
serves many requests at once): the `export` task group lists the source once (`plan`), reads it in
parallel shards (`shard`, one mapped task instance each, shown as "shard 3 of 16" in the UI), and
loads everything with one BigQuery load job (`load`).

    airflow dags trigger example_dicom_sharded_export --conf '{
        "source": "gs://my-archive/dicom", "table": "my-project.dicom.instances",
        "staging": "gs://my-scratch/dicom-staging", "shards": 16}'

What to expect:
- WRITE_TRUNCATE replaces the table with the whole export, or leaves it alone: a shard that fails
  (after its retries) stops the load, and the table keeps its old rows. Clear the failed shard in
  the UI; when it succeeds, the load runs.
- The staging prefix holds each run's rows until the load succeeds, then they are removed. Give
  the bucket a lifecycle rule (e.g. delete after 7 days) for what failed runs leave behind.
- At most ``max_active_shards`` shards read at once, whatever ``shards`` is: size it to what the
  source (a DICOMweb server's connection limit) and your worker pool can take.
- A file whose SOPInstanceUID another file already has is exported once (the first in listing
  order), as in an unsharded export; the load's summary counts and lists the others.

Every Param but ``shards`` may be left empty (the form's defaults): ``source`` and ``staging`` are
then the Airflow Variables ``dicom_source`` and ``dicom_staging``, and the table is
``<dicom_project>.<dicom_dataset>.instances_<run key>`` (Variables ``dicom_project``,
``dicom_dataset``; `airflow_provider_dicom.model.naming.output_key`), so two runs never share a table.

Parsing this file makes no connection or network call: everything is read when the tasks run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_dicom.model import naming
from airflow_provider_dicom.operators.sharded_group import dicom_sharded_export


def var(name: str) -> str:
    """The Airflow Variable `dicom_<name>` (read when the task runs, never at parse)."""
    return "var.value.get('dicom_%s', '')" % name


SOURCE = "{{ params.source or %s }}" % var("source")
STAGING = "{{ params.staging or %s }}" % var("staging")
TABLE = ("{{ params.table or %s ~ '.' ~ %s ~ '.instances_' ~ output_key(dag_run) }}"
         % (var("project"), var("dataset")))

with DAG(
    dag_id="example_dicom_sharded_export",
    description="Sharded export of a large DICOM archive to BigQuery, one atomic load",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["example", "dicom", "bigquery"],
    user_defined_macros=naming.MACROS,
    # Optional Params admit null: the UI form treats a Param whose type excludes null as required.
    params={
        "source": Param(None, type=["null", "string"], description="gs:// prefix, DICOMweb base URL, or a "
                        "folder every worker sees (empty: Variable dicom_source)"),
        "table": Param(None, type=["null", "string"], description="PROJECT.DATASET.TABLE (empty: "
                       "<Variable dicom_project>.<Variable dicom_dataset>.instances_<run key>)"),
        "staging": Param(None, type=["null", "string"], description="gs:// prefix every worker can read and "
                         "write, a local folder on one machine (empty: Variable dicom_staging)"),
        "shards": Param(16, type="integer", minimum=1, maximum=10000, description="how many shards at most"),
    },
) as dag:
    export = dicom_sharded_export(
        "export",
        source=SOURCE,
        destination_table_uri="bq://" + TABLE,
        staging_uri=STAGING,
        shards="{{ params.shards }}",
        write_disposition="WRITE_TRUNCATE",
        max_failed_instances=None,
        max_active_shards=8,
        max_concurrent_requests=32,
        gcp_conn_id="google_cloud_default",
    )

    @task
    def report(summary: dict) -> None:
        """Counts only: the log never holds patient data."""
        print(
            f"{summary['shard_count']} shards exported {summary['instances_exported']} instances; "
            f"{summary['failure_count']} failed, {summary['not_dicom_count']} not DICOM, "
            f"{summary['duplicate_count']} duplicates"
        )

    report(export.get_child_by_label("load").output)
