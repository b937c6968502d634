"""
The two analyses of Google's "Exporting DICOM metadata to BigQuery" guide, as Airflow tasks.

Run them on any table the Cloud Healthcare export (or this provider's own export) wrote; the SQL is
the guide's own text (`airflow_provider_dicom.export.guide_queries`), with only the table name and, for the
patient search, the PatientID substituted (the ID as an escaped string literal, as the guide writes it).

- ``patient_dicomweb_paths``: "Searching across metadata": the DICOMweb paths of one patient's
  instances (Param ``patient_id``; the guide's own example ID by default).
- ``latest_studies``: "Querying for the latest studies": the 10 most recent studies with their
  instance counts, the start of a reading worklist.

Results land in XCom (each task's return value, shown in the UI) and in the task log; the log gets
counts, UIDs and paths only (the worklist's dates and PatientIDs stay in XCom).

Configuration: Param ``table`` (``bq://PROJECT.DATASET.TABLE``) or the Variable ``dicom_table``;
credentials from ``google_cloud_default`` (``BIGQUERY_EMULATOR_HOST`` and an anonymous connection
for the local stand-in). Parsing this file makes no connection or network call.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param, task

TABLE = "{{ params.table or var.value.get('dicom_table', '') }}"


def _run(sql: str, project: str) -> list[dict]:
    """Rows as JSON-friendly dicts (dates and times as ISO text) from the connection's client."""
    from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

    client = BigQueryHook(gcp_conn_id="google_cloud_default", use_legacy_sql=False).get_client(project_id=project)
    rows = []
    for row in client.query(sql).result():
        rows.append({k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()})
    return rows


with DAG(
    dag_id="example_dicom_guide_analyses",
    description="Google's two example analyses of an exported DICOM table",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["example", "dicom", "bigquery", "analysis"],
    params={
        # Optional: null admitted, or the UI form would treat it as required.
        "table": Param(None, type=["null", "string"], description="bq://PROJECT.DATASET.TABLE (empty: Variable dicom_table)"),
        "patient_id": Param("19045", type="string", description="PatientID to search for (the guide's example)"),
    },
) as dag:

    @task(templates_dict={"table": TABLE})
    def patient_dicomweb_paths(params: dict, templates_dict: dict) -> dict:
        from airflow_provider_dicom.export.guide_queries import patient_search_sql
        from airflow_provider_dicom.model.uris import BigQueryTableUri

        table = BigQueryTableUri.parse(templates_dict["table"])
        rows = _run(patient_search_sql(table, params["patient_id"]), table.project)
        paths = [row["DICOMwebPath"] for row in rows]
        print(f"{len(paths)} DICOMweb paths for the patient searched:")
        for path in paths[:20]:
            print(f"  {path}")
        return {"count": len(paths), "paths": paths[:1000]}

    @task(templates_dict={"table": TABLE})
    def latest_studies(templates_dict: dict) -> dict:
        from airflow_provider_dicom.export.guide_queries import latest_studies_sql
        from airflow_provider_dicom.model.uris import BigQueryTableUri

        table = BigQueryTableUri.parse(templates_dict["table"])
        rows = _run(latest_studies_sql(table), table.project)
        # The log gets UIDs and counts only; dates and patient IDs stay in the XCom result.
        print(f"the {len(rows)} latest studies (StudyInstanceUID, InstanceCount), newest first:")
        for row in rows:
            print(f"  {row['StudyInstanceUID']}  {row['InstanceCount']}")
        return {"count": len(rows), "studies": rows}

    patient_dicomweb_paths()
    latest_studies()
