"""The sharded export as users run it: a task group (plan -> mapped shards -> load) in real DAG runs
(dag.test(), sqlite), against the BigQuery, GCS and DICOMweb stand-ins."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import uuid
from pathlib import Path

import pytest

from airflow_provider_dicom.export.bigquery import export_to_bigquery
from tests.helpers.dag_runs import load_dag, xcom
from tests.helpers.table_compare import canonical_rows

pytestmark = pytest.mark.integration

DAGS = '''
"""DAGs for tests/integration/test_sharded_export_dag.py."""
import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_dicom.operators.sharded_export import (
    DicomShardExportOperator,
    DicomShardLoadOperator,
    DicomShardPlanOperator,
)
from airflow_provider_dicom.operators.sharded_group import dicom_sharded_export

PARAMS = {"source": "", "table": "", "staging": "", "shards": 3, "disposition": "WRITE_EMPTY", "conn": ""}

with DAG("dicom_sharded", schedule=None, start_date=datetime.datetime(2025, 1, 1), params=PARAMS):
    dicom_sharded_export(
        "export",
        source="{{ params.source }}",
        destination_table_uri="bq://{{ params.table }}",
        staging_uri="{{ params.staging }}",
        shards="{{ params.shards }}",
        write_disposition="{{ params.disposition }}",
        dicomweb_conn_id="{{ params.conn }}",
        max_failed_instances=None,
        max_active_shards=2,
    )


class FlakyShard(DicomShardExportOperator):
    """Injected fault: the second shard's worker dies."""

    def execute(self, context):
        if self.shard["index"] == 1:
            raise RuntimeError("injected: worker lost")
        return super().execute(context)


with DAG("dicom_sharded_flaky", schedule=None, start_date=datetime.datetime(2025, 1, 1), params=PARAMS):
    plan = DicomShardPlanOperator(
        task_id="plan", source="{{ params.source }}", destination_table_uri="bq://{{ params.table }}",
        staging_uri="{{ params.staging }}", shards=3, write_disposition="WRITE_TRUNCATE",
    )
    shards = FlakyShard.partial(task_id="shard").expand(shard=plan.output)
    load = DicomShardLoadOperator(
        task_id="load", shards=plan.output, destination_table_uri="bq://{{ params.table }}",
        write_disposition="WRITE_TRUNCATE",
    )
    shards >> load
'''


EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_dicom_sharded_export.py"


@pytest.fixture(scope="module")
def dags_folder(airflow_db) -> Path:
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    (folder / "dicom_sharded_dags.py").write_text(textwrap.dedent(DAGS))
    shutil.copy(EXAMPLE, folder / EXAMPLE.name)
    return folder


def states_of(dag_run) -> dict[str, list[str]]:
    states: dict[str, list[str]] = {}
    for ti in dag_run.get_task_instances():
        states.setdefault(ti.task_id.split(".")[-1], []).append(ti.state)
    return states


def test_sharded_export_dag_writes_the_unsharded_table(dags_folder, pydicom_corpus, bigquery_standin, bq_dataset, tmp_path):
    dag = load_dag(dags_folder, "dicom_sharded")
    staging = tmp_path / "staging"
    dag_run = dag.test(run_conf={"source": str(pydicom_corpus), "table": f"{bq_dataset}.sharded", "staging": str(staging)})
    states = states_of(dag_run)
    assert states == {"plan": ["success"], "shard": ["success"] * 3, "load": ["success"]}, states
    labels = sorted(ti.rendered_map_index for ti in dag_run.get_task_instances() if ti.task_id == "export.shard")
    assert labels == ["shard 1 of 3", "shard 2 of 3", "shard 3 of 3"]

    summary = xcom(dag_run, "export.load")
    whole = export_to_bigquery(pydicom_corpus, f"bq://{bq_dataset}.whole", client=bigquery_standin)
    assert summary["instances_exported"] == whole.instances_exported == 120
    assert summary["shard_count"] == 3
    assert summary["duplicate_count"] == 28 and summary["failure_count"] == whole.failure_count
    assert canonical_rows(bigquery_standin, f"{bq_dataset}.sharded") == canonical_rows(
        bigquery_standin, f"{bq_dataset}.whole"
    )
    assert list(staging.rglob("*.ndjson")) == []  # staging removed after the load


def test_a_failed_shard_leaves_the_destination_untouched(dags_folder, pydicom_corpus, bigquery_standin, bq_dataset, tmp_path):
    table = f"{bq_dataset}.t"
    first = export_to_bigquery(pydicom_corpus / "dicomdirtests", f"bq://{table}", client=bigquery_standin)
    before = canonical_rows(bigquery_standin, table)
    dag = load_dag(dags_folder, "dicom_sharded_flaky")
    dag_run = dag.test(run_conf={"source": str(pydicom_corpus), "table": table, "staging": str(tmp_path / "staging")})
    states = states_of(dag_run)
    assert sorted(states["shard"]) == ["failed", "success", "success"], states
    assert states["load"] == ["upstream_failed"], states
    # WRITE_TRUNCATE did not happen: the old table, every row of it.
    assert canonical_rows(bigquery_standin, table) == before
    assert bigquery_standin.get_table(table).num_rows == first.instances_exported


def test_write_empty_into_a_full_table_fails_the_plan(dags_folder, pydicom_corpus, bigquery_standin, bq_dataset, tmp_path):
    table = f"{bq_dataset}.t"
    export_to_bigquery(pydicom_corpus / "dicomdirtests", f"bq://{table}", client=bigquery_standin)
    dag = load_dag(dags_folder, "dicom_sharded")
    dag_run = dag.test(run_conf={"source": str(pydicom_corpus), "table": table, "staging": str(tmp_path / "s")})
    states = states_of(dag_run)
    assert states["plan"] == ["failed"] and states["load"] == ["upstream_failed"], states
    assert not (tmp_path / "s").exists()


def test_sharded_gcs_export_with_gcs_staging(dags_folder, gcs_standin, gcs_bucket, pydicom_corpus, bigquery_standin, bq_dataset):
    names = ("CT_small.dcm", "MR_small.dcm", "README.txt", "rtplan.dcm", "JPEG2000.dcm")
    for name in names:
        gcs_bucket.blob(f"series/{name}").upload_from_filename(str(pydicom_corpus / name))
    dag = load_dag(dags_folder, "dicom_sharded")
    dag_run = dag.test(run_conf={
        "source": f"gs://{gcs_bucket.name}/series", "table": f"{bq_dataset}.gcs",
        "staging": f"gs://{gcs_bucket.name}/staging", "shards": 2,
    })
    assert states_of(dag_run) == {"plan": ["success"], "shard": ["success"] * 2, "load": ["success"]}
    summary = xcom(dag_run, "export.load")
    assert summary["instances_exported"] == 4 and summary["not_dicom_count"] == 1
    assert summary["load_route"] == "stream"
    left = {b.name.rsplit("/", 1)[1] for b in gcs_standin.list_blobs(gcs_bucket, prefix="staging/")}
    assert left == {"plan.json", "loaded.json"}


def test_sharded_dicomweb_export_equals_the_unsharded_one(
    dags_folder, orthanc_standin, bigquery_standin, bq_dataset, tmp_path, monkeypatch
):
    conn_id = f"orthanc_{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
        "conn_type": "http", "login": orthanc_standin.extra["username"], "password": orthanc_standin.extra["password"],
    }))
    from airflow_provider_dicom.sources.dicomweb import client_from_connection

    url = orthanc_standin.extra["dicomweb_url"]
    web = client_from_connection(url, login=orthanc_standin.extra["username"], password=orthanc_standin.extra["password"])
    whole = export_to_bigquery(url, f"bq://{bq_dataset}.whole", client=bigquery_standin, dicomweb_client=web)

    dag = load_dag(dags_folder, "dicom_sharded")
    dag_run = dag.test(run_conf={
        "source": url, "table": f"{bq_dataset}.sharded", "staging": str(tmp_path / "staging"), "shards": 4,
        "conn": conn_id,
    })
    assert states_of(dag_run) == {"plan": ["success"], "shard": ["success"] * 4, "load": ["success"]}
    summary = xcom(dag_run, "export.load")
    assert summary["instances_exported"] == whole.instances_exported > 100
    assert summary["failure_count"] == whole.failure_count == 2  # Orthanc's shared-UID quirk, reported
    assert canonical_rows(bigquery_standin, f"{bq_dataset}.sharded") == canonical_rows(
        bigquery_standin, f"{bq_dataset}.whole"
    )


@pytest.mark.matrix  # also on the older Airflow sets (scripts/matrix.sh)
def test_shipped_example_runs_and_reports(dags_folder, pydicom_corpus, bigquery_standin, bq_dataset, tmp_path, capsys):
    dag = load_dag(dags_folder, "example_dicom_sharded_export")
    dag_run = dag.test(run_conf={
        "source": str(pydicom_corpus), "table": f"{bq_dataset}.instances", "staging": str(tmp_path / "staging"),
        "shards": 5,
    })
    states = states_of(dag_run)
    assert states == {"plan": ["success"], "shard": ["success"] * 5, "load": ["success"], "report": ["success"]}
    assert bigquery_standin.get_table(f"{bq_dataset}.instances").num_rows == 120
    assert "5 shards exported 120 instances" in capsys.readouterr().out
