"""Store exports in real DAG runs (`dag.test()`, sqlite) against the Cloud Healthcare emulator and the
BigQuery and GCS stand-ins: DicomExportToBigQueryOperator with a store source (in the worker,
deferred, and started-then-sensed in reschedule mode), DicomExportToGcsOperator, filtered exports,
destination rules surfaced in the task log, cancellation, throttling bursts, and retries that
reattach to the operation their earlier try started (the emulator's operation list is the proof).
"""

from __future__ import annotations

import io
import os
import textwrap
import threading
from pathlib import Path

import pytest

from airflow_provider_dicom.healthcare.operations import EXPORT_DICOM_DATA_METHOD
from tests.helpers.dag_runs import load_dag, xcom

pytestmark = pytest.mark.integration

DAGS = '''
"""DAGs for tests/integration/test_store_export_dag.py."""
import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator
from airflow_provider_dicom.operators.export_gcs import DicomExportToGcsOperator
from airflow_provider_dicom.sensors.operation import DicomOperationSensor

PARAMS = {"store": "", "table": "", "disposition": "WRITE_EMPTY", "filter": "", "prefix": ""}


def dag(dag_id):
    return DAG(dag_id, schedule=None, start_date=datetime.datetime(2025, 1, 1), params=PARAMS)


def to_bigquery(task_id="export", **kwargs):
    kwargs.setdefault("write_disposition", "{{ params.disposition }}")
    return DicomExportToBigQueryOperator(
        task_id=task_id,
        source="{{ params.store }}",
        destination_table_uri="{{ params.table }}",
        poll_interval=0.2,
        **kwargs,
    )


with dag("store_bq_worker"):
    to_bigquery(deferrable=False)

with dag("store_bq_deferrable"):
    to_bigquery(deferrable=True)

with dag("store_bq_filtered"):
    to_bigquery(deferrable=False, filter_config="{{ params.filter }}")

with dag("store_bq_sensor"):
    start = to_bigquery(deferrable=False, wait_for_completion=False)
    start >> DicomOperationSensor(
        task_id="wait",
        operation_name="{{ ti.xcom_pull(task_ids='export')['name'] }}",
        mode="reschedule",
        poke_interval=1,
        timeout=120,
    )

with dag("store_gcs"):
    DicomExportToGcsOperator(
        task_id="export",
        source="{{ params.store }}",
        uri_prefix="{{ params.prefix }}",
        mime_type="application/dicom; transfer-syntax=*",
        deferrable=True,
        poll_interval=0.2,
    )

# Killed by its execution_timeout mid-wait and retried: the operation keeps running.
with dag("store_bq_timeout_retry"):
    to_bigquery(deferrable=False, cancel_on_kill=False, retries=6, retry_delay=datetime.timedelta(seconds=0),
                execution_timeout=datetime.timedelta(seconds=2))

# Killed by its execution_timeout mid-wait, not retried: on_kill cancels the operation.
with dag("store_bq_timeout_cancel"):
    to_bigquery(deferrable=False, cancel_on_kill=True, execution_timeout=datetime.timedelta(seconds=2))

# Killed by its execution_timeout mid-wait, which cancels the operation; the retry starts anew.
with dag("store_bq_timeout_cancel_retry"):
    to_bigquery(deferrable=False, cancel_on_kill=True, retries=1, retry_delay=datetime.timedelta(seconds=0),
                execution_timeout=datetime.timedelta(seconds=2))

# A deferred try whose polling fails is retried and defers again on the same operation.
with dag("store_bq_deferrable_retry"):
    to_bigquery(deferrable=True, retries=2, retry_delay=datetime.timedelta(seconds=0))

# A try whose polling fails while the export finishes: the retry (1 s later) finds it finished.
for deferrable in (False, True):
    with dag(f"store_bq_retry_after_finish_{'deferred' if deferrable else 'worker'}"):
        to_bigquery(deferrable=deferrable, retries=1, retry_delay=datetime.timedelta(seconds=1))
'''


@pytest.fixture(scope="module")
def dags_folder(airflow_db) -> Path:
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    (folder / "dicom_store_export_dags.py").write_text(textwrap.dedent(DAGS))
    return folder



@pytest.fixture
def emulator_env(healthcare_emulator, monkeypatch):
    """Tasks reach the emulator through the variable users set (their hooks read it)."""
    monkeypatch.setenv("HEALTHCARE_EMULATOR_HOST", healthcare_emulator.url)
    return healthcare_emulator.url


def make_instances(pydicom_corpus: Path, count: int) -> list[bytes]:
    """`count` copies of pydicom's CT_small.dcm, each its own instance (two per series)."""
    import pydicom
    from pydicom.uid import generate_uid

    template = pydicom.dcmread(pydicom_corpus / "CT_small.dcm")
    study = generate_uid()
    out = []
    for index in range(count):
        if index % 2 == 0:
            series = generate_uid()
        template.StudyInstanceUID = study
        template.SeriesInstanceUID = series
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        buffer = io.BytesIO()
        template.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


@pytest.fixture
def loaded_store(healthcare, dicom_store, pydicom_corpus) -> str:
    """The store holding pydicom's CT and MR test files (two studies)."""
    healthcare.store_instances(
        dicom_store, [pydicom_corpus / "CT_small.dcm", pydicom_corpus / "MR_small.dcm"]
    )
    return dicom_store


@pytest.fixture
def slow_store(healthcare, dicom_store, pydicom_corpus) -> str:
    """A store of 8 instances whose exports take about 4 s (0.5 s per instance)."""
    healthcare.store_instances(dicom_store, make_instances(pydicom_corpus, 8))
    healthcare.set_behaviour(instance_delay=0.5)
    return dicom_store


def export_operations(healthcare, store: str) -> list[dict]:
    dataset = store.rpartition("/dicomStores/")[0]
    return [
        op
        for op in healthcare.operations(dataset)
        if op["metadata"]["apiMethodName"] == EXPORT_DICOM_DATA_METHOD
    ]


def run(folder: Path, dag_id: str, **conf):
    dag_run = load_dag(folder, dag_id).test(run_conf=conf)
    return dag_run, {ti.task_id: ti for ti in dag_run.get_task_instances()}



def rows(client, table_uri: str) -> list[dict]:
    table_id = table_uri.removeprefix("bq://")
    return [
        dict(r.items()) for r in client.query(f"SELECT * FROM `{table_id}` ORDER BY SOPInstanceUID").result()
    ]


def sop_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def table_uri(bq_dataset: str, name: str = "instances") -> str:
    return f"bq://{bq_dataset}.{name}"


# -- export to BigQuery in three styles ----------------------------------------------------------


@pytest.mark.parametrize("dag_id", ["store_bq_worker", "store_bq_deferrable"])
def test_store_export_to_bigquery(
    dags_folder, emulator_env, healthcare, loaded_store, bq_dataset, bigquery_standin, pydicom_corpus, dag_id
):
    table = table_uri(bq_dataset)
    dag_run, tis = run(dags_folder, dag_id, store=loaded_store, table=table)
    assert tis["export"].state == "success"
    exported = rows(bigquery_standin, table)
    assert sorted(r["SOPInstanceUID"] for r in exported) == sorted(
        sop_uid(pydicom_corpus / name) for name in ("CT_small.dcm", "MR_small.dcm")
    )
    assert {r["Modality"] for r in exported} == {"CT", "MR"}
    summary = xcom(dag_run, "export")
    operations = export_operations(healthcare, loaded_store)
    assert len(operations) == 1
    assert summary["name"] == operations[0]["name"] and summary["state"] == "SUCCEEDED"
    assert (summary["success"], summary["failure"], summary["pending"]) == (2, 0, 0)
    assert summary["create_time"] and summary["end_time"] and summary["logs_url"]
    assert summary["source"] == loaded_store and summary["destination"] == table
    # The links the UI shows were computed on the worker and stored in XCom.
    assert xcom(dag_run, "export", "_link_DicomOperationLogsLink") == summary["logs_url"]
    assert "dicomStores/store" in xcom(dag_run, "export", "_link_DicomStoreLink")


def test_start_then_sensor_in_reschedule_mode(
    dags_folder, emulator_env, healthcare, slow_store, bq_dataset, bigquery_standin
):
    table = table_uri(bq_dataset)
    healthcare.set_behaviour(instance_delay=0.3)
    dag_run, tis = run(dags_folder, "store_bq_sensor", store=slow_store, table=table)
    assert {task: ti.state for task, ti in tis.items()} == {"export": "success", "wait": "success"}
    started, sensed = xcom(dag_run, "export"), xcom(dag_run, "wait")
    assert started["state"] == "RUNNING" and started["done"] is False
    assert sensed["name"] == started["name"] and sensed["state"] == "SUCCEEDED" and sensed["success"] == 8
    assert len(rows(bigquery_standin, table)) == 8
    assert len(export_operations(healthcare, slow_store)) == 1


# -- export to Cloud Storage, filtered export ----------------------------------------------------


def test_store_export_to_gcs(dags_folder, emulator_env, healthcare, loaded_store, gcs_bucket, pydicom_corpus):
    import pydicom

    dag_run, tis = run(dags_folder, "store_gcs", store=loaded_store, prefix=f"gs://{gcs_bucket.name}/out")
    assert tis["export"].state == "success"
    expected = set()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        ds = pydicom.dcmread(pydicom_corpus / name, stop_before_pixels=True)
        expected.add(f"out/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm")
    assert {blob.name for blob in gcs_bucket.list_blobs()} == expected
    summary = xcom(dag_run, "export")
    assert summary["destination"] == f"gs://{gcs_bucket.name}/out" and summary["success"] == 2


def test_filtered_export_writes_only_listed_resources(
    dags_folder, emulator_env, loaded_store, bq_dataset, bigquery_standin, gcs_bucket, pydicom_corpus
):
    import pydicom

    ct = pydicom.dcmread(pydicom_corpus / "CT_small.dcm", stop_before_pixels=True)
    gcs_bucket.blob("filters/ct.txt").upload_from_string(f"/studies/{ct.StudyInstanceUID}\r\n")
    table = table_uri(bq_dataset)
    dag_run, tis = run(
        dags_folder,
        "store_bq_filtered",
        store=loaded_store,
        table=table,
        filter=f"gs://{gcs_bucket.name}/filters/ct.txt",
    )
    assert tis["export"].state == "success"
    assert [r["SOPInstanceUID"] for r in rows(bigquery_standin, table)] == [str(ct.SOPInstanceUID)]
    assert xcom(dag_run, "export")["success"] == 1


# -- failures surfaced ---------------------------------------------------------------------------


def test_write_empty_on_a_non_empty_table_fails_with_the_emulators_error(
    dags_folder, emulator_env, healthcare, loaded_store, bq_dataset, bigquery_standin, capfd
):
    table = table_uri(bq_dataset)
    _, tis = run(dags_folder, "store_bq_worker", store=loaded_store, table=table)
    assert tis["export"].state == "success"
    capfd.readouterr()
    dag_run, tis = run(
        dags_folder, "store_bq_worker", store=loaded_store, table=table, disposition="write-empty"
    )
    assert tis["export"].state == "failed"
    log = "".join(capfd.readouterr())
    operations = export_operations(healthcare, loaded_store)
    second = next(op for op in operations if op["name"] == xcom(dag_run, "export")["name"])
    assert second["error"]["code"] == 9
    # The API's own message, with the table, in the task log.
    assert second["error"]["message"] in log and "is not empty" in log and table in log
    assert len(rows(bigquery_standin, table)) == 2  # untouched


@pytest.mark.parametrize("dag_id", ["store_bq_worker", "store_bq_deferrable"])
def test_a_cancelled_operation_fails_the_task(
    dags_folder, emulator_env, healthcare, healthcare_hook, slow_store, bq_dataset, capfd, dag_id
):
    def cancel_when_started():
        for _ in range(100):
            operations = export_operations(healthcare, slow_store)
            if operations:
                healthcare_hook.cancel_operation(operations[0]["name"])
                return
            threading.Event().wait(0.1)

    canceller = threading.Thread(target=cancel_when_started)
    canceller.start()
    try:
        dag_run, tis = run(dags_folder, dag_id, store=slow_store, table=table_uri(bq_dataset))
    finally:
        canceller.join()
    assert tis["export"].state == "failed"
    (operation,) = export_operations(healthcare, slow_store)
    assert operation["error"]["code"] == 1
    assert "was cancelled" in "".join(capfd.readouterr())
    assert xcom(dag_run, "export")["state"] == "CANCELLED"


@pytest.mark.parametrize("dag_id", ["store_bq_worker", "store_bq_deferrable"])
def test_throttling_and_unavailability_bursts_are_ridden_out(
    dags_folder, emulator_env, healthcare, loaded_store, bq_dataset, bigquery_standin, dag_id
):
    healthcare.inject_fault(503, count=3, path=r":export$", method="POST", retry_after=0.1)
    healthcare.inject_fault(429, count=3, path=r"/operations/", method="GET", retry_after=0.1)
    table = table_uri(bq_dataset)
    _, tis = run(dags_folder, dag_id, store=loaded_store, table=table)
    assert tis["export"].state == "success" and tis["export"].try_number == 1
    assert len(rows(bigquery_standin, table)) == 2
    assert len(export_operations(healthcare, loaded_store)) == 1
    statuses = [r["status"] for r in healthcare.requests()]
    assert statuses.count(503) == 3 and statuses.count(429) == 3


# -- retry safety --------------------------------------------------------------------------------


def test_a_task_killed_mid_wait_and_retried_reattaches_to_its_operation(
    dags_folder, emulator_env, healthcare, slow_store, bq_dataset, bigquery_standin, capfd
):
    table = table_uri(bq_dataset)
    _, tis = run(dags_folder, "store_bq_timeout_retry", store=slow_store, table=table)
    log = "".join(capfd.readouterr())
    assert tis["export"].state == "success"
    assert tis["export"].try_number >= 2, "the export should have outlived the first try's timeout"
    assert "Reattaching to operation" in log
    operations = export_operations(healthcare, slow_store)
    assert len(operations) == 1 and operations[0]["done"] and "error" not in operations[0]
    assert len(rows(bigquery_standin, table)) == 8


def test_a_task_killed_mid_wait_cancels_its_operation(
    dags_folder, emulator_env, healthcare, slow_store, bq_dataset
):
    _, tis = run(dags_folder, "store_bq_timeout_cancel", store=slow_store, table=table_uri(bq_dataset))
    assert tis["export"].state == "failed"
    (operation,) = export_operations(healthcare, slow_store)
    assert operation["metadata"].get("cancelRequested") is True
    deadline = threading.Event()
    for _ in range(50):
        (operation,) = export_operations(healthcare, slow_store)
        if operation.get("done"):
            break
        deadline.wait(0.1)
    assert operation["error"]["code"] == 1


def test_a_retry_after_its_operation_was_cancelled_on_kill_exports_anew(
    dags_folder, emulator_env, healthcare, slow_store, bq_dataset, bigquery_standin
):
    def speed_up_after_the_cancellation():
        # The retry's export should fit in its own 2 s: make exports fast once the first is cancelled.
        for _ in range(300):
            operations = export_operations(healthcare, slow_store)
            if operations and operations[0]["metadata"].get("cancelRequested"):
                healthcare.set_behaviour(instance_delay=0)
                return
            threading.Event().wait(0.05)

    helper = threading.Thread(target=speed_up_after_the_cancellation)
    helper.start()
    table = table_uri(bq_dataset)
    try:
        _, tis = run(dags_folder, "store_bq_timeout_cancel_retry", store=slow_store, table=table)
    finally:
        helper.join()
    assert tis["export"].state == "success" and tis["export"].try_number == 2
    operations = sorted(
        export_operations(healthcare, slow_store), key=lambda op: op["metadata"]["createTime"]
    )
    assert len(operations) == 2
    assert operations[0]["error"]["code"] == 1 and operations[1]["done"] and "error" not in operations[1]
    assert len(rows(bigquery_standin, table)) == 8


def test_a_deferred_task_retried_after_a_polling_failure_reattaches(
    dags_folder, emulator_env, healthcare, slow_store, bq_dataset, bigquery_standin, capfd
):
    healthcare.set_behaviour(instance_delay=0.2)
    # The trigger's first poll is refused (not transient): the try fails, the operation runs on.
    healthcare.inject_fault(403, count=1, path=r"/operations/", method="GET")
    table = table_uri(bq_dataset)
    dag_run, tis = run(dags_folder, "store_bq_deferrable_retry", store=slow_store, table=table)
    log = "".join(capfd.readouterr())
    assert tis["export"].state == "success" and tis["export"].try_number == 2
    assert "Reattaching to operation" in log
    operations = export_operations(healthcare, slow_store)
    assert len(operations) == 1
    assert xcom(dag_run, "export")["name"] == operations[0]["name"]
    assert len(rows(bigquery_standin, table)) == 8


@pytest.mark.matrix  # also on Airflow 2.11 and 3.1.0, which have no task state store (scripts/matrix.sh)
@pytest.mark.parametrize("where", ["worker", "deferred"])
def test_a_retry_after_its_operation_finished_uses_it_and_exports_nothing_again(
    dags_folder, emulator_env, healthcare, loaded_store, bq_dataset, bigquery_standin, capfd, where
):
    """The first try loses sight of its export (its poll is refused) while the export finishes;
    the retry must reuse that export's outcome. Exporting again would double every row with
    WRITE_APPEND: on Airflow before 3.3 the record of the operation lives in a Variable."""
    healthcare.inject_fault(403, count=1, path=r"/operations/", method="GET")
    table = table_uri(bq_dataset)
    dag_run, tis = run(
        dags_folder, f"store_bq_retry_after_finish_{where}", store=loaded_store, table=table,
        disposition="WRITE_APPEND",
    )
    log = "".join(capfd.readouterr())

    assert (tis["export"].state, tis["export"].try_number) == ("success", 2), log[-6000:]
    operations = export_operations(healthcare, loaded_store)
    assert len(operations) == 1, f"{len(operations)} exports started for one task"
    assert "already finished" in log and "not exporting again" in log
    exported = rows(bigquery_standin, table)
    assert len(exported) == len({r["SOPInstanceUID"] for r in exported}) == 2
    assert xcom(dag_run, "export")["name"] == operations[0]["name"]
    # The record is gone once the task has the outcome: nothing is left in Variables.
    assert "dicom_operation_ledger." not in _variable_keys()


def _variable_keys() -> str:
    import subprocess
    import sys

    listed = subprocess.run(
        [sys.executable, "-m", "airflow", "variables", "list", "-o", "plain"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    return listed.stdout


# -- lost responses ------------------------------------------------------------------------------


@pytest.mark.parametrize("dropped", [1, 2])
@pytest.mark.parametrize("dag_id", ["store_bq_worker", "store_bq_deferrable"])
def test_a_lost_export_response_never_starts_a_second_export(
    dags_folder, emulator_env, healthcare, slow_store, bq_dataset, bigquery_standin, capfd, dropped, dag_id
):
    """The server starts the export, then the connection closes before the answer arrives.

    The task must find the operation its request started and adopt it; re-sending the POST (the
    transport's silent retry, or ours) would start a second export and WRITE_APPEND would double
    every row.
    """
    healthcare.set_behaviour(instance_delay=0.05)
    healthcare.drop_responses(dropped, path=r":export$", method="POST")
    table = table_uri(bq_dataset)
    dag_run, tis = run(dags_folder, dag_id, store=slow_store, table=table, disposition="WRITE_APPEND")
    log = "".join(capfd.readouterr())
    assert tis["export"].state == "success"
    operations = export_operations(healthcare, slow_store)
    assert len(operations) == 1, f"{len(operations)} exports started for one task"
    exported = rows(bigquery_standin, table)
    assert len(exported) == len({r["SOPInstanceUID"] for r in exported}) == 8
    assert xcom(dag_run, "export")["name"] == operations[0]["name"]
    assert "adopting operation" in log
