"""Parsing Cloud Healthcare operations: string counters, absent parts, outcomes and failure messages."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from airflow_provider_dicom.healthcare.operations import (
    CANCELLED,
    EXPORT_DICOM_DATA_METHOD,
    FAILED,
    RUNNING,
    SUCCEEDED,
    HealthcareApiError,
    OperationFailedError,
    OperationName,
    OperationStatus,
    OperationTimeoutError,
    check_dataset_name,
    is_transient_error,
    parse_timestamp,
)

NAME = "projects/p/locations/us-central1/datasets/d/operations/12345678901234567"


def _operation(**overrides):
    operation = {
        "name": NAME,
        "metadata": {
            "@type": "type.googleapis.com/google.cloud.healthcare.v1.OperationMetadata",
            "apiMethodName": EXPORT_DICOM_DATA_METHOD,
            "createTime": "2024-05-01T10:00:00.123456789Z",
            "logsUrl": "https://console.cloud.google.com/logs/query/x",
            "counter": {"success": "1200", "failure": "3", "pending": "40"},
        },
    }
    operation.update(overrides)
    return operation


def test_running_operation_counters_arrive_as_strings_and_become_ints():
    status = OperationStatus.from_api(_operation())
    assert (status.success, status.failure, status.pending) == (1200, 3, 40)
    assert status.done is False and status.state == RUNNING
    assert not status.succeeded and not status.failed and not status.cancelled
    assert status.api_method_name == EXPORT_DICOM_DATA_METHOD
    assert status.logs_url == "https://console.cloud.google.com/logs/query/x"
    assert status.created_at == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert status.ended_at is None
    assert status.describe() == "RUNNING: 1200 succeeded, 3 failed, 40 pending"


def test_absent_parts_default_to_zero_and_none():
    status = OperationStatus.from_api({"name": NAME})
    assert (status.success, status.failure, status.pending, status.done) == (0, 0, 0, False)
    assert status.error_code is None and status.logs_url is None and status.response is None
    # proto3 JSON leaves zero counters out, and some servers send numbers.
    status = OperationStatus.from_api(_operation(metadata={"counter": {"success": 7}}))
    assert (status.success, status.failure, status.pending) == (7, 0, 0)


def test_succeeded_operation():
    status = OperationStatus.from_api(_operation(
        done=True, response={"@type": "type.googleapis.com/google.cloud.healthcare.v1.dicom.ExportDicomDataResponse"},
        metadata={**_operation()["metadata"], "endTime": "2024-05-01T11:00:00Z",
                  "counter": {"success": "1243"}},
    ))
    assert status.state == SUCCEEDED and status.succeeded and not status.failed
    assert status.ended_at == datetime(2024, 5, 1, 11, tzinfo=timezone.utc)
    status.check()  # nothing failed: no exception
    summary = status.to_dict()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["state"] == "SUCCEEDED" and summary["success"] == 1243 and summary["name"] == NAME


def test_failed_operation_message_names_error_counts_and_logs():
    status = OperationStatus.from_api(_operation(
        done=True, error={"code": 9, "message": "table bq://p.d.t is not empty"}
    ))
    assert status.state == FAILED and status.failed and not status.succeeded and not status.cancelled
    with pytest.raises(OperationFailedError) as caught:
        status.check(max_failed_instances=None)
    message = str(caught.value)
    assert NAME in message and "error 9: table bq://p.d.t is not empty" in message
    assert "1200 succeeded, 3 failed" in message and "https://console.cloud.google.com/logs/query/x" in message
    assert caught.value.status is status


def test_cancelled_operation_is_error_code_one():
    status = OperationStatus.from_api(_operation(done=True, error={"code": 1, "message": "Operation was cancelled."}))
    assert status.state == CANCELLED and status.cancelled and status.failed
    with pytest.raises(OperationFailedError, match="was cancelled"):
        status.check()


@pytest.mark.parametrize(("tolerated", "fails"), [(0, True), (2, True), (3, False), (None, False)])
def test_failed_instances_threshold(tolerated, fails):
    status = OperationStatus.from_api(_operation(done=True, response={}))
    assert status.succeeded and status.failure == 3
    if fails:
        with pytest.raises(OperationFailedError, match=rf"3 instances failed to export \(max_failed_instances={tolerated}\)"):
            status.check(tolerated)
    else:
        status.check(tolerated)


def test_check_refuses_a_running_operation():
    with pytest.raises(ValueError, match="has not finished"):
        OperationStatus.from_api(_operation()).check()


@pytest.mark.parametrize("bad", [{}, {"done": True}, None, "projects/p", {"name": ""}])
def test_not_an_operation(bad):
    with pytest.raises(ValueError, match="not an Operation"):
        OperationStatus.from_api(bad)


def test_a_non_integer_counter_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'many'"):
        OperationStatus.from_api(_operation(metadata={"counter": {"success": "many"}}))


def test_operation_names():
    name = OperationName.parse(NAME)
    assert name.dataset_name == "projects/p/locations/us-central1/datasets/d"
    assert name.operation_id == "12345678901234567"
    assert str(name) == NAME
    assert OperationStatus.from_api({"name": NAME}).operation_name == name
    for bad in ["operations/1", "projects/p/locations/l/datasets/d/dicomStores/s", NAME + "/x", None]:
        with pytest.raises(ValueError, match="invalid operation name"):
            OperationName.parse(bad)
    assert check_dataset_name("projects/p/locations/l/datasets/d") == "projects/p/locations/l/datasets/d"
    with pytest.raises(ValueError, match="invalid dataset name 'projects/p'"):
        check_dataset_name("projects/p")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=timezone.utc)),
        ("2024-05-01T10:00:00.5Z", datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=timezone.utc)),
        ("2024-05-01T10:00:00.123456789+00:00", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)),
        ("", None),
        (None, None),
        ("not a time", None),
    ],
)
def test_timestamps(text, expected):
    assert parse_timestamp(text) == expected


def test_transient_errors():
    assert is_transient_error(HealthcareApiError("get", 429, "RESOURCE_EXHAUSTED", "slow down"))
    assert is_transient_error(HealthcareApiError("get", 503, "UNAVAILABLE", "try later"))
    assert is_transient_error(HealthcareApiError("get", 500, "INTERNAL", "oops"))
    assert not is_transient_error(HealthcareApiError("get", 404, "NOT_FOUND", "no such operation"))
    assert not is_transient_error(HealthcareApiError("get", 403, "PERMISSION_DENIED", "no"))
    assert is_transient_error(ConnectionResetError())
    assert is_transient_error(TimeoutError())
    assert not is_transient_error(ValueError("bug"))


def test_api_error_and_timeout_messages():
    error = HealthcareApiError("operations.get " + NAME, 404, "NOT_FOUND", "Operation not found.")
    assert str(error) == f"operations.get {NAME} failed: HTTP 404 NOT_FOUND: Operation not found."
    last = OperationStatus.from_api(_operation())
    timeout = OperationTimeoutError(NAME, 2.5, last)
    assert str(timeout) == f"operation {NAME} did not finish within 2.5 s (last seen: {last.describe()})"
