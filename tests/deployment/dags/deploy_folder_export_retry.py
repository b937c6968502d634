"""Deployment tier fault scenario: a folder export (read and loaded by the worker itself) with
retries=1, killed mid-flight by the test."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator

with DAG(
    dag_id="deploy_folder_export_retry",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["deployment-test"],
    params={"folder": Param("", type="string"), "table": Param("", type="string")},
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
):
    DicomExportToBigQueryOperator(
        task_id="export_folder",
        source="{{ params.folder }}",
        destination_table_uri="{{ params.table }}",
        write_disposition="WRITE_TRUNCATE",
        processes=1,
    )
