"""DicomOperationTrigger: serialisation round trip, exactly one event, transient errors ridden out."""

from __future__ import annotations

import asyncio
import importlib

import pytest

from airflow_provider_dicom.healthcare.operations import HealthcareApiError
from airflow_provider_dicom.triggers.operation import DicomOperationTrigger

OP = "projects/p/locations/us/datasets/d/operations/42"


class FakeAsyncHook:
    """Answers get_operation from a script of operations (dicts) and exceptions."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = 0
        self.cancelled: list[str] = []

    async def get_operation(self, name):
        assert name == OP
        self.calls += 1
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    async def cancel_operation(self, name):
        self.cancelled.append(name)


def _op(done=False, error=None, **counter):
    operation = {"name": OP, "metadata": {"counter": {k: str(v) for k, v in counter.items()}}}
    if done:
        operation["done"] = True
        if error:
            operation["error"] = error
        else:
            operation["response"] = {}
    return operation


def _returning(hook):
    async def get_async_hook():
        return hook

    return get_async_hook


def _run(trigger, hook, monkeypatch):
    monkeypatch.setattr(trigger, "_get_async_hook", _returning(hook))

    async def collect():
        return [event async for event in trigger.run()]

    return asyncio.run(collect())


def _trigger(**kwargs):
    return DicomOperationTrigger(OP, poll_interval=0.001, **kwargs)


def test_serialize_round_trip(monkeypatch):
    monkeypatch.delenv("HEALTHCARE_EMULATOR_HOST", raising=False)
    trigger = DicomOperationTrigger(
        OP, gcp_conn_id="my_gcp", impersonation_chain=("a@p.iam.gserviceaccount.com", "b@p.iam.gserviceaccount.com"),
        poll_interval=15, api_endpoint="http://127.0.0.1:8090", max_poll_errors=4, cancel_on_kill=True,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_dicom.triggers.operation.DicomOperationTrigger"
    assert kwargs == {
        "operation_name": OP,
        "gcp_conn_id": "my_gcp",
        "impersonation_chain": ["a@p.iam.gserviceaccount.com", "b@p.iam.gserviceaccount.com"],
        "poll_interval": 15.0,
        "api_endpoint": "http://127.0.0.1:8090/",
        "max_poll_errors": 4,
        "cancel_on_kill": True,
    }
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)


def test_endpoint_is_pinned_when_the_trigger_is_made(monkeypatch):
    monkeypatch.setenv("HEALTHCARE_EMULATOR_HOST", "127.0.0.1:9999")
    assert DicomOperationTrigger(OP).serialize()[1]["api_endpoint"] == "http://127.0.0.1:9999/"


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"operation_name": "operations/1"}, "invalid operation name"), ({"poll_interval": 0}, "poll_interval")],
)
def test_bad_arguments(kwargs, words):
    with pytest.raises(ValueError, match=words):
        DicomOperationTrigger(**{"operation_name": OP, **kwargs})


def test_yields_one_success_event_when_done(monkeypatch):
    hook = FakeAsyncHook([_op(pending=3), _op(success=1, pending=2), _op(done=True, success=3)])
    events = _run(_trigger(), hook, monkeypatch)
    assert len(events) == 1 and hook.calls == 3
    payload = events[0].payload
    assert payload["status"] == "success" and payload["operation_name"] == OP
    assert payload["operation"]["metadata"]["counter"]["success"] == "3"
    assert "SUCCEEDED: 3 succeeded, 0 failed, 0 pending" in payload["message"]


def test_failed_and_cancelled_operations_are_failed_events(monkeypatch):
    for error in ({"code": 9, "message": "table not empty"}, {"code": 1, "message": "Operation was cancelled."}):
        events = _run(_trigger(), FakeAsyncHook([_op(done=True, error=error)]), monkeypatch)
        assert [e.payload["status"] for e in events] == ["failed"]
        assert events[0].payload["operation"]["error"] == error
        assert error["message"] in events[0].payload["message"]


def test_transient_errors_are_ridden_out(monkeypatch):
    hook = FakeAsyncHook([
        _op(pending=2),
        HealthcareApiError("operations.get", 503, "UNAVAILABLE", "down"),
        ConnectionResetError("reset"),
        HealthcareApiError("operations.get", 429, "RESOURCE_EXHAUSTED", "slow down"),
        _op(success=1, pending=1),
        TimeoutError("timed out"),
        _op(done=True, success=2),
    ])
    events = _run(_trigger(max_poll_errors=3), hook, monkeypatch)
    assert [e.payload["status"] for e in events] == ["success"]
    assert hook.calls == 7


def test_too_many_transient_errors_in_a_row_end_in_one_error_event(monkeypatch):
    failures = [HealthcareApiError("operations.get", 503, "UNAVAILABLE", "down")] * 4
    hook = FakeAsyncHook([_op(pending=2), *failures, _op(done=True)])
    events = _run(_trigger(max_poll_errors=3), hook, monkeypatch)
    assert len(events) == 1 and hook.calls == 5
    payload = events[0].payload
    assert payload["status"] == "error"
    assert "4 failed polls in a row" in payload["message"] and "HTTP 503" in payload["message"]
    assert payload["operation"]["name"] == OP  # the last operation seen


def test_a_permanent_error_ends_at_once(monkeypatch):
    hook = FakeAsyncHook([HealthcareApiError("operations.get", 404, "NOT_FOUND", "Operation not found."), _op()])
    events = _run(_trigger(max_poll_errors=10), hook, monkeypatch)
    assert [e.payload["status"] for e in events] == ["error"]
    assert hook.calls == 1 and "Operation not found." in events[0].payload["message"]
    assert events[0].payload["operation"] is None


def test_on_kill_cancels_only_when_asked(monkeypatch):
    for cancel, expected in ((True, [OP]), (False, [])):
        trigger = _trigger(cancel_on_kill=cancel)
        hook = FakeAsyncHook([])
        monkeypatch.setattr(trigger, "_get_async_hook", _returning(hook))
        asyncio.run(trigger.on_kill())
        assert hook.cancelled == expected


def test_async_hook_uses_the_connection_and_chain(monkeypatch):
    trigger = DicomOperationTrigger(OP, gcp_conn_id="my_gcp", impersonation_chain="sa@p.iam.gserviceaccount.com",
                                    api_endpoint="http://127.0.0.1:1")
    hook = asyncio.run(trigger._get_async_hook())
    assert hook._hook_kwargs == {
        "gcp_conn_id": "my_gcp",
        "impersonation_chain": "sa@p.iam.gserviceaccount.com",
        "api_endpoint": "http://127.0.0.1:1/",
    }


def test_async_hook_runs_the_sync_hooks_call_off_the_loop():
    from googleapiclient.discovery import build

    from airflow_provider_dicom.hooks.dicom_store import DicomStoreAsyncHook
    from tests.unit.healthcare_fakes import RecordingHttp

    http = RecordingHttp([(200, _op(done=True)), (200, {})])

    async def scenario():
        hook = DicomStoreAsyncHook(api_endpoint="http://emulator.invalid")
        sync = await hook.get_sync_hook()
        assert sync.gcp_conn_id == "google_cloud_default" and sync.api_endpoint == "http://emulator.invalid/"
        sync._conn = build("healthcare", "v1", http=http, static_discovery=True,
                           client_options={"api_endpoint": sync.api_endpoint})
        operation = await hook.get_operation(OP)
        await hook.cancel_operation(OP)
        return operation

    assert asyncio.run(scenario())["done"] is True
    assert [r["method"] for r in http.requests] == ["GET", "POST"]
    assert http.requests[1]["uri"].startswith(f"http://emulator.invalid/v1/{OP}:cancel")


def test_the_deferring_try_travels_in_the_serialized_trigger_and_in_every_event(monkeypatch):
    """A task tells its own resumption from a replayed earlier try's event by this number
    (apache/airflow#56704: Airflow 3.0 to 3.1.0 send a retry to the resume method)."""
    trigger = _trigger(deferred_by_try=3)
    kwargs = trigger.serialize()[1]
    assert kwargs["deferred_by_try"] == 3
    assert DicomOperationTrigger(**kwargs).serialize()[1] == kwargs
    for script in ([_op(done=True, success=1)], [HealthcareApiError("operations.get", 403, "DENIED", "no")]):
        (event,) = _run(_trigger(deferred_by_try=3), FakeAsyncHook(script), monkeypatch)
        assert event.payload["deferred_by_try"] == 3
    # Triggers serialized by earlier versions (no number) still run, and say nothing.
    assert "deferred_by_try" not in _trigger().serialize()[1]
    (event,) = _run(_trigger(), FakeAsyncHook([_op(done=True, success=1)]), monkeypatch)
    assert "deferred_by_try" not in event.payload
