"""DicomExportToBigQueryOperator on remote sources in real DAG runs (dag.test(), sqlite): a DICOMweb
server (Orthanc, credentials from an Airflow HTTP connection named by a templated
dicomweb_conn_id) and a gs:// prefix (read through the operator's gcp_conn_id storage client)."""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.helpers.dag_runs import load_dag

pytestmark = pytest.mark.integration

DAGS = '''
"""DAGs for tests/integration/test_remote_operator_dag.py."""
import datetime
import json
from pathlib import Path

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator

def dicomweb_dag(dag_id, **kwargs):
    with DAG(
        dag_id,
        schedule=None,
        start_date=datetime.datetime(2025, 1, 1),
        params={"source": "", "conn": "", "table": "", "record": "", "filter": ""},
    ) as dag:
        export = DicomExportToBigQueryOperator(
            task_id="export",
            source="{{ params.source }}",
            destination_table_uri="bq://{{ params.table }}",
            dicomweb_conn_id="{{ params.conn }}",
            max_failed_instances=None,
            max_concurrent_requests=4,
            **kwargs,
        )

        @task(trigger_rule="all_done")
        def record(summary, path):
            Path(path).write_text(json.dumps(summary))

        record(export.output, "{{ params.record }}")
    return dag


everything = dicomweb_dag("dicom_export_remote")
filtered = dicomweb_dag("dicom_export_remote_filtered", filter_config="{{ params.filter }}")

with DAG(
    "dicom_export_gcs",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1),
    params={"source": "", "table": "", "record": ""},
) as gcs_dag:
    export = DicomExportToBigQueryOperator(
        task_id="export", source="{{ params.source }}", destination_table_uri="bq://{{ params.table }}",
    )

    @task(trigger_rule="all_done")
    def record_gcs(summary, path):
        Path(path).write_text(json.dumps(summary))

    record_gcs(export.output, "{{ params.record }}")
'''


@pytest.fixture(scope="module")
def dags_folder(airflow_db) -> Path:
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    (folder / "dicom_export_remote_dags.py").write_text(textwrap.dedent(DAGS))
    return folder



def run(dag, tmp_path: Path, **conf):
    record = tmp_path / f"record-{uuid.uuid4().hex[:6]}.json"
    dag_run = dag.test(run_conf={**conf, "record": str(record)})
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    return states, json.loads(record.read_text()) if record.exists() else None


@pytest.fixture
def orthanc_connection(orthanc_standin, monkeypatch) -> str:
    conn_id = f"orthanc_{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps(
            {
                "conn_type": "http",
                "login": orthanc_standin.extra["username"],
                "password": orthanc_standin.extra["password"],
            }
        ),
    )
    return conn_id


def test_dicomweb_export_in_a_dag_uses_the_http_connection(
    dags_folder, orthanc_standin, orthanc_connection, bigquery_standin, bq_dataset, tmp_path, monkeypatch
):
    import pydicom

    dag = load_dag(dags_folder, "dicom_export_remote")
    url = orthanc_standin.extra["dicomweb_url"]
    ct = pydicom.dcmread(
        next(p for p in orthanc_standin.extra["corpus"] if p.name == "CT_small.dcm"), stop_before_pixels=True
    )
    filter_file = tmp_path / "filter.txt"
    filter_file.write_text(f"/studies/{ct.StudyInstanceUID}\n")

    states, summary = run(dag, tmp_path, source=url, conn=orthanc_connection, table=f"{bq_dataset}.all")
    assert states["export"] == "success", states
    assert summary["instances_exported"] > 100
    # Orthanc's two instances under one set of UIDs: reported, tolerated by max_failed_instances=None.
    assert summary["failure_count"] == 2
    assert all("share these study, series and instance UIDs" in f["reason"] for f in summary["failures"])
    count = next(iter(bigquery_standin.query(f"SELECT COUNT(*) AS n FROM `{bq_dataset}.all`").result()))["n"]
    assert count == summary["instances_exported"]

    filtered = load_dag(dags_folder, "dicom_export_remote_filtered")
    states, summary = run(
        filtered,
        tmp_path,
        source=url,
        conn=orthanc_connection,
        table=f"{bq_dataset}.one_study",
        filter=str(filter_file),
    )
    assert states["export"] == "success", states
    rows = [
        dict(r)
        for r in bigquery_standin.query(
            f"SELECT StudyInstanceUID, SOPInstanceUID FROM `{bq_dataset}.one_study`"
        ).result()
    ]
    assert {r["StudyInstanceUID"] for r in rows} == {ct.StudyInstanceUID}
    assert ct.SOPInstanceUID in {r["SOPInstanceUID"] for r in rows}

    # Without the connection, Orthanc refuses: the task fails saying so.
    states, summary = run(dag, tmp_path, source=url, conn="", table=f"{bq_dataset}.refused")
    assert states["export"] == "failed" and summary is None


def test_gcs_export_in_a_dag_uses_the_gcp_connection(
    dags_folder, gcs_standin, gcs_bucket, pydicom_corpus, bigquery_standin, bq_dataset, tmp_path
):
    for name in ("CT_small.dcm", "MR_small.dcm", "README.txt"):
        gcs_bucket.blob(f"series/{name}").upload_from_filename(str(pydicom_corpus / name))
    dag = load_dag(dags_folder, "dicom_export_gcs")
    states, summary = run(dag, tmp_path, source=f"gs://{gcs_bucket.name}/series", table=f"{bq_dataset}.gcs")
    assert states["export"] == "success", states
    assert summary["instances_exported"] == 2 and summary["not_dicom_count"] == 1
    rows = {
        r["Modality"]: dict(r)
        for r in bigquery_standin.query(f"SELECT Modality, BlobStorageSize FROM `{bq_dataset}.gcs`").result()
    }
    assert rows["CT"]["BlobStorageSize"] == (pydicom_corpus / "CT_small.dcm").stat().st_size
