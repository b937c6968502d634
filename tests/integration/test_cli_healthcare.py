"""`airflow-dicom export bq|gcs STORE` and `airflow-dicom operations ...` as a user runs them: the
installed console script, pointed at the Healthcare emulator by HEALTHCARE_EMULATOR_HOST; the
emulator exports to the BigQuery and GCS stand-ins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "airflow-dicom"


@pytest.fixture
def loaded_store(healthcare, dicom_store, pydicom_corpus) -> str:
    healthcare.store_instances(
        dicom_store, [pydicom_corpus / "CT_small.dcm", pydicom_corpus / "MR_small.dcm"]
    )
    return dicom_store


def cli(healthcare_emulator, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW_CONN_")}
    env["HEALTHCARE_EMULATOR_HOST"] = healthcare_emulator.url
    return subprocess.run(
        [str(SCRIPT), *args], check=False, capture_output=True, text=True, env=env, timeout=300
    )


def dataset_of(store: str) -> str:
    return store.rpartition("/dicomStores/")[0]


def test_export_bq_then_gcloud_style_write_rules(
    healthcare_emulator, loaded_store, bq_dataset, bigquery_standin
):
    table = f"bq://{bq_dataset}.instances"
    first = cli(
        healthcare_emulator, "export", "bq", loaded_store, f"--bq-table={table}", "--poll-interval=0.2"
    )
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["state"], summary["success"], summary["failure"]) == ("SUCCEEDED", 2, 0)
    assert summary["destination"] == table and summary["source"] == loaded_store
    assert "waiting for operation" in first.stderr
    count = next(
        iter(bigquery_standin.query(f"SELECT COUNT(*) AS n FROM `{bq_dataset}.instances`").result())
    )["n"]
    assert count == 2

    again = cli(
        healthcare_emulator,
        "export",
        "bq",
        loaded_store,
        f"--bq-table={table}",
        "--poll-interval=0.2",
        "--quiet",
    )
    assert again.returncode == 1
    last = again.stderr.strip().splitlines()[-1]
    assert last.startswith("airflow-dicom: error: operation ") and f"table {table} already exists" in last
    assert json.loads(again.stdout)["state"] == "FAILED"
    assert "Traceback" not in again.stderr


def test_export_gcs_async_then_operations_describe_list_cancel(
    healthcare_emulator, healthcare, loaded_store, gcs_bucket
):
    # Outlasts the commands below however loaded the machine is (each CLI call imports Airflow
    # and the Google clients: seconds under load); cancelling wakes the export at once.
    healthcare.set_behaviour(instance_delay=300.0)
    started = cli(
        healthcare_emulator,
        "export",
        "gcs",
        loaded_store,
        f"--gcs-uri-prefix=gs://{gcs_bucket.name}/out",
        "--mime-type=application/dicom; transfer-syntax=*",
        "--async",
    )
    assert started.returncode == 0, started.stderr
    name = json.loads(started.stdout)["name"]
    assert json.loads(started.stdout)["state"] == "RUNNING"

    listed = cli(healthcare_emulator, "operations", "list", dataset_of(loaded_store), "--running")
    assert listed.returncode == 0, listed.stderr
    assert name.rpartition("/")[2] in listed.stdout and "ExportDicomData" in listed.stdout

    cancelled = cli(
        healthcare_emulator,
        "operations",
        "cancel",
        name.rpartition("/")[2],
        f"--dataset={dataset_of(loaded_store)}",
    )
    assert cancelled.returncode == 0, cancelled.stderr
    for _ in range(50):
        described = cli(healthcare_emulator, "operations", "describe", name)
        assert described.returncode == 0, described.stderr
        operation = json.loads(described.stdout)
        if operation.get("done"):
            break
        time.sleep(0.2)
    assert operation["error"]["code"] == 1 and operation["metadata"]["cancelRequested"] is True


def test_export_gcs_waits_and_writes_the_files(healthcare_emulator, loaded_store, gcs_bucket):
    done = cli(
        healthcare_emulator,
        "export",
        "gcs",
        loaded_store,
        f"--gcs-uri-prefix=gs://{gcs_bucket.name}/files",
        "--poll-interval=0.2",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["success"] == 2
    names = sorted(blob.name for blob in gcs_bucket.list_blobs())
    assert len(names) == 2 and all(
        n.startswith("files/") and n.endswith(".dcm") and n.count("/") == 3 for n in names
    )


def test_describe_of_an_unknown_operation_is_one_line(healthcare_emulator, loaded_store):
    missing = cli(healthcare_emulator, "operations", "describe", f"{dataset_of(loaded_store)}/operations/404")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        (
            f"airflow-dicom: error: operations.get {dataset_of(loaded_store)}/operations/404 failed: HTTP 404 NOT_FOUND: "
            f"Operation {dataset_of(loaded_store)}/operations/404 not found."
        )
    ]
