"""Deployment tier fault scenario: a store export that polls in the worker (not deferred), so killing
the worker's task process lands mid-export; retries=1, as a user would configure a production DAG."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator

with DAG(
    dag_id="deploy_store_export_retry",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["deployment-test"],
    params={"store": Param("", type="string"), "table": Param("", type="string")},
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
):
    DicomExportToBigQueryOperator(
        task_id="export_store",
        source="{{ params.store }}",
        destination_table_uri="{{ params.table }}",
        write_disposition="WRITE_TRUNCATE",
        deferrable=False,
        poll_interval=0.5,
    )
