"""DicomOperationSensor in real DAG runs (`dag.test()`) on operations of the Healthcare emulator, in
poke, reschedule and deferrable modes (dag.test() runs the trigger inline): the task waits for a
slow export, succeeds with the operation's summary in XCom, and fails on a cancelled operation.
"""

from __future__ import annotations

import os
import textwrap
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SENSOR_DAGS = '''
"""DAGs for tests/integration/test_operation_sensor_dag.py."""
import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_dicom.sensors.operation import DicomOperationSensor

for mode in ("poke", "reschedule", "deferrable"):
    with DAG(f"dicom_operation_sensor_{mode}", schedule=None, start_date=datetime.datetime(2025, 1, 1),
             params={"operation": ""}) as dag:
        DicomOperationSensor(
            task_id="wait",
            operation_name="{{ params.operation }}",
            mode="reschedule" if mode == "reschedule" else "poke",
            deferrable=mode == "deferrable",
            poke_interval=0.5 if mode != "reschedule" else 1,
            timeout=120,
        )
    globals()[dag.dag_id] = dag
'''


@pytest.fixture(scope="module")
def sensor_dags(airflow_db) -> Path:
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    (folder / "dicom_operation_sensor_dags.py").write_text(textwrap.dedent(SENSOR_DAGS))
    return folder


def _dag(folder: Path, dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def _xcom(run, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter(XComModel.run_id == run.run_id, XComModel.task_id == task_id, XComModel.key == "return_value")
            .one_or_none()
        )
        return None if row is None else row.value


@pytest.fixture
def slow_export(healthcare, healthcare_hook, dicom_store, pydicom_corpus, gcs_bucket):
    """Starts an export of a few instances that takes 1-2 s; returns its operation name and
    the number of instances it exports."""
    healthcare.store_instances(dicom_store, sorted(pydicom_corpus.glob("*.dcm"))[:8])
    stored = len(healthcare.search(dicom_store, "instances"))
    assert stored >= 5
    healthcare.set_behaviour(instance_delay=0.25)

    def start() -> tuple[str, int]:
        return healthcare_hook.export_dicom_to_gcs(dicom_store, f"gs://{gcs_bucket.name}/out")["name"], stored

    return start


def _reschedules(run) -> int:
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    (ti,) = run.get_task_instances()
    with create_session() as session:
        return session.query(TaskReschedule).filter(TaskReschedule.ti_id == ti.id).count()


@pytest.fixture
def trigger_runs(monkeypatch) -> list[str]:
    """The operations DicomOperationTrigger.run() polled (dag.test() runs triggers in this process)."""
    from airflow_provider_dicom.triggers.operation import DicomOperationTrigger

    runs: list[str] = []
    original = DicomOperationTrigger.run

    async def recording_run(self):
        runs.append(self.operation_name)
        async for event in original(self):
            yield event

    monkeypatch.setattr(DicomOperationTrigger, "run", recording_run)
    return runs


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_sensor_waits_for_the_operation_and_returns_its_summary(
    sensor_dags, slow_export, healthcare_hook, trigger_runs, mode
):
    name, stored = slow_export()
    assert not healthcare_hook.get_operation_status(name).done
    run = _dag(sensor_dags, f"dicom_operation_sensor_{mode}").test(run_conf={"operation": name})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"wait": "success"}
    # Each mode really waited its own way.
    assert (_reschedules(run) > 0) is (mode == "reschedule")
    assert trigger_runs == ([name] if mode == "deferrable" else [])
    summary = _xcom(run, "wait")
    assert summary["name"] == name and summary["state"] == "SUCCEEDED"
    assert summary["success"] == stored and summary["pending"] == 0 and summary["end_time"]
    assert healthcare_hook.get_operation_status(name).done


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_sensor_fails_on_a_cancelled_operation(sensor_dags, slow_export, healthcare_hook, mode):
    name, _ = slow_export()
    # Cancel while the sensor waits.
    timer = threading.Timer(0.8, healthcare_hook.cancel_operation, args=(name,))
    timer.start()
    started = time.monotonic()
    try:
        run = _dag(sensor_dags, f"dicom_operation_sensor_{mode}").test(run_conf={"operation": name})
    finally:
        timer.join()
    assert {ti.task_id: ti.state for ti in run.get_task_instances()} == {"wait": "failed"}
    assert healthcare_hook.get_operation_status(name).cancelled
    assert time.monotonic() - started < 60
