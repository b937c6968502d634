"""DicomStoreHook over a scripted HTTP layer: URLs, retries and backoff, error messages, waiting, listing.

The discovery client is real (built from the shipped document); only httplib2 is replaced, so
every request goes through googleapiclient exactly as in production.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import httplib2
import pytest

from airflow_provider_dicom.healthcare.operations import (
    EXPORT_DICOM_DATA_METHOD,
    ExportOutcomeUnknownError,
    HealthcareApiError,
    OperationTimeoutError,
)
from tests.unit.healthcare_fakes import google_error, make_recording_hook

STORE = "projects/p/locations/us/datasets/d/dicomStores/s"
DATASET = "projects/p/locations/us/datasets/d"
OP = f"{DATASET}/operations/42"


def _op(done=False, created="2024-05-01T10:00:00Z", method=EXPORT_DICOM_DATA_METHOD, name=OP, **counter):
    operation = {"name": name, "metadata": {"apiMethodName": method, "createTime": created,
                                             "counter": {k: str(v) for k, v in counter.items()}}}
    if done:
        operation["done"] = True
        operation["response"] = {}
    return operation


def test_client_talks_to_the_configured_endpoint():
    hook, http = make_recording_hook([(200, _op())])
    hook.get_operation(OP)
    assert http.requests[0]["uri"] == f"http://emulator.invalid/v1/{OP}?alt=json"
    assert http.requests[0]["method"] == "GET"


def test_emulator_host_variable_sets_the_endpoint(monkeypatch):
    from airflow_provider_dicom.hooks.dicom_store import DicomStoreHook

    monkeypatch.setenv("HEALTHCARE_EMULATOR_HOST", "127.0.0.1:18090")
    assert DicomStoreHook().api_endpoint == "http://127.0.0.1:18090/"
    assert DicomStoreHook(api_endpoint="http://127.0.0.1:1").api_endpoint == "http://127.0.0.1:1/"
    monkeypatch.delenv("HEALTHCARE_EMULATOR_HOST")
    assert DicomStoreHook().api_endpoint is None


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_and_unavailable_are_retried_even_for_an_export(status):
    hook, http = make_recording_hook(
        [(status, google_error(status, "X", "busy"))] * 3 + [(200, _op())], retry_delay=1.0, max_retry_delay=3.0
    )
    operation = hook.export_dicom_to_bigquery(STORE, "bq://my-project.d.t", write_disposition="write-append")
    assert operation["name"] == OP
    assert len(http.requests) == 4
    bodies = {r["body"] for r in http.requests}
    assert len(bodies) == 1  # the same request, resent
    assert json.loads(bodies.pop()) == {
        "bigqueryDestination": {"tableUri": "bq://my-project.d.t", "writeDisposition": "WRITE_APPEND"}
    }
    # exponential backoff with jitter, capped: [0.5,1], [1,2], [1.5,3]
    assert len(hook.slept) == 3
    for delay, (low, high) in zip(hook.slept, [(0.5, 1.0), (1.0, 2.0), (1.5, 3.0)]):
        assert low <= delay <= high


def test_retry_after_header_is_honoured():
    hook, http = make_recording_hook([(429, google_error(429, "RESOURCE_EXHAUSTED", "quota"), {"retry-after": "7"}),
                                      (200, _op())])
    hook.get_operation(OP)
    assert hook.slept == [7.0]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _methods(http) -> list[str]:
    return [f"{r['method']} {r['uri'].split('/v1/')[1].split('?')[0].rsplit('/', 1)[-1]}" for r in http.requests]


def test_a_500_on_export_is_not_re_sent_when_the_export_started():
    # The 500 came after the server created the operation: adopt it, never send the export again.
    started = _op(created=_now())
    hook, http = make_recording_hook([
        (500, google_error(500, "INTERNAL", "boom")), (200, {"operations": [started]}), (200, started),
    ])
    assert hook.export_dicom_to_gcs(STORE, "gs://bucket/out")["name"] == OP
    assert _methods(http) == ["POST s:export", "GET operations", "GET 42"]


def test_a_500_on_export_that_started_nothing_is_re_sent_after_the_grace_period():
    # Every listing after the lost answer is empty: the request started no export.
    hook, http = make_recording_hook(
        [(500, google_error(500, "INTERNAL", "boom")), (200, {}), (200, _op(created=_now()))], lost_response_grace=0
    )
    assert hook.export_dicom_to_gcs(STORE, "gs://bucket/out")["name"] == OP
    assert _methods(http) == ["POST s:export", "GET operations", "POST s:export"]


def test_an_unresolved_500_on_export_is_raised_after_the_last_send():
    hook, http = make_recording_hook(
        [(500, google_error(500, "INTERNAL", "boom")), (200, {})] * 6, lost_response_grace=0
    )
    assert hook.num_retries == 5
    with pytest.raises(HealthcareApiError) as caught:
        hook.export_dicom_to_gcs(STORE, "gs://bucket/out")
    assert str(caught.value) == f"dicomStores.export of {STORE} failed: HTTP 500 INTERNAL: boom"
    assert _methods(http) == ["POST s:export", "GET operations"] * 6


def test_a_lost_export_answer_with_several_candidates_starts_nothing():
    ops = [_op(name=f"{DATASET}/operations/{n}", created=_now()) for n in (7, 8)]
    hook, http = make_recording_hook([ConnectionResetError(), (200, {"operations": ops})])
    with pytest.raises(ExportOutcomeUnknownError) as caught:
        hook.export_dicom_to_bigquery(STORE, "bq://local-dicom.d.t", write_disposition="WRITE_APPEND")
    assert caught.value.candidates == [o["name"] for o in ops]
    assert f"{DATASET}/operations/7" in str(caught.value) and "no other export was started" in str(caught.value)
    assert _methods(http) == ["POST s:export", "GET operations"]


def test_the_listing_is_given_time_to_show_the_started_export():
    started = _op(created=_now())
    hook, http = make_recording_hook(
        [ConnectionResetError(), (200, {}), (200, {}), (200, {"operations": [started]}), (200, started)],
        lost_response_grace=60,
    )
    assert hook.export_dicom_to_gcs(STORE, "gs://bucket/out")["name"] == OP
    assert _methods(http) == ["POST s:export"] + ["GET operations"] * 3 + ["GET 42"]
    assert hook.slept == [0.5, 1.0]


def test_older_exports_of_the_dataset_are_not_adopted():
    old = _op(name=f"{DATASET}/operations/1", created="2024-05-01T10:00:00Z")
    hook, http = make_recording_hook(
        [ConnectionResetError(), (200, {"operations": [old]}), (200, _op(created=_now()))], lost_response_grace=0
    )
    assert hook.export_dicom_to_gcs(STORE, "gs://bucket/out")["name"] == OP
    assert _methods(http) == ["POST s:export", "GET operations", "POST s:export"]


def test_a_500_on_get_is_retried():
    hook, http = make_recording_hook([(500, google_error(500, "INTERNAL", "boom")), (502, {}), (200, _op())])
    assert hook.get_operation(OP)["name"] == OP
    assert len(http.requests) == 3


def test_retries_are_bounded_by_num_retries():
    hook, http = make_recording_hook([(503, google_error(503, "UNAVAILABLE", "down"))] * 10)
    assert hook.num_retries == 5
    with pytest.raises(HealthcareApiError, match="HTTP 503 UNAVAILABLE: down"):
        hook.get_operation(OP)
    assert len(http.requests) == 6 and len(hook.slept) == 5


def test_client_errors_fail_at_once_with_the_servers_message():
    hook, http = make_recording_hook([(404, google_error(404, "NOT_FOUND", f"Operation {OP} not found."))])
    with pytest.raises(HealthcareApiError) as caught:
        hook.get_operation(OP)
    error = caught.value
    assert (error.status_code, error.status, error.api_message) == (404, "NOT_FOUND", f"Operation {OP} not found.")
    assert not error.transient and len(http.requests) == 1


def test_network_errors():
    # Refused: the request never left, so even an export is retried.
    hook, http = make_recording_hook([ConnectionRefusedError(), (200, _op())])
    hook.export_dicom_to_gcs(STORE, "gs://bucket/out")
    assert len(http.requests) == 2
    # Reset: the export may have reached the server; it is looked for, not sent again blindly.
    hook, http = make_recording_hook([ConnectionResetError(), (200, {"operations": [_op(created=_now())]}),
                                      (200, _op())])
    hook.export_dicom_to_gcs(STORE, "gs://bucket/out")
    assert [r["method"] for r in http.requests] == ["POST", "GET", "GET"]
    # Reads ride it out.
    hook, http = make_recording_hook([ConnectionResetError(), httplib2.ServerNotFoundError("dns"), (200, _op())])
    assert hook.get_operation(OP)["name"] == OP


def test_bad_arguments_fail_before_any_request():
    hook, http = make_recording_hook([])
    with pytest.raises(ValueError, match="'projects/p/dicomStores/s'"):
        hook.export_dicom_to_bigquery("projects/p/dicomStores/s", "bq://my-project.d.t")
    with pytest.raises(ValueError, match="not both"):
        hook.export_dicom_to_bigquery(STORE, "bq://my-project.d.t", write_disposition="WRITE_EMPTY", force=True)
    with pytest.raises(ValueError, match="'text/plain'"):
        hook.export_dicom_to_gcs(STORE, "gs://bucket/x", mime_type="text/plain")
    with pytest.raises(ValueError, match="invalid operation name"):
        hook.get_operation("operations/1")
    assert http.requests == []


def test_wait_for_operation_polls_until_done():
    hook, http = make_recording_hook([(200, _op(pending=3)), (200, _op(success=2, pending=1)),
                                      (200, _op(done=True, success=3))])
    seen = []
    status = hook.wait_for_operation(OP, poll_interval=4, on_progress=seen.append)
    assert status.succeeded and status.success == 3
    assert [s.pending for s in seen] == [3, 1]
    assert hook.slept == [4, 4]


def test_wait_for_operation_times_out_with_the_last_status(monkeypatch):
    hook, http = make_recording_hook([(200, _op(success=1, pending=5))] * 3)
    clock = iter([0.0, 0.5, 1.5, 3.0])
    monkeypatch.setattr("airflow_provider_dicom.hooks.dicom_store.time.monotonic", lambda: next(clock))
    with pytest.raises(OperationTimeoutError) as caught:
        hook.wait_for_operation(OP, poll_interval=1, timeout=2)
    assert caught.value.last.pending == 5
    assert "did not finish within 2 s" in str(caught.value)


def test_list_operations_follows_pages_and_cancel_posts_an_empty_body():
    hook, http = make_recording_hook([
        (200, {"operations": [_op(name=f"{DATASET}/operations/1")], "nextPageToken": "t1"}),
        (200, {"operations": [_op(name=f"{DATASET}/operations/2")]}),
        (200, {}),
    ])
    names = [o["name"] for o in hook.list_operations(DATASET, page_size=1)]
    assert names == [f"{DATASET}/operations/1", f"{DATASET}/operations/2"]
    assert "pageToken=t1" in http.requests[1]["uri"] and "pageSize=1" in http.requests[1]["uri"]
    hook.cancel_operation(OP)
    assert http.requests[2]["method"] == "POST" and json.loads(http.requests[2]["body"]) == {}


def test_find_export_operations_narrows_by_method_time_and_state():
    hook, http = make_recording_hook([(200, {"operations": [
        _op(name=f"{DATASET}/operations/3", created="2024-05-01T12:00:00Z"),
        _op(name=f"{DATASET}/operations/2", created="2024-05-01T11:00:00Z", done=True),
        _op(name=f"{DATASET}/operations/1", created="2024-05-01T09:00:00Z"),
        _op(name=f"{DATASET}/operations/9", created="2024-05-01T12:30:00Z",
            method="google.cloud.healthcare.v1.dataset.DatasetService.CreateDataset"),
    ]})] * 2)
    after = datetime(2024, 5, 1, 10, tzinfo=timezone.utc)
    found = hook.find_export_operations(STORE, created_after=after)
    assert [s.name[-1] for s in found] == ["2", "3"]  # oldest first, no CreateDataset, none before 10:00
    found = hook.find_export_operations(STORE, created_after=after, running_only=True)
    assert [s.name[-1] for s in found] == ["3"]
