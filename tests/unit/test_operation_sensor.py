"""DicomOperationSensor: poke outcomes, the deferrable hand-off to the trigger, and the trigger's events."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import AirflowException, PokeReturnValue

from airflow_provider_dicom.healthcare.operations import HealthcareApiError, OperationStatus
from airflow_provider_dicom.sensors.operation import DicomOperationSensor

OP = "projects/p/locations/us/datasets/d/operations/42"


def _op(done=False, error=None, **counter):
    operation = {"name": OP, "metadata": {"counter": {k: str(v) for k, v in counter.items()},
                                          "logsUrl": "http://logs.example/42"}}
    if done:
        operation["done"] = True
        operation.update({"error": error} if error else {"response": {}})
    return operation


class FakeHook:
    def __init__(self, *answers):
        self.answers = list(answers)

    def get_operation_status(self, name):
        item = self.answers.pop(0)
        if isinstance(item, BaseException):
            raise item
        return OperationStatus.from_api(item)


def _sensor(monkeypatch, *answers, **kwargs):
    sensor = DicomOperationSensor(task_id="wait", operation_name=OP, poke_interval=5, **kwargs)
    monkeypatch.setattr(sensor, "_hook", lambda: FakeHook(*answers))
    return sensor


def test_poke_waits_then_returns_the_summary(monkeypatch):
    assert _sensor(monkeypatch, _op(pending=2)).poke({}) is False
    result = _sensor(monkeypatch, _op(done=True, success=5)).poke({})
    assert isinstance(result, PokeReturnValue) and result.is_done
    assert result.xcom_value["state"] == "SUCCEEDED" and result.xcom_value["success"] == 5


def test_poke_rides_out_transient_errors_and_raises_permanent_ones(monkeypatch):
    assert _sensor(monkeypatch, HealthcareApiError("get", 503, "UNAVAILABLE", "down")).poke({}) is False
    assert _sensor(monkeypatch, ConnectionResetError()).poke({}) is False
    with pytest.raises(HealthcareApiError, match="404"):
        _sensor(monkeypatch, HealthcareApiError("get", 404, "NOT_FOUND", "gone")).poke({})


def test_failed_cancelled_or_too_many_failed_instances_fail_the_task(monkeypatch):
    with pytest.raises(AirflowException, match=r"error 9: not empty .* http://logs.example/42"):
        _sensor(monkeypatch, _op(done=True, error={"code": 9, "message": "not empty"})).poke({})
    with pytest.raises(AirflowException, match="was cancelled"):
        _sensor(monkeypatch, _op(done=True, error={"code": 1, "message": "cancelled"})).poke({})
    with pytest.raises(AirflowException, match=r"2 instances failed to export \(max_failed_instances=1\)"):
        _sensor(monkeypatch, _op(done=True, success=3, failure=2), max_failed_instances=1).poke({})
    assert _sensor(monkeypatch, _op(done=True, failure=2), max_failed_instances=None).poke({}).is_done


def test_deferrable_defers_to_the_trigger_with_conn_chain_and_interval(monkeypatch):
    from airflow.providers.common.compat.sdk import TaskDeferred

    sensor = _sensor(monkeypatch, _op(pending=1), deferrable=True, gcp_conn_id="my_gcp",
                     impersonation_chain="sa@p.iam.gserviceaccount.com", api_endpoint="http://127.0.0.1:5",
                     cancel_on_kill=True, timeout=600)
    with pytest.raises(TaskDeferred) as caught:
        sensor.execute({})
    deferred = caught.value
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout.total_seconds() == 600
    classpath, kwargs = deferred.trigger.serialize()
    assert classpath.endswith("DicomOperationTrigger")
    assert kwargs["operation_name"] == OP and kwargs["gcp_conn_id"] == "my_gcp"
    assert kwargs["impersonation_chain"] == "sa@p.iam.gserviceaccount.com"
    assert kwargs["poll_interval"] == 5 and kwargs["cancel_on_kill"] is True
    assert kwargs["api_endpoint"] == "http://127.0.0.1:5/"


def test_deferrable_does_not_defer_an_operation_already_done(monkeypatch):
    sensor = _sensor(monkeypatch, _op(done=True, success=1), deferrable=True)
    assert sensor.execute({})["state"] == "SUCCEEDED"


def test_execute_complete(monkeypatch):
    sensor = _sensor(monkeypatch)
    assert sensor.execute_complete({}, {"status": "success", "operation": _op(done=True, success=4)})["success"] == 4
    with pytest.raises(AirflowException, match="error 9"):
        sensor.execute_complete({}, {"status": "failed", "operation": _op(done=True, error={"code": 9, "message": "x"})})
    with pytest.raises(AirflowException, match="cannot poll"):
        sensor.execute_complete({}, {"status": "error", "message": "cannot poll operation", "operation": None})
    with pytest.raises(AirflowException, match="no event"):
        sensor.execute_complete({}, None)


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="invalid operation name 'operations/1'"):
        DicomOperationSensor(task_id="w", operation_name="operations/1")
    with pytest.raises(ValueError, match="max_failed_instances"):
        DicomOperationSensor(task_id="w", operation_name=OP, max_failed_instances=-1)
    # A template is checked after rendering.
    DicomOperationSensor(task_id="w", operation_name="{{ ti.xcom_pull('export')['name'] }}")


def test_importing_the_sensor_does_not_import_heavy_modules():
    import json
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "import airflow_provider_dicom.sensors.operation, airflow_provider_dicom.triggers.operation\n"
        "import airflow_provider_dicom.healthcare.operations, airflow_provider_dicom.healthcare.export_requests\n"
        "heavy = ('pydicom', 'google.cloud.bigquery', 'google.cloud.storage', 'googleapiclient',\n"
        "         'airflow.providers.google.cloud.hooks', 'airflow.providers.google.common.hooks')\n"
        "print(json.dumps(sorted({m for m in sys.modules if m.startswith(heavy)})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


class _TI:
    def __init__(self, try_number):
        self.try_number = try_number


def test_a_retry_replayed_an_earlier_trys_event_polls_afresh(monkeypatch):
    """Airflow 3.0 to 3.1.0 send a retry to the resume method with the failed try's event
    (apache/airflow#56704); the sensor polls again instead of failing on the stale event."""
    from airflow.providers.common.compat.sdk import TaskDeferred

    sensor = _sensor(monkeypatch, _op(done=True, success=2), deferrable=True)
    stale = {"status": "error", "message": "cannot poll operation", "operation": None, "deferred_by_try": 1}
    assert sensor.execute_complete({"ti": _TI(2)}, stale)["success"] == 2
    # Its own try's event is judged as before.
    with pytest.raises(AirflowException, match="cannot poll"):
        sensor.execute_complete({"ti": _TI(1)}, stale)
    # The try that defers puts its number in the trigger.
    sensor = _sensor(monkeypatch, _op(pending=1), deferrable=True)
    with pytest.raises(TaskDeferred) as caught:
        sensor.execute({"ti": _TI(4)})
    assert caught.value.trigger.serialize()[1]["deferred_by_try"] == 4
